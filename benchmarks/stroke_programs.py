"""Stroke programs on held-out Omniglot alphabets: the inferred programs checked against the drawers' own strokes,
and sheets with the strokes in colour.

For a trained `programs` run (`metagen train --config omniglot-programs`), every held-out character of its split
(the evaluation tasks of `metagen eval` / `metagen bench`: the same fixed supports and queries) and k in --shots:
  strokes  share of inferred types with as many strokes as the drawer of the first support image drew
  cp_err   RMS distance of those types' control points to that drawer's (strokes matched, either direction),
           canvas units (the canvas is 100 wide), over the tasks whose stroke count is right
The held-out alphabets' pen trajectories are read here only for this check, never for training (`--split validation`
checks the background validation characters instead, to choose adaptation settings). Writes a sheet
per k (the support drawings with the inferred strokes in colour, then 8 new instances of the type) and
--imagine new characters from the prior over programs (a sheet and their programs as text). The bench's metrics
(NLL, FID, fidelity, ...) come from `metagen bench --preset omniglot-programs`.

    python benchmarks/stroke_programs.py --checkpoint runs/programs --out results/strokes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from metagen.checkpoint import load_learner
from metagen.data import fixed_tasks, load_splits, resolve_data_dir
from metagen.data.strokes import load_strokes
from metagen.evaluate import adapt_overrides, with_adapt_settings
from metagen.metrics.stats import mean_ci
from metagen.programs.encoder import drawing_targets, match_cost
from metagen.programs.viz import column, row, strokes_over
from metagen.viz import sample_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a run of `metagen train --config omniglot-programs`")
    ap.add_argument("--data-dir", default=None, help="folder with omniglot/ (default: $METAGEN_DATA_DIR)")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--max-tasks", type=int, default=None, help="characters checked (default: all)")
    ap.add_argument("--split", choices=["held_out", "validation"], default="held_out",
                    help="check the held-out alphabets, or the background validation characters (to choose settings)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="learner.KEY=VALUE",
                    help="adaptation settings, as `metagen eval --set`")
    ap.add_argument("--rows", type=int, default=8, help="characters per sheet")
    ap.add_argument("--imagine", type=int, default=8, help="new characters drawn from the prior over programs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/strokes")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    learner, ckpt = load_learner(args.checkpoint)
    if ckpt.config.learner.name != "programs":
        raise SystemExit(f"'{args.checkpoint}' is learner '{ckpt.config.learner.name}', not 'programs'")
    with_adapt_settings(learner, adapt_overrides(args.overrides))
    cfg = ckpt.config
    splits = load_splits(cfg.data, cfg.split, args.data_dir)
    concepts = splits.held_out if args.split == "held_out" else splits.validation
    groups = set(splits.test_groups) if args.split == "held_out" else set(concepts.group_names)
    root = resolve_data_dir(cfg.data.data_dir, args.data_dir)
    if root is None:
        raise SystemExit("pass --data-dir or set METAGEN_DATA_DIR to the folder holding omniglot/")
    g = torch.Generator().manual_seed(args.seed)

    imagined = [learner.prior(generator=g) for _ in range(args.imagine)]
    if imagined:
        blank = torch.zeros(1, learner.size, learner.size)
        column([row([strokes_over(blank, a.type.cps, a.type.presence), sample_grid(a.sample(8, generator=g)[None],
                                                                                     scale=4)])
                for a in imagined]).save(out / "imagined.png")
        (out / "imagined.txt").write_text("\n\n".join(a.program().to_text() for a in imagined) + "\n")
        print(f"{len(imagined)} imagined characters: {out / 'imagined.txt'}, {out / 'imagined.png'}")

    S, M = learner.cfg.strokes, learner.cfg.control
    tasks = fixed_tasks(concepts, max(args.shots), cfg.eval.queries, seed=cfg.eval.seed, max_tasks=args.max_tasks)
    check = load_strokes(root, groups=groups)  # only to check the inferred types
    report: dict = {"checkpoint": str(args.checkpoint), "split": args.split, "groups": sorted(groups),
                    "settings": args.overrides, "tasks": len(tasks), "shots": {}}
    for k in args.shots:
        strokes_ok, cp_err, sheet = [], [], []
        for t in range(len(tasks)):
            support = tasks.support[t, :k]
            adapted = learner.adapt(support)
            ty = adapted.type
            name = concepts.names[int(tasks.concepts[t])]
            drawing = check[tuple(name.split("/", 1))][int(tasks.support_ids[t, 0])]
            target, present = drawing_targets(drawing, S, M)
            right = int(ty.presence.sum()) == min(len(drawing), S)
            strokes_ok.append(float(right))
            if right:  # the present strokes, packed first, against the drawer's
                pred = torch.cat([ty.cps[ty.presence > 0.5], ty.cps[ty.presence < 0.5]])[None].float()
                cost = match_cost(pred, torch.from_numpy(target)[None].float(), torch.from_numpy(present)[None].float())
                cp_err.append(cost.sqrt().item() * 100)
            if t < args.rows:
                pictures = [strokes_over(s, ty.cps, ty.presence) for s in support[:5]]
                sheet.append(row([*pictures, sample_grid(adapted.sample(8, generator=g)[None], scale=4)]))
            print(f"\r{k}-shot: {t + 1}/{len(tasks)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        column(sheet).save(out / f"sheet_{k}shot.png")
        entry = {"stroke_count_accuracy": sum(strokes_ok) / len(strokes_ok)}
        if cp_err:
            entry["cp_err"], entry["cp_err_ci95"] = mean_ci(cp_err)
        report["shots"][k] = entry
        print(f"{k}-shot: stroke count right for {entry['stroke_count_accuracy']:.2f} of the characters; control "
              f"points {entry.get('cp_err', float('nan')):.1f} canvas units off (RMS, where the count is right)")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'report.json'}; sheets: {out}/sheet_*shot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
