"""Summary statistics across tasks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """(mean, half-width of the normal-approximation 95% confidence interval of the mean); 0 width for n < 2."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, z * math.sqrt(var / n)
