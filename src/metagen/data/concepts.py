"""Concepts (one character, one font, one author), their examples, and group-level splits.

A concept's examples are a tensor `[N_i, *example_shape]` (images: uint8 `[N_i, 1, H, W]` in {0, 1};
text, later: token ids `[N_i, L]`). Concepts belong to groups (an Omniglot alphabet, a glyph script)
and splits hold out whole groups, so evaluation concepts share nothing with meta-training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from metagen.errors import DataError


@dataclass
class ConceptSet:
    examples: list[torch.Tensor]  # concept i: [N_i, *example_shape]
    names: list[str]  # "Greek/character01"
    groups: list[str]  # "Greek"
    # Where each group came from (Omniglot: "background" or "evaluation"), for the official split.
    group_origin: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.examples) == len(self.names) == len(self.groups)):
            raise ValueError("examples, names and groups must have one entry per concept")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.examples[0].shape[1:])

    @property
    def group_names(self) -> list[str]:
        return sorted(set(self.groups))

    def min_examples(self) -> int:
        return min(len(e) for e in self.examples)

    def subset(self, idx: list[int]) -> ConceptSet:
        return ConceptSet(
            [self.examples[i] for i in idx], [self.names[i] for i in idx], [self.groups[i] for i in idx],
            {g: o for g, o in self.group_origin.items() if g in {self.groups[i] for i in idx}},
        )

    def in_groups(self, groups: set[str]) -> ConceptSet:
        return self.subset([i for i, g in enumerate(self.groups) if g in groups])

    def map_examples(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ConceptSet:
        """The same concepts with `fn` applied to each concept's examples."""
        return ConceptSet([fn(e) for e in self.examples], list(self.names), list(self.groups), dict(self.group_origin))

    def with_rotations(self) -> ConceptSet:
        """Add the 90/180/270-degree rotations of every concept as new concepts of the same group."""
        examples, names, groups = list(self.examples), list(self.names), list(self.groups)
        for k in (1, 2, 3):
            examples += [torch.rot90(e, k, dims=(-2, -1)) for e in self.examples]
            names += [f"{n}@rot{90 * k}" for n in self.names]
            groups += self.groups
        return ConceptSet(examples, names, groups, dict(self.group_origin))

    def with_mirrors(self) -> ConceptSet:
        """Add the left-right mirror image of every concept as a new concept of the same group."""
        return ConceptSet([*self.examples, *(torch.flip(e, dims=(-1,)) for e in self.examples)],
                          [*self.names, *(f"{n}@mirror" for n in self.names)], [*self.groups, *self.groups],
                          dict(self.group_origin))


def resolve_test_groups(concepts: ConceptSet, test_groups: int | list[str] | str, seed: int) -> list[str]:
    """The held-out group names: a seeded draw of `test_groups` groups, the named ones, or "official"."""
    all_groups = concepts.group_names
    if test_groups == "official":
        chosen = sorted(g for g in all_groups if concepts.group_origin.get(g) == "evaluation")
        if not chosen:
            raise DataError("split 'official' needs the images_evaluation alphabets, which are not in the data dir; "
                            "set split.test_groups to a number or a list of names")
    elif isinstance(test_groups, int):
        if test_groups >= len(all_groups):
            raise DataError(f"cannot hold out {test_groups} of {len(all_groups)} groups; "
                            f"lower split.test_groups below {len(all_groups)}")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(all_groups, size=test_groups, replace=False).tolist())
    else:
        unknown = sorted(set(test_groups) - set(all_groups))
        if unknown:
            raise DataError(f"split.test_groups names unknown groups {unknown}; groups are: {', '.join(all_groups)}")
        chosen = sorted(test_groups)
    if len(chosen) == len(all_groups):
        raise DataError("split.test_groups holds out every group, leaving nothing to meta-train on")
    return chosen


def split_concepts(concepts: ConceptSet, fraction: float, seed: int) -> tuple[ConceptSet, ConceptSet]:
    """(rest, a seeded `fraction` of the concepts, at least one if fraction > 0)."""
    if fraction == 0 or len(concepts) == 0:
        return concepts, concepts.subset([])
    n = max(1, round(fraction * len(concepts)))
    if n >= len(concepts):
        raise DataError(f"split.val_fraction = {fraction} leaves no concept to meta-train on; lower it")
    chosen = set(np.random.default_rng(seed).choice(len(concepts), size=n, replace=False).tolist())
    return (concepts.subset([i for i in range(len(concepts)) if i not in chosen]),
            concepts.subset(sorted(chosen)))


def split(concepts: ConceptSet, test_groups: list[str]) -> tuple[ConceptSet, ConceptSet]:
    """(background, held-out): disjoint by group."""
    test = set(test_groups)
    train = concepts.in_groups(set(concepts.group_names) - test)
    held_out = concepts.in_groups(test)
    return train, held_out
