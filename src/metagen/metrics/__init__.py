"""Metrics over held-out tasks. For now: summary statistics; likelihood evaluation lives in metagen.evaluate."""

from metagen.metrics.stats import mean_ci

__all__ = ["mean_ci"]
