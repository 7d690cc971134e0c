"""Few-shot classification by likelihood: a generative model as a classifier (Lake et al. 2015's one-shot task).

An N-way k-shot episode draws N held-out concepts and, from each, k support examples and `queries` query
examples (disjoint). The model is adapted to each concept's support set; a query goes to the concept under
whose adapted model its `log_prob` is highest. The error of an episode is the fraction of its N * queries
queries assigned to another concept; errors get a 95% CI across episodes. Families without a likelihood
have no score here (n/a).

The reference is a pixel nearest neighbour: a query goes to the concept of its nearest support image in
Euclidean (for binary images, Hamming) distance.

Lake et al. draw the N concepts of an episode from one alphabet; here they are drawn from all held-out
groups together (Omniglot's two held-out "background small" alphabets have 26 and 17 characters, too few
for 20-way episodes within one), which makes episodes somewhat easier than within-alphabet ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from metagen.data.concepts import ConceptSet
from metagen.data.episodes import _check_size, _gather
from metagen.errors import DataError
from metagen.meta.base import MetaLearner
from metagen.metrics.stats import mean_ci

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (support [N, k, ...], query [M, ...]) -> [M, N]


@dataclass
class Episodes:
    support: torch.Tensor  # [E, N, k, *example_shape]
    query: torch.Tensor  # [E, N, q, *example_shape]; query[e, n] belongs to concept n of episode e
    concepts: torch.Tensor  # [E, N] concept indices

    @property
    def ways(self) -> int:
        return self.support.shape[1]

    def to(self, device: torch.device | str) -> Episodes:
        return Episodes(self.support.to(device), self.query.to(device), self.concepts)


def classification_episodes(concepts: ConceptSet, ways: int, shots: int, queries: int = 1, episodes: int = 100,
                            seed: int = 0) -> Episodes:
    """`episodes` N-way k-shot episodes over `concepts`, drawn by `seed` (the same draw for every method)."""
    if ways < 2:
        raise DataError(f"classification needs at least 2 ways, got {ways}")
    if shots < 1 or queries < 1 or episodes < 1:
        raise DataError("classification needs at least 1 shot, 1 query and 1 episode")
    if ways > len(concepts):
        raise DataError(f"{ways}-way classification needs {ways} held-out concepts, there are {len(concepts)}; "
                        "lower the number of ways")
    _check_size(concepts, shots + queries, f"{shots}-shot classification with {queries} queries")
    rng = np.random.default_rng(seed)
    support, query, chosen = [], [], []
    for _ in range(episodes):
        cidx = rng.choice(len(concepts), size=ways, replace=False)  # [N]
        ids = np.stack([rng.permutation(len(concepts.examples[c]))[: shots + queries] for c in cidx])
        support.append(_gather(concepts, cidx, ids[:, :shots]))
        query.append(_gather(concepts, cidx, ids[:, shots:]))
        chosen.append(torch.from_numpy(cidx))
    return Episodes(torch.stack(support), torch.stack(query), torch.stack(chosen))


def likelihood_errors(learner: MetaLearner, episodes: Episodes, iw_samples: int,
                      bar: tqdm | None = None) -> list[float] | None:
    """Per episode, the error of classifying by the adapted models' log_prob; None if they have none."""
    if not learner.adapt(episodes.support[0, 0]).has_log_prob:
        return None

    def score(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        # one adaptation per concept of the episode; log_prob of every query under it: [M] each
        return torch.stack([learner.adapt(s).log_prob(query, iw_samples=iw_samples) for s in support], 1)

    return episode_errors(score, episodes, bar)


def pixel_nn_score(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Minus the squared pixel distance from each query [M, ...] to its nearest support example of each
    concept (support [N, k, ...]) -> [M, N]."""
    N, k = support.shape[:2]
    d = torch.cdist(query.flatten(1).float(), support.flatten(2).flatten(0, 1).float()).pow(2)  # [M, N*k]
    return -d.view(-1, N, k).min(-1).values


def episode_errors(score: Scorer, episodes: Episodes, bar: tqdm | None = None) -> list[float]:
    """Per episode, the fraction of queries that `score` assigns to the wrong concept (ties go to the first
    concept of the episode; NaN where a score is not finite, e.g. a diverged adaptation)."""
    errors = []
    N, q = episodes.query.shape[1:3]
    truth = torch.arange(N).repeat_interleave(q)  # [N*q]
    for e in range(len(episodes.support)):
        scores = score(episodes.support[e], episodes.query[e].flatten(0, 1))  # [N*q, N]
        ok = torch.isfinite(scores).all()
        errors.append((scores.argmax(1).cpu() != truth).float().mean().item() if ok else float("nan"))
        if bar is not None:
            bar.update(1)
    return errors


def summarise(errors: list[float] | None) -> dict[str, float | int | None]:
    """Per-episode errors -> {mean, ci95, n[, diverged]}; mean None for a model without likelihood."""
    if errors is None:
        return {"mean": None, "ci95": None, "n": 0}
    diverged = sum(not np.isfinite(e) for e in errors)
    if diverged:
        return {"mean": float("nan"), "ci95": float("nan"), "n": len(errors), "diverged": diverged}
    mean, ci = mean_ci(errors)
    return {"mean": mean, "ci95": ci, "n": len(errors)}


def label(ways: int, shots: int) -> str:
    return f"{ways}-way {shots}-shot"


PIXEL_NN = "pixel nearest neighbour"


def classification_report(learners: dict[str, MetaLearner], concepts: ConceptSet, settings: list[tuple[int, int]],
                          episodes: int, queries: int, iw_samples: int, seed: int = 0,
                          device: torch.device | str = "cpu", progress: bool = True) -> dict[str, dict[str, dict]]:
    """{method: {"N-way k-shot": summary}} for every learner and the pixel nearest neighbour (first row), each
    N-way k-shot setting on the same episodes for every method."""
    out: dict[str, dict[str, dict]] = {PIXEL_NN: {}, **{name: {} for name in learners}}
    bar = tqdm(total=len(settings) * len(learners) * episodes, desc="classify", unit="episode",
               disable=not progress, dynamic_ncols=True)
    with torch.no_grad():
        for ways, shots in settings:
            eps = classification_episodes(concepts, ways, shots, queries, episodes, seed).to(device)
            out[PIXEL_NN][label(ways, shots)] = summarise(episode_errors(pixel_nn_score, eps))
            for name, learner in learners.items():
                bar.set_description(f"classify {name} {label(ways, shots)}")
                torch.manual_seed(seed)
                errors = likelihood_errors(learner, eps, iw_samples, bar)
                if errors is None:
                    bar.update(episodes)
                out[name][label(ways, shots)] = summarise(errors)
    bar.close()
    return out


def markdown_table(table: dict[str, dict[str, dict]]) -> list[str]:
    """Lines of a markdown table: one row per method, one column per setting, error in % with its 95% CI."""
    settings = list(next(iter(table.values())))
    lines = ["| method | " + " | ".join(f"{s} error (%)" for s in settings) + " |", "|---|" + "---:|" * len(settings)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(s)) for s in settings) + " |")
    return lines


def _cell(c: dict | None) -> str:
    if c is None:
        return "not run"
    if c["mean"] is None:
        return "n/a (no likelihood)"
    if c.get("diverged"):
        return f"diverged on {c['diverged']}/{c['n']}"
    return f"{100 * c['mean']:.1f} ± {100 * c['ci95']:.1f}"
