"""Bits per character of `metagen eval` text reports, split into English categories and Chinese poets.

The two scripts differ by a factor of four in bits per character, so a mean over all held-out concepts
mostly says how many of them are poets; this prints one table per script (mean ± 95% CI across that
script's tasks) for every method and shot count of the given reports, and writes them as JSON.

  python benchmarks/text_by_script.py results/fortunes/report.json results/fortunes-scratch/report.json \
      [--out benchmarks/results/text_by_script.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from metagen.metrics import mean_ci


def is_chinese(name: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in name)


def by_script(reports: list[dict]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{script: {method: {k: {mean, ci95, n}}}} from eval reports scored on the same tasks."""
    tasks = reports[0]["data"]["task_concepts"]
    if any(r["data"]["task_concepts"] != tasks for r in reports):
        raise SystemExit("the reports were evaluated on different tasks; use the same --episodes and seed")
    poet = [is_chinese(n) for n in tasks]
    scripts = {"English categories": [not p for p in poet], "Chinese poets": poet}
    out: dict[str, dict] = {s: {} for s in scripts}
    for r in reports:
        for method, m in r["methods"].items():
            for k, cell in m["nll"].items():
                for script, mask in scripts.items():
                    vals = [v for v, keep in zip(cell["per_task"], mask, strict=True) if keep]
                    if vals and all(math.isfinite(v) for v in vals):
                        mean, ci = mean_ci(vals)
                        out[script].setdefault(method, {})[k] = {"mean": mean, "ci95": ci, "n": len(vals)}
    return out


def markdown(table: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    lines = []
    for script, methods in table.items():
        shots = sorted({k for m in methods.values() for k in m}, key=int)
        n = next(iter(next(iter(methods.values())).values()))["n"]
        lines += [f"{script} ({n} tasks), bits/character:", "",
                  "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---|" + "---:|" * len(shots)]
        for method, cells in methods.items():
            row = [f"{cells[k]['mean']:.2f} ± {cells[k]['ci95']:.2f}" if k in cells else "—" for k in shots]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text_by_script.json"))
    args = ap.parse_args()
    table = by_script([json.loads(p.read_text()) for p in args.reports])
    print(markdown(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
