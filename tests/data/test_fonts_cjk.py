"""The CJK track of the fonts data, on small synthetic hanzi faces built with fontTools (the real ones come from
`make setup-fonts-cjk`, which CI does not run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTCollection, TTFont

import metagen.data.fonts as fonts_module
from metagen.data.fonts import CJK_REFERENCE, HANZI, SCRIPTS, charset, held_out_characters, load_fonts
from metagen.errors import DataError

SHAPES = 40  # distinct glyphs; every hanzi is drawn as one of them


def hanzi_font(family: str, style: str, stroke: int, drop: int = 0) -> TTFont:
    """A face mapping the GB2312 level-1 hanzi (less the last `drop`) onto SHAPES box-and-cross glyphs with
    strokes `stroke` units wide, on a 1000-unit em (ink from -100 to 780, like an ideograph)."""
    names = [".notdef"] + [f"g{i}" for i in range(SHAPES)]
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder(names)
    hanzi = SCRIPTS["hanzi"][: len(SCRIPTS["hanzi"]) - drop]
    fb.setupCharacterMap({ord(c): f"g{i % SHAPES}" for i, c in enumerate(hanzi)})
    glyphs = {".notdef": TTGlyphPen(None).glyph()}
    for i in range(SHAPES):
        pen = TTGlyphPen(None)
        x, y = 150 + 90 * (i // 8), -50 + 100 * (i % 8)
        for x0, y0, x1, y1 in [(100, -100, 900, -100 + stroke), (100, 780 - stroke, 900, 780),  # the box
                               (100, -100, 100 + stroke, 780), (900 - stroke, -100, 900, 780),
                               (x, -100, x + stroke, 780), (100, y, 900, y + stroke)]:  # the cross, by i
            pen.moveTo((x0, y0))
            pen.lineTo((x0, y1))
            pen.lineTo((x1, y1))
            pen.lineTo((x1, y0))
            pen.closePath()
        glyphs[f"g{i}"] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({n: (1000, 0) for n in names})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": family, "styleName": style})
    fb.setupOS2()
    fb.setupPost()
    return fb.font


@pytest.fixture(scope="module")
def cjk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cjk")
    (root / "droid").mkdir()
    hanzi_font("Droid Sans Fallback", "Regular", 60).save(root / "droid" / CJK_REFERENCE)
    hanzi_font("Test Kai", "Regular", 30).save(root / "kai.ttf")
    hanzi_font("Test Sparse", "Regular", 90, drop=200).save(root / "sparse.ttf")  # 95% of the hanzi: too few
    collection = TTCollection()
    collection.fonts = [hanzi_font("Test Hei JP", "Bold", 140), hanzi_font("Test Hei SC", "Bold", 130)]
    collection.save(root / "hei.ttc")
    return root


@pytest.fixture(scope="module")
def cjk(cjk_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("METAGEN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setattr(fonts_module, "MIN_FACES", 1)  # two synthetic faces are enough to check the track
    yield load_fonts([str(cjk_dir)], ["hanzi"], 28, progress=False)
    mp.undo()


def test_hanzi_charset_is_gb2312_level_1_and_stands_alone() -> None:
    hanzi = charset(["hanzi"])
    assert len(hanzi) == 3755 and hanzi[:2] == "啊阿" and "国" in hanzi
    assert all("\u4e00" <= c <= "\u9fff" for c in hanzi)
    with pytest.raises(DataError, match=r"\['hanzi'\] alone"):
        charset(["latin", "digits", "hanzi"])
    picked = held_out_characters(20, 0, HANZI)
    assert len(picked) == 20 and set(picked) <= set(hanzi)


def test_cjk_faces_read_collections_drop_regional_copies_and_the_reference(cjk) -> None:
    # kept: the .ttc's SC member (its JP twin is a regional copy) and the Kai face; the sparse face has 95% of
    # the hanzi (under 99%); the reference face, found in the folder, is a duplicate of itself
    assert sorted(cjk.concepts.names) == ["Test Hei SC Bold", "Test Kai"]
    assert cjk.counts["regional"] == 1 and cjk.counts["no_required_script"] == 1 and cjk.counts["duplicates"] == 1
    by_name = dict(zip(cjk.concepts.names, cjk.paths, strict=True))
    assert by_name["Test Hei SC Bold"].endswith("hei.ttc#1") and by_name["Test Kai"].endswith("kai.ttf")
    assert all(len(c) == 3755 for c in cjk.chars) and cjk.charset == SCRIPTS["hanzi"]


def test_cjk_glyphs_are_framed_by_the_ideograph_box(cjk) -> None:
    # every synthetic glyph's ink is the em's ideograph box: 0.80 of the canvas tall, ending at 0.90
    for e in cjk.concepts.examples:
        glyph, ref = e[0, 0].numpy(), e[0, 1].numpy()
        for g in (glyph, ref):
            rows = np.nonzero(g.any(1))[0]
            assert abs((rows.max() + 1 - rows.min()) - 0.80 * 28) <= 1.5
            assert abs((rows.max() + 1) - 0.90 * 28) <= 1.5
    heavy, light = (cjk.concepts.examples[cjk.concepts.names.index(n)][:, 0].float().mean()
                    for n in ("Test Hei SC Bold", "Test Kai"))
    assert heavy > 2 * light  # strokes 130 vs 30 units wide


def test_missing_cjk_fonts_say_to_run_the_setup(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make setup-fonts-cjk"):
        load_fonts([str(tmp_path)], ["hanzi"], 28, progress=False)


def test_a_hanzi_models_user_glyphs_are_placed_by_the_cjk_reference(cjk, cjk_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from metagen.typeset import read_glyphs, reference_glyphs

    refs = reference_glyphs("国家", 28, ["hanzi"], [str(cjk_dir)])
    assert refs.shape == (2, 28, 28) and torch.equal(refs[0], cjk.reference[cjk.charset.index("国")])
    big = Image.new("L", (300, 200), 255)  # a user's drawing: a dark square, any size
    big.paste(0, (100, 50, 200, 150))
    big.save(tmp_path / "国.png")
    pair = read_glyphs([str(tmp_path / "国.png")], "国", 28, ["hanzi"], [str(cjk_dir)])[0]
    rows = np.nonzero(pair[0].numpy().any(1))[0]
    assert abs(rows.max() + 1 - 0.90 * 28) <= 1.5  # bottom-aligned with the reference's ideograph box
    with pytest.raises(DataError, match="Droid"):
        reference_glyphs("国", 28, ["hanzi"], [str(tmp_path)])

