"""Few-shot classification by likelihood, on hand-built concepts and models whose answer is known."""

from __future__ import annotations

import pytest
import torch

from metagen.data.concepts import ConceptSet
from metagen.errors import DataError
from metagen.meta.base import Adapted
from metagen.metrics.classify import (
    classification_episodes,
    episode_errors,
    likelihood_errors,
    markdown_table,
    pixel_nn_score,
    summarise,
)


def _concepts(n: int = 12, per: int = 6, noise: float = 0.05, seed: int = 0) -> ConceptSet:
    """`n` concepts, each a random binary template [1, 8, 8] with `noise` of its pixels flipped per example."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        template = torch.rand(1, 8, 8, generator=g) < 0.3
        flips = torch.rand(per, 1, 8, 8, generator=g) < noise
        examples.append((template ^ flips).to(torch.uint8))
    return ConceptSet(examples, [f"c{i}" for i in range(n)], ["g"] * n)


class _Gaussian(Adapted):
    """log p(x | S) = -scale * ||x - mean(S)||^2 + const: a known function of the distance to the support."""

    def __init__(self, support: torch.Tensor, scale: float) -> None:
        self.mean, self.scale = support.mean(0), scale

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000) -> torch.Tensor:
        return -self.scale * (x - self.mean).flatten(1).pow(2).sum(1)


class _Learner:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def adapt(self, support: torch.Tensor) -> Adapted:
        return _Gaussian(support, self.scale)


class _NoLikelihood(Adapted):
    has_log_prob = False


def test_episodes_hold_distinct_concepts_and_disjoint_support_and_query():
    concepts = _concepts()
    eps = classification_episodes(concepts, ways=5, shots=2, queries=3, episodes=7, seed=1)
    assert eps.support.shape == (7, 5, 2, 1, 8, 8) and eps.query.shape == (7, 5, 3, 1, 8, 8)
    for e in range(7):
        assert len(set(eps.concepts[e].tolist())) == 5
    again = classification_episodes(concepts, ways=5, shots=2, queries=3, episodes=7, seed=1)
    assert torch.equal(eps.support, again.support) and torch.equal(eps.concepts, again.concepts)


def test_a_model_whose_likelihood_falls_with_distance_classifies_by_the_nearest_support():
    eps = classification_episodes(_concepts(noise=0.05), ways=10, shots=1, queries=2, episodes=20)
    errors = likelihood_errors(_Learner(scale=1.0), eps, iw_samples=1)
    assert errors == [0.0] * 20  # templates differ in ~40% of pixels, examples of one in ~10%
    assert episode_errors(pixel_nn_score, eps) == [0.0] * 20


def test_a_likelihood_that_rises_with_distance_is_always_wrong_and_a_constant_one_is_at_chance():
    eps = classification_episodes(_concepts(noise=0.05), ways=4, shots=1, queries=1, episodes=10)
    assert likelihood_errors(_Learner(scale=-1.0), eps, iw_samples=1) == [1.0] * 10
    # a constant log_prob ties every concept; ties go to the first, so exactly 1 of the 4 queries is right
    assert likelihood_errors(_Learner(scale=0.0), eps, iw_samples=1) == [0.75] * 10


def test_pixel_nn_score_is_minus_the_squared_distance_to_the_nearest_support_example():
    support = torch.zeros(2, 2, 1, 2, 2)
    support[1, 1] = 1  # concept 1's second example is all ink
    query = torch.ones(1, 1, 2, 2)
    assert pixel_nn_score(support, query).tolist() == [[-4.0, 0.0]]


def test_models_without_likelihood_are_not_applicable_and_diverged_ones_are_flagged():
    eps = classification_episodes(_concepts(), ways=3, shots=1, queries=1, episodes=4)

    class NoLik:
        def adapt(self, support):
            return _NoLikelihood()

    assert likelihood_errors(NoLik(), eps, iw_samples=1) is None
    assert summarise(None) == {"mean": None, "ci95": None, "n": 0}
    nan = episode_errors(lambda s, q: torch.full((len(q), len(s)), float("nan")), eps)
    assert summarise(nan)["diverged"] == 4
    mean = summarise([0.0, 0.5, 1.0])
    assert mean["mean"] == pytest.approx(0.5) and mean["ci95"] > 0 and mean["n"] == 3


def test_table_says_not_run_for_methods_left_out_and_na_for_models_without_likelihood():
    """A bench method with classify = false has no entry per setting; a GAN has a None mean."""
    ref = {"5-way 1-shot": summarise([0.5, 0.5]), "20-way 1-shot": summarise([0.8, 0.9])}
    lines = markdown_table({"pixel nearest neighbour": ref, "scratch": {}, "gan": {s: summarise(None) for s in ref}})
    assert lines[0] == "| method | 5-way 1-shot error (%) | 20-way 1-shot error (%) |"
    assert lines[2].startswith("| pixel nearest neighbour | 50.0 ± 0.0 | 85.0 ± ")
    assert lines[3] == "| scratch | not run | not run |"
    assert lines[4] == "| gan | n/a (no likelihood) | n/a (no likelihood) |"


@pytest.mark.parametrize(("ways", "shots", "match"), [(13, 1, "13 held-out concepts"), (1, 1, "at least 2 ways"),
                                                      (3, 6, "needs 7 examples")])
def test_impossible_episodes_are_one_line_errors(ways, shots, match):
    with pytest.raises(DataError, match=match):
        classification_episodes(_concepts(), ways=ways, shots=shots, queries=1, episodes=2)
