from collections import Counter

import numpy as np

from metagen.data.glyphs import cache_dir, load_glyphs


def test_glyph_dataset_content():
    cs = load_glyphs()
    counts = Counter(cs.groups)
    assert set(counts) == {"latin", "digits", "greek", "cyrillic", "armenian", "georgian"}
    assert len(cs) >= 200 and counts["latin"] >= 50 and counts["digits"] == 10
    assert all(e.shape == (20, 1, 28, 28) and e.dtype.is_floating_point is False for e in cs.examples)
    ink = np.array([e.float().mean() for e in cs.examples])
    assert (ink > 0.03).all() and (ink < 0.5).all()
    # examples of a concept vary (faces + augmentation) but are not random noise
    e = cs.examples[0].float()
    assert (e[0] != e[1]).any()


def test_homoglyphs_are_removed():
    names = {n.split(" ")[-1] for n in load_glyphs().names}
    assert "A" in names and "А" not in names  # Cyrillic A is a copy of Latin A
    assert "Ж" in names and "Ω" in names


def test_render_is_cached_and_identical_on_reload():
    a = load_glyphs()
    files = list(cache_dir().glob("glyphs-*.npz"))
    assert len(files) == 1
    b = load_glyphs()
    assert a.names == b.names and all((x == y).all() for x, y in zip(a.examples, b.examples, strict=True))
