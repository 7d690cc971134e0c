import pytest
import torch

from metagen.config import DataConfig, SplitConfig
from metagen.data import load_splits
from metagen.data.concepts import ConceptSet, resolve_test_groups, split
from metagen.errors import DataError


def _concepts(groups=("a", "b", "c", "d", "e"), per_group=3):
    names, gs, ex = [], [], []
    for g in groups:
        for i in range(per_group):
            names.append(f"{g}/{i}")
            gs.append(g)
            ex.append(torch.randint(0, 2, (5, 1, 4, 4), dtype=torch.uint8))
    return ConceptSet(ex, names, gs)


def test_held_out_groups_are_disjoint_from_background():
    cs = _concepts()
    test_groups = resolve_test_groups(cs, 2, seed=3)
    train, test = split(cs, test_groups)
    assert set(train.groups).isdisjoint(test.groups)
    assert set(train.names).isdisjoint(test.names)
    assert len(train) + len(test) == len(cs)
    assert sorted(set(test.groups)) == test_groups


def test_split_is_deterministic_by_seed():
    cs = _concepts(groups=tuple("abcdefghij"))
    assert resolve_test_groups(cs, 3, seed=1) == resolve_test_groups(cs, 3, seed=1)
    draws = {tuple(resolve_test_groups(cs, 3, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_named_and_bad_test_groups():
    cs = _concepts()
    assert resolve_test_groups(cs, ["c", "a"], seed=0) == ["a", "c"]
    with pytest.raises(DataError, match="unknown groups"):
        resolve_test_groups(cs, ["zz"], seed=0)
    with pytest.raises(DataError, match="cannot hold out 5 of 5"):
        resolve_test_groups(cs, 5, seed=0)
    with pytest.raises(DataError, match="every group"):
        resolve_test_groups(cs, list("abcde"), seed=0)


def test_rotations_augment_only_background():
    splits = load_splits(DataConfig(source="glyphs", rotations=True), SplitConfig(test_groups=["greek"]))
    plain = load_splits(DataConfig(source="glyphs"), SplitConfig(test_groups=["greek"]))
    assert len(splits.background) == 4 * len(plain.background)
    assert len(splits.held_out) == len(plain.held_out)
    assert not any("@rot" in n for n in splits.held_out.names)
    i = splits.background.names.index(plain.background.names[0] + "@rot90")
    assert (splits.background.examples[i] == torch.rot90(plain.background.examples[0], 1, (-2, -1))).all()


def test_mirrors_with_rotations_give_the_eight_symmetries_of_background_characters_only():
    splits = load_splits(DataConfig(source="glyphs", rotations=True, mirrors=True), SplitConfig(test_groups=["greek"]))
    plain = load_splits(DataConfig(source="glyphs"), SplitConfig(test_groups=["greek"]))
    assert len(splits.background) == 8 * len(plain.background)
    assert splits.held_out.names == plain.held_out.names
    first = plain.background.examples[0]
    i = splits.background.names.index(plain.background.names[0] + "@rot90@mirror")
    assert (splits.background.examples[i] == torch.flip(torch.rot90(first, 1, (-2, -1)), (-1,))).all()


def test_validation_concepts_come_from_background_groups_only():
    splits = load_splits(DataConfig(source="glyphs", rotations=True),
                         SplitConfig(test_groups=["greek"], val_fraction=0.1))
    val, bg, test = (set(s.names) for s in (splits.validation, splits.background, splits.held_out))
    assert val and val.isdisjoint(bg) and val.isdisjoint(test)
    assert not {n + "@rot90" for n in val} & bg  # no rotated copy of a validation concept is trained on
    assert "greek" not in splits.validation.groups
    again = load_splits(DataConfig(source="glyphs"), SplitConfig(test_groups=["greek"], val_fraction=0.1))
    assert again.validation.names == splits.validation.names  # deterministic by split.seed
