"""Benchmark charts as PNG (matplotlib, headless): NLL against shots, fidelity against novelty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from metagen.checkpoint import atomic_write


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _colors(names: list[str]) -> dict[str, Any]:
    """One distinct colour per method (tab10 repeats after ten methods; tab20 does not until twenty)."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def nll_vs_shots(report: dict[str, Any], path: str | Path) -> Path:
    """One line per method with a likelihood: mean query NLL (95% CI bars) against the number of shots."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = _colors(list(report["methods"]))
    for name, m in report["methods"].items():
        pts = [(int(k), r["nll"]) for k, r in m["shots"].items() if "nll" in r]
        if pts:
            ax.errorbar([k for k, _ in pts], [c["mean"] for _, c in pts], yerr=[c["ci95"] for _, c in pts],
                        marker="o", capsize=3, label=name, color=colors[name])
    ax.set_xscale("log")
    ax.set_yscale("log")  # baselines (copy, scratch) sit far above the meta-learners
    shots = [int(k) for k in report["reference"]]
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("support examples (shots)")
    ax.set_ylabel("held-out query NLL (nats/image)")
    ax.set_title(f"{report['preset']}: NLL after k-shot adaptation")
    if ax.has_data():
        ax.legend(fontsize=8)
    return _save(fig, Path(path))


def fidelity_vs_novelty(report: dict[str, Any], path: str | Path) -> Path:
    """Each method at each shot count (marker size grows with shots): novelty on x, fidelity on y;
    the real held-out images as a reference."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = _colors(list(report["methods"]))
    rows = [("real held-out images", report["reference"], "k")]
    rows += [(name, m["shots"], colors[name]) for name, m in report["methods"].items()]
    for name, shots, color in rows:
        ks = [k for k, r in shots.items() if "fidelity" in r and "novelty" in r]
        xs = [shots[k]["novelty"]["mean"] for k in ks]
        ys = [shots[k]["fidelity"]["mean"] for k in ks]
        line = ax.plot(xs, ys, "-", alpha=0.5, color=color)[0]
        ax.scatter(xs, ys, s=[20 + 8 * int(k) for k in ks], color=line.get_color(), label=name)
    ax.set_xlabel("novelty: feature distance to the nearest support example")
    ax.set_ylabel("fidelity: samples recognised as the support's concept")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{report['preset']}: fidelity vs novelty (bigger marker = more shots)")
    ax.legend(fontsize=7)
    return _save(fig, Path(path))
