"""Evaluation on held-out concepts: k-shot NLL for every method on the same tasks, sample grids, a report.

Protocol: one task per held-out concept with a fixed query set (`eval.queries` examples) and a support
set of up to max(shots) other examples; the k-shot support is its first k examples, so every k is scored
on the same queries. NLL is in nats per image, averaged over a task's queries, then over tasks with a
95% confidence interval across tasks. VAEs report the importance-weighted bound with `iw_samples`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from metagen.checkpoint import atomic_write_text, load_learner
from metagen.config import Config
from metagen.data import EpisodeSampler, Splits, Tasks, fixed_tasks, load_splits
from metagen.data.text import CharVocab
from metagen.errors import CheckpointError, ConfigError, DataError
from metagen.generators.text import characters
from metagen.meta.base import Adapted, MetaLearner, build_learner
from metagen.metrics import mean_ci
from metagen.metrics.classify import classification_report
from metagen.metrics.classify import markdown_table as classify_table
from metagen.viz import save_png, task_grid

COPY_FIT_STEPS = 300


@dataclass
class Method:
    name: str
    learner: MetaLearner
    source: str  # where it came from: a checkpoint path, or how it was fitted
    train_steps: int


def nll_curve(learner: MetaLearner, tasks: Tasks, shots: list[int], iw_samples: int, seed: int = 0,
              bar: tqdm | None = None) -> dict[int, dict[str, Any]]:
    """Per k in `shots`: mean NLL over tasks (nats/image; text: bits/character or token), its 95% CI, the mean adapt
    time, and how many tasks gave a non-finite likelihood (`diverged`; then the mean is NaN). Families
    without a likelihood (GANs) get nll None and only the adapt time."""
    out: dict[int, dict[str, Any]] = {}
    for k in shots:
        torch.manual_seed(seed)
        per_task, adapt_s = [], 0.0
        if k == 0:
            try:
                learner.zero_shot()
            except DataError:
                out[k] = {"nll": None, "ci95": None, "n_tasks": len(tasks), "diverged": 0, "adapt_ms": 0.0,
                          "per_task": [], "why": "needs a support example"}
                continue
        for t in range(len(tasks)):
            t0 = time.perf_counter()
            adapted = learner.adapt(tasks.support[t, :k]) if k > 0 else learner.zero_shot()
            adapt_s += time.perf_counter() - t0
            if adapted.has_log_prob:
                per_task.append(query_nll(adapted, tasks.query[t], iw_samples))
            if bar is not None:
                bar.update(1)
        if not per_task:
            out[k] = {"nll": None, "ci95": None, "n_tasks": len(tasks), "diverged": 0,
                      "adapt_ms": 1000 * adapt_s / len(tasks), "per_task": []}
            continue
        diverged = sum(not math.isfinite(v) for v in per_task)
        mean, ci = mean_ci(per_task) if not diverged else (math.nan, math.nan)
        out[k] = {"nll": mean, "ci95": ci, "n_tasks": len(per_task), "diverged": diverged,
                  "adapt_ms": 1000 * adapt_s / len(per_task), "per_task": per_task}
    return out


def query_nll(adapted: Adapted, query: torch.Tensor, iw_samples: int) -> float:
    """One task's query NLL: mean nats per image, or for text (token ids) bits per character."""
    nats = -adapted.log_prob(query, iw_samples=iw_samples)  # [Q]
    if query.dtype == torch.long:
        return (nats.sum() / characters(query).sum() / math.log(2)).item()
    return nats.mean().item()


def sample_tasks(learner: MetaLearner, tasks: Tasks, shots: int, n: int, seed: int = 0) -> torch.Tensor:
    """[R, n, *example_shape] samples after adapting to each task's first `shots` support examples."""
    g = torch.Generator(device=tasks.support.device).manual_seed(seed)
    return torch.stack([learner.adapt(tasks.support[t, :shots]).sample(n, generator=g) for t in range(len(tasks))])


def draw_queries(learner: MetaLearner, tasks: Tasks, shots: int) -> torch.Tensor:
    """Fonts: [R, Q, 1, H, W] the queries' characters drawn in each task's typeface (from `shots` glyphs)."""
    return torch.stack([learner.adapt(tasks.support[t, :shots]).sample(tasks.query.shape[1],
                                                                       content=tasks.query[t, :, 1:])[:, :1]
                        for t in range(len(tasks))])


def fit_copy(config: Config, splits: Splits, device: torch.device | str = "cpu") -> Method:
    """The copy baseline's one parameter (pixel-flip rate), fitted on background tasks in a few seconds."""
    from metagen.train import Trainer

    cfg = Config.model_validate({**config.to_dict(), "learner": {"name": "copy"},
                                 "train": {**config.train.model_dump(), "steps": COPY_FIT_STEPS, "lr": 0.05,
                                           "device": str(device)}})
    learner = build_learner(cfg, splits.background.example_shape)
    Trainer(cfg, learner, EpisodeSampler(splits.background, seed=cfg.train.seed), progress=False).fit()
    return Method("copy", learner.eval(), f"fitted in eval ({COPY_FIT_STEPS} steps, flip={learner.flip:.4f})",
                  COPY_FIT_STEPS)


# Learner settings that only change how a trained learner adapts, so evaluation may override them.
ADAPT_KEYS = ("eval_inner_steps", "finetune_steps", "finetune_lr", "vectorize",
              # programs:
              "refine_steps", "joint_steps", "keep_strokes", "image_jitter", "fit_steps", "jitter_factor", "flip",
              # refine:
              "select", "select_by", "tune_steps", "tune_lr")


def adapt_overrides(items: list[str]) -> dict[str, Any]:
    """`learner.eval_inner_steps=1`-style overrides -> {key: value}; only adaptation settings are allowed."""
    from metagen.config import parse_override

    out: dict[str, Any] = {}
    for item in items:
        parsed = parse_override(item)
        section, inner = next(iter(parsed.items()))
        key = next(iter(inner)) if isinstance(inner, dict) else None
        if section != "learner" or key not in ADAPT_KEYS or isinstance(inner[key], dict):
            raise ConfigError(f"'{item}': evaluation can only change adaptation settings, "
                              f"learner.{{{', '.join(ADAPT_KEYS)}}}")
        out[key] = inner[key]
    return out


def with_adapt_settings(learner: MetaLearner, overrides: dict[str, Any]) -> list[str]:
    """Apply the overrides this learner has (validated); returns them as `key=value` strings."""
    mine = {k: v for k, v in overrides.items() if k in type(learner.cfg).model_fields}
    if mine:
        try:
            learner.cfg = type(learner.cfg).model_validate({**learner.cfg.model_dump(), **mine})
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"learner.{err['loc'][0]}: {err['msg']}") from None
    return [f"{k}={v}" for k, v in mine.items()]


def _held_out_data(config: Config) -> dict[str, Any]:
    """The data settings that decide the held-out tasks (rotations and mirrors only add background concepts)."""
    return config.data.model_dump(exclude={"rotations", "mirrors"})


def load_methods(checkpoints: list[str | Path], device: torch.device | str,
                 overrides: dict[str, Any] | None = None) -> tuple[Config, list[Method]]:
    """Learners from checkpoints, which must share their data and split; `overrides` change how they adapt."""
    methods: list[Method] = []
    config: Config | None = None
    applied = set()
    for path in checkpoints:
        learner, ckpt = load_learner(path, device)
        changed = with_adapt_settings(learner, overrides or {})
        applied |= {c.split("=")[0] for c in changed}
        if config is None:
            config = ckpt.config
        elif (_held_out_data(ckpt.config), ckpt.config.split) != (_held_out_data(config), config.split):
            raise CheckpointError(f"'{ckpt.path}' was trained on different data or split than '{methods[0].source}'; "
                                  "evaluate checkpoints of one split together")
        name = ckpt.config.learner.name
        if any(m.name == name for m in methods):
            name = f"{name} ({ckpt.path.parent.name})"
        if changed:
            name = f"{name} ({', '.join(changed)})"
        methods.append(Method(name, learner, str(ckpt.path), ckpt.step))
    if config is None:
        raise CheckpointError("give at least one --checkpoint to evaluate")
    unused = set(overrides or {}) - applied
    if unused:
        raise ConfigError(f"no evaluated learner has learner.{sorted(unused)[0]}")
    return config, methods


def evaluate(checkpoints: list[str | Path], out_dir: str | Path, *, shots: list[int] | None = None,
             iw_samples: int | None = None, max_tasks: int | None = None, episodes: int | None = None,
             classify: list[int] | None = None, classify_shots: int | None = None,
             classify_episodes: int | None = None, include_copy: bool = True,
             data_dir: str | None = None, device: str = "cpu", grid_shots: int = 5, grid_rows: int = 8,
             grid_samples: int = 10, progress: bool = True, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate checkpoints (plus the copy baseline) on held-out tasks; writes report.json, report.md, PNGs.

    `overrides` (`learner.eval_inner_steps=1`, ...) change how the checkpoints' learners adapt. `classify`:
    the N of N-way `classify_shots`-shot classification by likelihood, beside a pixel nearest neighbour."""
    from metagen.train import resolve_device

    dev = resolve_device(device)
    config, methods = load_methods(checkpoints, dev, adapt_overrides(overrides or []))
    ev = config.eval.model_copy(update={k: v for k, v in
                                        {"shots": shots, "iw_samples": iw_samples, "max_tasks": max_tasks,
                                         "episodes": episodes, "classify": classify, "classify_shots": classify_shots,
                                         "classify_episodes": classify_episodes}.items()
                                        if v is not None})
    try:
        ev = type(ev).model_validate(ev.model_dump())  # re-validate the overrides
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"eval.{err['loc'][0]} = {err['input']!r}: {err['msg'].removeprefix('Value error, ')}") \
            from None
    splits = load_splits(config.data, config.split, data_dir)
    text = config.data.is_text
    fonts = config.data.source == "fonts"  # glyph pairs: NLL of the glyph given its reference; no copy baseline
    if include_copy and not text and not fonts and not any(m.learner.cfg.name == "copy" for m in methods):
        methods.append(fit_copy(config, splits, dev))
    tasks = fixed_tasks(splits.held_out, max(ev.shots), ev.queries, ev.seed, ev.max_tasks, ev.episodes).to(dev)
    out = Path(out_dir)
    report: dict[str, Any] = {
        "data": {"source": config.data.source, "held_out_groups": splits.test_groups, "n_tasks": len(tasks),
                 "queries_per_task": ev.queries, "episodes_per_concept": ev.episodes,
                 "image_size": config.data.image_size,
                 "task_concepts": [splits.held_out.names[c] for c in tasks.concepts.tolist()]},
        "iw_samples": ev.iw_samples, "shots": ev.shots, "seed": ev.seed, "methods": {},
        "unit": ("bits/token" if config.data.source == "tunes" else "bits/character") if text else
                "nats/glyph (given its reference glyph)" if fonts else "nats/image",
    }
    bar = tqdm(total=len(methods) * len(ev.shots) * len(tasks), desc="eval", unit="task", disable=not progress,
               dynamic_ncols=True)
    grid_k = min(grid_shots, max(ev.shots))
    first = list(dict.fromkeys(tasks.concepts.tolist()))  # one grid row per concept: its first task
    rows = tasks.subset([tasks.concepts.tolist().index(c) for c in first[:grid_rows]])
    with torch.no_grad():
        for m in methods:
            bar.set_description(f"eval {m.name}")
            t0 = time.perf_counter()
            curve = nll_curve(m.learner, tasks, ev.shots, ev.iw_samples, ev.seed, bar)
            if fonts:  # the support glyphs, then the queries' characters drawn in the typeface
                with torch.enable_grad():
                    drawn = draw_queries(m.learner, rows, grid_k)
                grid = save_png(task_grid(rows.support[:, :grid_k, :1], drawn), out / f"samples_{_slug(m.name)}.png")
            elif text:
                samples = sample_tasks(m.learner, rows, grid_k, grid_samples, ev.seed)
                grid = write_texts(rows.support[:, :grid_k], samples, CharVocab(config.data.vocab),
                                   out / f"samples_{_slug(m.name)}.txt",
                                   [splits.held_out.names[c] for c in rows.concepts.tolist()])
            else:
                samples = sample_tasks(m.learner, rows, grid_k, grid_samples, ev.seed)
                grid = save_png(task_grid(rows.support[:, :grid_k], samples), out / f"samples_{_slug(m.name)}.png")
            report["methods"][m.name] = {
                "source": m.source, "train_steps": m.train_steps, "eval_seconds": time.perf_counter() - t0,
                "nll": {str(k): v for k, v in curve.items()}, "samples_png": grid.name,
            }
            report.setdefault("notes", []).extend(
                f"{m.name} gave non-finite log-likelihoods on {v['diverged']} of {v['n_tasks']} tasks at {k} shots: "
                "its adaptation diverged (for MAML, lower learner.inner_lr or learner.eval_inner_steps)"
                for k, v in curve.items() if v["diverged"])
    bar.close()
    if ev.classify:
        if text:
            raise ConfigError("classification by likelihood is for image concepts; drop --classify for text")
        settings = [(n, ev.classify_shots) for n in ev.classify]
        table = classification_report({m.name: m.learner for m in methods}, splits.held_out, settings,
                                      ev.classify_episodes, ev.classify_queries, ev.classify_iw_samples, ev.seed,
                                      dev, progress)
        report["classification"] = {"episodes": ev.classify_episodes, "queries": ev.classify_queries,
                                    "iw_samples": ev.classify_iw_samples, "table": table}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown_table(report) + "\n")
    return report


def write_texts(support: torch.Tensor, samples: torch.Tensor, vocab: CharVocab, path: Path,
                names: list[str] | None = None) -> Path:
    """Text counterpart of a sample grid: per task (named by its concept), its support texts, then the
    generated ones."""
    blocks = []
    for t, (s, x) in enumerate(zip(support, samples, strict=True)):
        task = f"task {t}" + (f" ({names[t]})" if names else "")
        blocks.append(f"## {task}: support\n" + "\n%\n".join(vocab.decode(s.cpu())) + f"\n\n## {task}: generated\n"
                      + "\n%\n".join(vocab.decode(x.cpu())))
    atomic_write_text(path, "\n\n".join(blocks) + "\n")
    return path


def markdown_table(report: dict[str, Any]) -> str:
    """NLL table: one row per method, one column per shot count, mean +- 95% CI in nats/image."""
    shots = [str(k) for k in report["shots"]]
    d = report["data"]
    unit = report.get("unit", "nats/image")
    lines = [f"Held-out {d['source']} groups {', '.join(d['held_out_groups'])}: {d['n_tasks']} tasks x "
             f"{d['queries_per_task']} queries; NLL in {unit} (lower is better), mean +- 95% CI across "
             "tasks" + ("." if unit.startswith("bits/") else
                        f"; VAE bounds with k = {report['iw_samples']} importance samples."), "",
             "| method | " + " | ".join(f"{k}-shot NLL" for k in shots) + " | adapt ms/task |",
             "|---|" + "---:|" * (len(shots) + 1)]
    for name, m in report["methods"].items():
        cells = [_cell(m["nll"][k]) for k in shots]
        adapt = m["nll"][shots[-1]]["adapt_ms"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {adapt:.1f} |")
    lines += [f"\nNote: {n}." for n in report.get("notes", [])]
    lines += concept_table(report)
    if "classification" in report:
        c = report["classification"]
        lines += ["", f"Few-shot classification by likelihood on the held-out concepts: {c['episodes']} episodes "
                  f"per setting, {c['queries']} query per concept, each query assigned to the support set under "
                  f"which its log-likelihood is highest (VAE bounds with k = {c['iw_samples']}); error, mean ± 95% "
                  "CI across episodes.", "", *classify_table(c["table"])]
    return "\n".join(lines)


def concept_table(report: dict[str, Any], most: int = 12) -> list[str]:
    """Markdown lines: each method's NLL per held-out concept at the largest shot count (its tasks' mean),
    when there are at most `most` concepts; no lines otherwise."""
    names = report["data"].get("task_concepts", [])
    concepts = list(dict.fromkeys(names))
    if not concepts or len(concepts) > most:
        return []
    k = str(max(report["shots"]))
    lines = ["", f"Per held-out concept at {k} shots ({report.get('unit', 'nats/image')}, mean of its "
             f"{report['data'].get('episodes_per_concept', 1)} task(s)):", "",
             "| method | " + " | ".join(concepts) + " |", "|---|" + "---:|" * len(concepts)]
    for name, m in report["methods"].items():
        per_task = m["nll"][k]["per_task"]
        if len(per_task) != len(names):
            continue
        means = [sum(v for v, n in zip(per_task, names, strict=True) if n == c) / names.count(c) for c in concepts]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    return lines


def _cell(r: dict[str, Any]) -> str:
    if r["nll"] is None:
        return f"n/a ({r.get('why', 'no likelihood')})"
    if r.get("diverged"):
        return f"diverged on {r['diverged']}/{r['n_tasks']} tasks"
    return f"{r['nll']:.2f} ± {r['ci95']:.2f}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
