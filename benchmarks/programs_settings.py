"""Choose a stroke-program model's adaptation settings on the background *validation* characters.

Every combination of the --grid settings (learner keys that `metagen eval --set` accepts) is scored by k-shot
NLL (importance-weighted bound) on one fixed task per validation character of the checkpoint's split: the
same tasks for every combination, so differences are paired. The held-out (test) alphabets are never read.
Prints a table and writes JSON.

    python benchmarks/programs_settings.py --checkpoint runs/programs \
        --grid keep_strokes=false,true flip=0.001,0.01 --out results/programs-settings.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from metagen.checkpoint import load_learner
from metagen.config import parse_override
from metagen.data import fixed_tasks, load_splits
from metagen.evaluate import _with_adapt_settings, adapt_overrides, query_nll
from metagen.metrics.stats import mean_ci


def grid(items: list[str]) -> list[dict[str, object]]:
    """["a=1,2", "b=x"] -> [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}] (values parsed like --set)."""
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        axes.append([(key, next(iter(parse_override(f"learner.{key}={v}")["learner"].values())))
                     for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="learner settings to try")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--iw-samples", type=int, default=50)
    ap.add_argument("--max-tasks", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="results/programs-settings.json")
    args = ap.parse_args(argv)
    learner, ckpt = load_learner(args.checkpoint)
    splits = load_splits(ckpt.config.data, ckpt.config.split, args.data_dir)
    tasks = fixed_tasks(splits.validation, max(args.shots), args.queries, seed=ckpt.config.eval.seed,
                        max_tasks=args.max_tasks)
    print(f"{len(tasks)} validation characters of {', '.join(splits.validation.group_names)}; "
          f"held-out {', '.join(splits.test_groups)} not read")
    rows = []
    base = learner.cfg
    for setting in grid(args.grid):
        learner.cfg = base
        _with_adapt_settings(learner, adapt_overrides([f"learner.{k}={json.dumps(v)}" for k, v in setting.items()]))
        row = {"setting": setting, "shots": {}}
        t0 = time.perf_counter()
        for k in args.shots:
            nll = []
            for t in range(len(tasks)):
                torch.manual_seed(t)
                with torch.no_grad():
                    nll.append(query_nll(learner.adapt(tasks.support[t, :k]), tasks.query[t], args.iw_samples))
                print(f"\r{setting} {k}-shot {t + 1}/{len(tasks)}", end="", file=sys.stderr)
            row["shots"][str(k)] = nll
        print(file=sys.stderr)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        cells = []
        for k in args.shots:
            mean, ci = mean_ci(row["shots"][str(k)])
            diff = [a - b for a, b in zip(row["shots"][str(k)], rows[0]["shots"][str(k)], strict=True)]
            d_mean, d_ci = mean_ci(diff) if len(rows) > 1 else (0.0, 0.0)
            cells.append(f"{k}-shot {mean:.2f} ± {ci:.2f} (vs first {d_mean:+.2f} ± {d_ci:.2f})")
        print(f"{setting}: " + "; ".join(cells) + f"  [{row['seconds'] / 60:.1f} min]")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"checkpoint": str(args.checkpoint), "tasks": len(tasks),
                                          "iw_samples": args.iw_samples, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
