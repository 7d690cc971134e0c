"""Episodes: batches of tasks, each a concept's examples split into a support set and a query set."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from metagen.data.concepts import ConceptSet
from metagen.errors import DataError


@dataclass
class Tasks:
    support: torch.Tensor  # [T, K, *example_shape] float (images) or int64 token ids (text)
    query: torch.Tensor  # [T, Q, *example_shape] float
    concepts: torch.Tensor  # [T] index of each task's concept in its ConceptSet
    support_ids: torch.Tensor  # [T, K] example index within the concept
    query_ids: torch.Tensor  # [T, Q]

    def __len__(self) -> int:
        return self.support.shape[0]

    @property
    def shots(self) -> int:
        return self.support.shape[1]

    def to(self, device: torch.device | str) -> Tasks:
        return Tasks(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def with_shots(self, k: int) -> Tasks:
        """The same tasks with only the first `k` support examples (nested supports for k-shot curves)."""
        return Tasks(self.support[:, :k], self.query, self.concepts, self.support_ids[:, :k], self.query_ids)

    def subset(self, idx: slice | list[int]) -> Tasks:
        return Tasks(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _gather(concepts: ConceptSet, cidx: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """[T, n] example ids of concepts `cidx` -> [T, n, *shape]: token ids stay int64 (text), anything else
    (images, stored as uint8) becomes float."""
    out = torch.stack([concepts.examples[c][torch.from_numpy(i)] for c, i in zip(cidx, ids, strict=True)])
    return out if out.dtype == torch.long else out.float()


def _check_size(concepts: ConceptSet, needed: int, what: str) -> None:
    if len(concepts) == 0:
        raise DataError("no concepts to draw tasks from; check the data source and split.test_groups")
    have = concepts.min_examples()
    if needed > have:
        raise DataError(f"{what} needs {needed} examples per concept but some concepts have only {have}; "
                        "lower the shots or queries")


class EpisodeSampler:
    """Draws task batches from a ConceptSet with its own seeded RNG, whose state is checkpointed."""

    def __init__(self, concepts: ConceptSet, seed: int = 0) -> None:
        self.concepts = concepts
        self.rng = np.random.default_rng(seed)

    def sample(self, tasks: int, shots: int | tuple[int, int], queries: int) -> Tasks:
        """`tasks` concepts (distinct where there are enough), `shots` support and `queries` query examples
        each; `shots=(lo, hi)` draws one K uniformly in [lo, hi] for the whole batch."""
        if isinstance(shots, tuple):
            shots = int(self.rng.integers(shots[0], shots[1] + 1))
        if shots < 1:
            raise DataError("a support set needs at least 1 example")
        _check_size(self.concepts, shots + queries, f"{shots} shots + {queries} queries")
        cidx = self.rng.choice(len(self.concepts), size=tasks, replace=tasks > len(self.concepts))
        ids = np.stack([self.rng.permutation(len(self.concepts.examples[c]))[: shots + queries] for c in cidx])
        return Tasks(_gather(self.concepts, cidx, ids[:, :shots]), _gather(self.concepts, cidx, ids[:, shots:]),
                     torch.from_numpy(cidx), torch.from_numpy(ids[:, :shots]), torch.from_numpy(ids[:, shots:]))

    def state_dict(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def fixed_tasks(concepts: ConceptSet, max_shots: int, queries: int, seed: int = 0,
                max_tasks: int | None = None, episodes: int = 1) -> Tasks:
    """`episodes` tasks per concept (of every concept, or of `max_tasks` drawn by `seed`), each a fixed query
    set and a support set of `max_shots` examples, so `.with_shots(k)` gives nested supports scored on the
    same queries. A concept's episodes are independent draws of its examples."""
    _check_size(concepts, max_shots + queries, f"evaluation with {max_shots} shots + {queries} queries")
    rng = np.random.default_rng(seed)
    cidx = np.arange(len(concepts))
    if max_tasks is not None and max_tasks < len(concepts):
        cidx = np.sort(rng.choice(len(concepts), size=max_tasks, replace=False))
    cidx = np.repeat(cidx, episodes)  # [T]
    ids = np.stack([rng.permutation(len(concepts.examples[c]))[: queries + max_shots] for c in cidx])
    query_ids, support_ids = ids[:, :queries], ids[:, queries:]
    return Tasks(_gather(concepts, cidx, support_ids), _gather(concepts, cidx, query_ids),
                 torch.from_numpy(cidx), torch.from_numpy(support_ids), torch.from_numpy(query_ids))
