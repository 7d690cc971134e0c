import zipfile
from collections import Counter

import pytest

from conftest import REAL_OMNIGLOT
from metagen.config import DataConfig, SplitConfig
from metagen.data import load_splits
from metagen.data.concepts import resolve_test_groups
from metagen.data.omniglot import load_omniglot
from metagen.errors import DataError


def test_reads_zipped_layout_and_deduplicates_shared_alphabets(fake_omniglot):
    cs = load_omniglot(fake_omniglot)
    assert Counter(cs.groups) == {"Greek": 3, "Korean": 2, "Latin": 2, "Tifinagh": 2}
    assert len(set(cs.names)) == len(cs) == 9
    assert all(e.shape == (20, 1, 28, 28) for e in cs.examples)
    assert set(cs.examples[0].unique().tolist()) <= {0, 1} and cs.examples[0].sum() > 0
    assert cs.group_origin == {"Greek": "background", "Korean": "background", "Latin": "background",
                               "Tifinagh": "evaluation"}


def test_unzipped_layout_reads_the_same(tmp_path, omniglot_factory):
    zipped = load_omniglot(omniglot_factory(tmp_path / "z", {"images_background": {"A": 2}}, zipped=True))
    unzipped = load_omniglot(omniglot_factory(tmp_path / "u", {"images_background": {"A": 2}}, zipped=False))
    assert zipped.names == unzipped.names
    assert all((a == b).all() for a, b in zip(zipped.examples, unzipped.examples, strict=True))


def test_finds_an_omniglot_subfolder(tmp_path, omniglot_factory):
    omniglot_factory(tmp_path / "omniglot", {"images_background": {"A": 1}})
    assert len(load_omniglot(tmp_path)) == 1


def test_official_split_holds_out_evaluation_alphabets(fake_omniglot):
    cs = load_omniglot(fake_omniglot)
    assert resolve_test_groups(cs, "official", seed=0) == ["Tifinagh"]


def test_missing_and_corrupt_data_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no Omniglot data in .*METAGEN_DATA_DIR"):
        load_omniglot(tmp_path)
    (tmp_path / "images_background.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_omniglot(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(source="omniglot"), SplitConfig(), data_dir=str(tmp_path / "nope"))


def test_corrupt_png_inside_archive(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        zf.writestr("images_background/A/character01/0001_01.png", b"garbage")
    with pytest.raises(DataError, match="corrupt image"):
        load_omniglot(tmp_path)


@pytest.mark.skipif(not (REAL_OMNIGLOT / "omniglot").is_dir(), reason="../shared/data/omniglot not present")
def test_real_background_small_splits():
    cs = load_omniglot(REAL_OMNIGLOT)
    assert len(cs.group_names) == 8 and len(cs) == 242  # Greek and Latin de-duplicated
    assert all(len(e) == 20 for e in cs.examples)
    assert 0.05 < float(cs.examples[0].float().mean()) < 0.3  # strokes are ink, paper is not
