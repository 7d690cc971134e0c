"""Sample-quality metrics in a feature space: FID, precision/recall, novelty, diversity.

All take features ([N, D], from `FeatureNet.features`), so images pass through the network once and
bootstrap resamples cost nothing.
- FID: torchmetrics' FrechetInceptionDistance with the domain features in place of Inception's.
- Precision / recall (Kynkäänniemi et al. 2019): a point is on a set's manifold when it lies within the
  k-th-nearest-neighbour radius of some point of the set. Precision = fraction of generated points on the
  real manifold; recall = fraction of real points on the generated manifold. Both are returned per point,
  so they average per task and get confidence intervals across tasks.
- Novelty: distance from each sample to its nearest support example (copying the support scores 0).
- Diversity: mean pairwise distance among one task's samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance


class _Precomputed(nn.Module):
    """Feature 'network' for torchmetrics that passes already computed features [N, D] through."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to real [N, D] and fake [M, D] features (N, M >= 2)."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 generated examples, got {len(real)} and {len(fake)}")
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        return math.nan  # a generator that diverged (its samples are NaN) has no FID
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), normalize=True)
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return max(float(metric.compute()), 0.0)  # tiny negative values are round-off


def fid_bootstrap(real: torch.Tensor, fake: torch.Tensor, reps: int = 200, seed: int = 0) -> tuple[float, float]:
    """(FID, half-width of its 95% bootstrap interval) with whole tasks resampled: real [T, Q, D], fake [T, N, D]."""
    value = fid(real.flatten(0, 1), fake.flatten(0, 1))
    g = torch.Generator().manual_seed(seed)
    T = real.shape[0]
    if math.isnan(value):
        return value, math.nan
    if T < 2 or reps < 2:
        return value, 0.0
    draws = []
    for _ in range(reps):
        idx = torch.randint(T, (T,), generator=g)
        draws.append(fid(real[idx].flatten(0, 1), fake[idx].flatten(0, 1)))
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    lo, hi = torch.tensor(draws, dtype=torch.float64).quantile(q).tolist()
    return value, (hi - lo) / 2


def knn_radii(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each point of x [N, D] to its k-th nearest other point -> [N]."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k = {k} need more than {k} points, got {len(x)}")
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # k + 1: each point is its own nearest


def on_manifold(points: torch.Tensor, reference: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[N] bool: whether each of points [N, D] lies in some k-NN ball of reference [M, D]."""
    radii = knn_radii(reference, k)  # [M]
    return (torch.cdist(points, reference) <= radii).any(1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: (fake [M] on the real manifold, real [N] on the fake manifold), as floats in {0, 1}.
    Their means are precision and recall."""
    return on_manifold(fake, real, k).float(), on_manifold(real, fake, k).float()


def novelty(samples: torch.Tensor, support: torch.Tensor) -> float:
    """Mean distance from each sample [N, D] to its nearest support example [K, D]."""
    return torch.cdist(samples, support).min(1).values.mean().item()


def diversity(samples: torch.Tensor) -> float:
    """Mean distance between two different samples of [N, D] (N >= 2)."""
    N = len(samples)
    if N < 2:
        raise ValueError("diversity needs at least 2 samples")
    return (torch.cdist(samples, samples).sum() / (N * (N - 1))).item()
