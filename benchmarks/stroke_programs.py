"""Stroke programs on held-out Omniglot alphabets: infer a character's strokes from k images, draw new instances.

Trains the stroke encoder on the background alphabets' images and pen trajectories, estimates the motor noise
from the background drawers, then for every held-out character (the `omniglot` preset's split: Latin and
Tagalog on the small background sets) and k in --shots infers the character type from its first k support
images and scores the 10 fixed query drawings (the protocol of `metagen eval`):
  nll      importance-weighted lower bound on -log p(query | type), nats per image (mean, 95% CI over tasks)
  strokes  share of 1-shot types with as many strokes as the drawer drew   (held-out strokes used only here)
  cp_err   RMS distance of the 1-shot type's control points to the drawer's (strokes matched, either direction),
           canvas units (the canvas is 100 wide), over the tasks whose stroke count is right
and writes a sheet per k: support images with the inferred strokes in colour, then samples of the type; and
--imagine new characters drawn from the prior over programs (their programs as text, and a sheet).

    python benchmarks/stroke_programs.py --data-dir ../shared/data --steps 3000 --out results/strokes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from metagen.config import load_config
from metagen.data import fixed_tasks, load_splits
from metagen.data.strokes import load_strokes
from metagen.metrics.stats import mean_ci
from metagen.programs.encoder import StrokeEncoder, drawing_targets, match_cost, stroke_examples, train_encoder
from metagen.programs.model import ProgramPrior, estimate_noise, infer_type
from metagen.programs.viz import column, row, strokes_over
from metagen.viz import sample_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder with omniglot/ (default: $METAGEN_DATA_DIR)")
    ap.add_argument("--steps", type=int, default=3000, help="stroke encoder training steps")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--max-tasks", type=int, default=None, help="held-out characters scored (default: all)")
    ap.add_argument("--iw-samples", type=int, default=100)
    ap.add_argument("--strokes", type=int, default=4, help="strokes of a type at most")
    ap.add_argument("--control", type=int, default=6, help="control points of a stroke")
    ap.add_argument("--encoder", default=None, help="reuse a trained encoder (.pt state dict) instead of training")
    ap.add_argument("--jitter-factors", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                    help="multiples of the estimated jitter tried on the background validation characters")
    ap.add_argument("--imagine", type=int, default=8, help="new characters drawn from the prior over programs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/strokes")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    cfg = load_config("omniglot")
    splits = load_splits(cfg.data.model_copy(update={"rotations": False}), cfg.split, args.data_dir)
    background_groups = set(splits.background.group_names) | set(splits.validation.group_names)
    drawings = load_strokes(args.data_dir or _env_dir(), groups=background_groups)  # held-out strokes stay out
    t0 = time.perf_counter()
    noise = estimate_noise(drawings, args.strokes, args.control)
    encoder = StrokeEncoder(28, args.strokes, args.control)
    if args.encoder:
        encoder.load_state_dict(torch.load(args.encoder))
        log = []
    else:
        images, cps, present = stroke_examples(splits.background, drawings, args.strokes, args.control)
        log = train_encoder(encoder, images, cps, present, args.steps, seed=args.seed)
        torch.save(encoder.state_dict(), out / "encoder.pt")
    train_s = time.perf_counter() - t0
    encoder.eval()
    # the jitter the drawers' spread suggests also holds their different ways of drawing a character; choose how
    # much of it an instance gets by 1-shot NLL on the background validation characters (never the test groups)
    val_tasks = fixed_tasks(splits.validation, 1, 10, seed=cfg.eval.seed)
    choice = {}
    for factor in args.jitter_factors:
        trial = dataclasses.replace(noise, jitter=noise.jitter * factor)
        g_val = torch.Generator().manual_seed(args.seed)
        choice[factor] = sum(-infer_type(encoder, val_tasks.support[t, :1], trial).log_prob(
            val_tasks.query[t], iw_samples=args.iw_samples, generator=g_val).mean().item()
            for t in range(len(val_tasks))) / len(val_tasks)
        print(f"jitter x{factor:g} ({trial.jitter:.2f} canvas units): validation 1-shot NLL {choice[factor]:.2f}")
    best_factor = min(choice, key=choice.get)
    noise = dataclasses.replace(noise, jitter=noise.jitter * best_factor)

    # new characters from the prior over programs (learned from the same background strokes)
    _, bg_cps, bg_present = stroke_examples(splits.background, drawings, args.strokes, args.control)
    prior = ProgramPrior.fit(bg_cps, bg_present)
    g_imagine = torch.Generator().manual_seed(args.seed)
    imagined = [prior.sample(noise, generator=g_imagine) for _ in range(args.imagine)]
    if imagined:
        rows = [row([strokes_over(torch.zeros(1, 28, 28), ty.cps, ty.presence),
                     sample_grid(ty.sample(8, generator=g_imagine)[None], scale=4)]) for ty in imagined]
        column(rows).save(out / "imagined.png")
        (out / "imagined.txt").write_text("\n\n".join(ty.program().to_text() for ty in imagined) + "\n")
        print(f"{len(imagined)} imagined characters: {out / 'imagined.txt'}, {out / 'imagined.png'}")

    tasks = fixed_tasks(splits.held_out, max(args.shots), 10, seed=cfg.eval.seed, max_tasks=args.max_tasks)
    check = load_strokes(args.data_dir or _env_dir(), groups=set(splits.test_groups))  # only to check 1-shot types
    report: dict = {"test_groups": splits.test_groups, "tasks": len(tasks), "noise": noise.to_dict(),
                    "jitter_choice": {str(k): v for k, v in choice.items()},
                    "encoder_steps": args.steps if not args.encoder else None, "train_s": train_s,
                    "train_log": log[-3:], "shots": {}}
    g = torch.Generator().manual_seed(args.seed)
    for k in args.shots:
        nll, strokes_ok, cp_err, sheet, t1 = [], [], [], [], time.perf_counter()
        for t in range(len(tasks)):
            support = tasks.support[t, :k]
            ty = infer_type(encoder, support, noise)
            nll.append(-ty.log_prob(tasks.query[t], iw_samples=args.iw_samples, generator=g).mean().item())
            if k == 1:
                name = splits.held_out.names[int(tasks.concepts[t])]
                drawing = check[tuple(name.split("/", 1))][int(tasks.support_ids[t, 0])]
                target, present = drawing_targets(drawing, args.strokes, args.control)
                right = int(ty.presence.sum()) == min(len(drawing), args.strokes)
                strokes_ok.append(float(right))
                if right:  # the present strokes, packed first, against the drawer's
                    pred = torch.cat([ty.cps[ty.presence > 0.5], ty.cps[ty.presence < 0.5]])[None].float()
                    cost = match_cost(pred, torch.from_numpy(target)[None].float(),
                                      torch.from_numpy(present)[None].float())
                    cp_err.append(cost.sqrt().item() * 100)
            if t < 8:
                samples = ty.sample(8, generator=g)
                pictures = [strokes_over(s, ty.cps, ty.presence) for s in support[:5]]
                sheet.append(row([*pictures, sample_grid(samples[None], scale=4)]))
            print(f"\r{k}-shot: {t + 1}/{len(tasks)}", end="", file=sys.stderr)
        print(file=sys.stderr)
        column(sheet).save(out / f"sheet_{k}shot.png")
        mean, ci = mean_ci(nll)
        entry = {"nll": mean, "ci95": ci, "s_per_task": (time.perf_counter() - t1) / len(tasks), "per_task": nll}
        if strokes_ok:
            entry["stroke_count_accuracy"] = sum(strokes_ok) / len(strokes_ok)
            entry["cp_err"], entry["cp_err_ci95"] = mean_ci(cp_err) if cp_err else (None, None)
        report["shots"][k] = entry
        print(f"{k}-shot NLL bound {mean:.2f} ± {ci:.2f} nats/image ({entry['s_per_task']:.1f} s/task)"
              + (f"; stroke count right {entry['stroke_count_accuracy']:.2f}, control points off by "
                 f"{entry['cp_err']} canvas units (RMS, when the count is right)" if strokes_ok else ""))
        print(ty.program().to_text())
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'report.json'}; sheets: {out}/sheet_*shot.png")
    return 0


def _env_dir() -> str:
    import os

    d = os.environ.get("METAGEN_DATA_DIR")
    if not d:
        raise SystemExit("pass --data-dir or set METAGEN_DATA_DIR to the folder holding omniglot/")
    return d


if __name__ == "__main__":
    sys.exit(main())
