"""Choose a stroke-program model's adaptation settings on the background *validation* characters.

Every combination of the --grid settings (learner keys that `metagen eval --set` accepts) is scored by k-shot
NLL (importance-weighted bound) on one fixed task per validation character of the checkpoint's split: the
same tasks for every combination, so differences are paired. With --fidelity, also the bench's fidelity of 20
samples per task: the share a classifier trained on the validation characters' query images (the bench's
feature network, cached; never the support images) gives the support's character. The held-out (test)
alphabets are never read. Prints a table and writes JSON.

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
from metagen.config import Config, parse_override
from metagen.data import Tasks, fixed_tasks, load_splits
from metagen.evaluate import adapt_overrides, query_nll, with_adapt_settings
from metagen.metrics.features import FeatureConfig, FidelityClassifier, feature_net
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
    ap.add_argument("--fidelity", action="store_true", help="also score samples with the bench's fidelity classifier")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="results/programs-settings.json")
    args = ap.parse_args(argv)
    learner, ckpt = load_learner(args.checkpoint)
    splits = load_splits(ckpt.config.data, ckpt.config.split, args.data_dir)
    tasks = fixed_tasks(splits.validation, max(args.shots), args.queries, seed=ckpt.config.eval.seed,
                        max_tasks=args.max_tasks)
    print(f"{len(tasks)} validation characters of {', '.join(splits.validation.group_names)}; "
          f"held-out {', '.join(splits.test_groups)} not read")
    clf = _fidelity_classifier(ckpt.config, tasks, args.data_dir) if args.fidelity else None
    rows = []
    base = learner.cfg
    for setting in grid(args.grid):
        learner.cfg = base
        with_adapt_settings(learner, adapt_overrides([f"learner.{k}={json.dumps(v)}" for k, v in setting.items()]))
        row = {"setting": setting, "shots": {}, "fidelity": {}}
        t0 = time.perf_counter()
        for k in args.shots:
            nll, fidelity = [], []
            for t in range(len(tasks)):
                torch.manual_seed(t)
                with torch.no_grad():
                    adapted = learner.adapt(tasks.support[t, :k])
                    nll.append(query_nll(adapted, tasks.query[t], args.iw_samples))
                    if clf is not None:
                        x = adapted.sample(20, generator=torch.Generator().manual_seed(t))
                        fidelity.append(clf.recognised(x, t))
                print(f"\r{setting} {k}-shot {t + 1}/{len(tasks)}", end="", file=sys.stderr)
            row["shots"][str(k)] = nll
            if fidelity:
                row["fidelity"][str(k)] = fidelity
        print(file=sys.stderr)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        cells = []
        for k in args.shots:
            mean, ci = mean_ci(row["shots"][str(k)])
            diff = [a - b for a, b in zip(row["shots"][str(k)], rows[0]["shots"][str(k)], strict=True)]
            d_mean, d_ci = mean_ci(diff) if len(rows) > 1 else (0.0, 0.0)
            cells.append(f"{k}-shot {mean:.2f} ± {ci:.2f} (vs first {d_mean:+.2f} ± {d_ci:.2f})")
            if row["fidelity"]:
                f_mean, f_ci = mean_ci(row["fidelity"][str(k)])
                cells[-1] += f" fidelity {f_mean:.3f} ± {f_ci:.3f}"
        print(f"{setting}: " + "; ".join(cells) + f"  [{row['seconds'] / 60:.1f} min]")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"checkpoint": str(args.checkpoint), "tasks": len(tasks),
                                          "iw_samples": args.iw_samples, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _fidelity_classifier(config: Config, tasks: Tasks, data_dir: str | None) -> FidelityClassifier:
    """The bench's fidelity classifier for these tasks, on the bench's feature network for this split (trained on
    the background characters with rotations, as `metagen bench` does; read from the cache when it is there)."""
    resolved = config.model_copy(deep=True)
    resolved.data.rotations = True
    splits = load_splits(resolved.data, resolved.split, data_dir)
    resolved.split.test_groups = splits.test_groups
    feats = feature_net(resolved, splits.background, FeatureConfig(steps=1500))
    return FidelityClassifier(feats.net, tasks, 300, seed=0, progress=False)


if __name__ == "__main__":
    sys.exit(main())
