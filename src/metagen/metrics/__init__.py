"""Metrics over held-out tasks: summary statistics (`stats`), the domain feature network and fidelity
classifier (`features`), sample-quality metrics on features (`quality`), adaptation cost (`cost`).
Likelihood evaluation lives in metagen.evaluate; `metagen bench` (metagen.bench) puts them all together."""

from metagen.metrics.stats import mean_ci

__all__ = ["mean_ci"]
