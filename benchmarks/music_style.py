"""Music-aware scores of tune models on held-out styles: do samples move toward the style of the support?

For every run (and two references: real tunes of the style, and copying a support tune), for k support tunes
of a held-out style (k = 0: the unadapted model), draws N samples and measures, against the style's real
tunes (metagen.metrics.music):
  hist   mean total variation distance of pitch-class, interval and duration histograms (lower: closer)
  metre  share of inner bars that fill the metre exactly (real tunes: the reference value)
  style  a style classifier's accuracy on the samples (fidelity; chance = 1 / number of held-out styles)
  lcs    the sample's longest common subsequence with its nearest support tune / its length (1 = a copy)
  copies share of samples with lcs >= 0.9 (near copies of a support tune)
  hist - hist(k=0)  the change of `hist` from the same model unadapted, paired task by task (negative: the
         samples moved toward the style)
Each held-out style's tunes are split in half, once: one half trains the style classifier and is the
histograms' reference, supports are drawn from the other. Mean and 95% CI over (style x episode) tasks.

    python benchmarks/music_style.py runs/tunes runs/tunes-maml ... --shots 0 1 5 20 --episodes 3 \\
        --out results/music_style.json --md results/music_style.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metagen.checkpoint import load_learner
from metagen.data import load_splits
from metagen.data.text import CharVocab
from metagen.errors import DataError
from metagen.metrics import music
from metagen.metrics.stats import mean_ci


def styles(run: str) -> tuple[dict[str, list[str]], CharVocab, object]:
    _, ckpt = load_learner(run, verbose=False)
    cfg = ckpt.config
    splits = load_splits(cfg.data, cfg.split)
    vocab = CharVocab(cfg.data.vocab)
    return {name: vocab.decode(x) for name, x in zip(splits.held_out.names, splits.held_out.examples,
                                                     strict=True)}, vocab, cfg


def score(samples: list[str], support: list[str], reference: list[str], label: int,
          clf: music.StyleClassifier) -> dict[str, float]:
    out = {"hist": music.histogram_distance(samples, reference)["mean"],
           "metre": music.metre_consistency(samples),
           "style": float(np.mean(clf.predict(samples) == label))}
    if support:
        shares = [music.lcs_share(s, support) for s in samples]
        out["lcs"] = float(np.mean(shares))
        out["copies"] = float(np.mean([s >= 0.9 for s in shares]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 5, 20])
    parser.add_argument("--episodes", type=int, default=3, help="support draws per held-out style")
    parser.add_argument("--samples", type=int, default=20, help="samples per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/music_style.json")
    parser.add_argument("--md", default="results/music_style.md")
    args = parser.parse_args()

    by_style, vocab, cfg = styles(args.runs[0])
    names = sorted(by_style)
    rng = np.random.default_rng(args.seed)
    reference, pool = {}, {}
    for name in names:
        tunes = list(by_style[name])
        rng.shuffle(tunes)
        half = len(tunes) // 2
        reference[name], pool[name] = tunes[:half], tunes[half:]
    clf = music.StyleClassifier([t for n in names for t in reference[n]],
                                [i for i, n in enumerate(names) for _ in reference[n]], len(names))
    tasks = [(i, n, e) for i, n in enumerate(names) for e in range(args.episodes)]
    supports = {k: {(n, e): [pool[n][j] for j in np.random.default_rng([args.seed, i, e, k]).choice(
        len(pool[n]), size=k, replace=False)] for i, n, e in tasks} for k in args.shots}

    rows: dict[str, dict[int, dict[str, list[float]]]] = {}

    def add(method: str, k: int, values: dict[str, float]) -> None:
        for key, v in values.items():
            rows.setdefault(method, {}).setdefault(k, {}).setdefault(key, []).append(v)

    for i, n, _e in tasks:  # references: real tunes of the style (outside the classifier's half), a copied support
        real = pool[n][: args.samples]
        add("real tunes of the style", 0, score(real, [], reference[n], i, clf))
    for k in args.shots:
        if k == 0:
            continue
        for i, n, e in tasks:
            sup = supports[k][(n, e)]
            copies = [sup[j % len(sup)] for j in range(args.samples)]
            add("copy a support tune", k, score(copies, sup, reference[n], i, clf))

    for run in args.runs:
        learner, ckpt = load_learner(run, verbose=False)
        method = f"{ckpt.config.learner.name} {ckpt.config.generator.name}"
        if method in rows:  # two runs of one learner (e.g. MAML and first-order MAML): name the second by its folder
            method += f" ({Path(run).name})"
        t0 = time.perf_counter()
        for k in args.shots:
            for i, n, e in tasks:
                torch.manual_seed(args.seed)
                g = torch.Generator().manual_seed(1000 * i + e)
                sup = supports[k][(n, e)]
                try:
                    with torch.no_grad():
                        adapted = learner.adapt(vocab.encode(sup, cfg.data.max_len)) if k else learner.zero_shot()
                        out = adapted.sample(args.samples, generator=g)
                except DataError:
                    break  # k = 0 for a learner that needs a support set
                add(method, k, score(vocab.decode(out), sup, reference[n], i, clf))
        print(f"{method}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    for per_k in rows.values():  # paired with the same method's k = 0 on the same (style, episode) task
        if 0 in per_k and "hist" in per_k[0]:
            for k, d in per_k.items():
                if k > 0 and len(d["hist"]) == len(per_k[0]["hist"]):
                    d["hist - hist(k=0)"] = list(np.array(d["hist"]) - np.array(per_k[0]["hist"]))
    def finite_mean_ci(values: list[float]) -> tuple[float, float, int]:
        """Mean, 95% CI and count over the tasks where the measure is defined (metre: samples with inner bars)."""
        ok = [v for v in values if np.isfinite(v)]
        return (*mean_ci(ok), len(ok)) if ok else (float("nan"), float("nan"), 0)

    summary = {m: {k: {key: finite_mean_ci(v) for key, v in d.items()} for k, d in per_k.items()}
               for m, per_k in rows.items()}
    n_tasks = len(tasks)
    report = {"held_out_styles": names, "style_chance": 1 / len(names), "episodes": args.episodes,
              "samples_per_task": args.samples, "runs": args.runs, "results": summary,
              "classifier_on_real": summary["real tunes of the style"][0]["style"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    keys = ["hist", "hist - hist(k=0)", "metre", "style", "lcs", "copies"]
    lines = ["| method | k | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for m, per_k in summary.items():
        for k, vals in sorted(per_k.items()):
            cells = [("—" if key not in vals else "undefined" if vals[key][2] == 0 else
                      f"{vals[key][0]:.3f} ± {vals[key][1]:.3f}" + ("" if vals[key][2] == n_tasks else
                                                                  f" ({vals[key][2]}/{n_tasks} tasks)"))
                     for key in keys]
            lines.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
    lines.append(f"\nMean ± 95% CI over {n_tasks} tasks; \"(n/{n_tasks} tasks)\": the measure is undefined on the "
                 "others (metre: no sample with a known metre and an inner bar).")
    table = "\n".join(lines)
    Path(args.md).write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
