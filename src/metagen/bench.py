"""`metagen bench`: every method of a preset on the same held-out tasks, every metric, with error bars.

A bench preset (TOML under metagen/configs/bench/) names methods, each a training config plus its step
count, and the grid: shots x seeds. For each seed, each method is trained on the background split (or its
finished run is reused), then adapted to every held-out task at every shot count; from each adaptation
come the query NLL (where the family has a likelihood) and `samples` generated images, scored by:

- FID, precision, recall: generated images of all tasks pooled, against the tasks' real query images, in
  the domain feature space (metagen.metrics.features; cached per split).
- fidelity: fraction of a task's samples that the held-out classifier (trained on query examples only,
  never on support examples) recognises as the task's concept.
- novelty: distance from a sample to its nearest support example; diversity: between two samples.
- adaptation cost: mean wall time of `adapt` per task; peak tensor memory of one `adapt`.
- few-shot classification by likelihood (metagen.metrics.classify): N-way k-shot episodes of held-out
  concepts, each query assigned to the support set under which the adapted model gives it the highest
  log_prob, beside a pixel nearest neighbour.

Per-task metrics get a 95% CI across tasks (pooled over seeds); FID gets a bootstrap CI over tasks.
A reference row scores real held-out images the same way where that is meaningful.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from metagen.checkpoint import atomic_write_text, checkpoint_path, load_learner
from metagen.config import Config, Strict, from_dict, load_config, presets, read_toml
from metagen.data import ConceptSet, Splits, Tasks, fixed_tasks, load_concepts, load_splits
from metagen.data.concepts import resolve_test_groups
from metagen.errors import CheckpointError, ConfigError
from metagen.evaluate import adapt_overrides, query_nll, with_adapt_settings
from metagen.meta.base import MetaLearner
from metagen.metrics import mean_ci
from metagen.metrics.classify import (
    PIXEL_NN,
    Episodes,
    classification_episodes,
    episode_errors,
    label,
    likelihood_errors,
    pixel_nn_score,
    summarise,
)
from metagen.metrics.classify import markdown_table as classify_table
from metagen.metrics.cost import peak_memory, timed
from metagen.metrics.features import (
    FIDELITY_VERSION,
    FeatureConfig,
    FeatureNet,
    FidelityClassifier,
    feature_data,
    feature_net,
)
from metagen.metrics.quality import diversity, fid_bootstrap, novelty, precision_recall

METRICS = ("nll", "fid", "precision", "recall", "fidelity", "novelty", "diversity")


class BenchMethod(Strict):
    """Either a training config the bench trains (per seed), or a finished run folder it only evaluates."""

    config: str | None = None  # a training preset name or TOML path
    steps: int | None = Field(None, ge=1)  # train.steps; None: the config's own
    set: list[str] = Field(default_factory=list)  # further `section.key=value` overrides
    checkpoint: str | None = None  # a run folder trained elsewhere (`metagen train`); the same for every seed
    # adaptation settings applied to the trained learner (`learner.select=8`, as `metagen eval --set` takes)
    adapt: list[str] = Field(default_factory=list)
    # False: leave the method out of classification by likelihood (for learners whose every adaptation is a
    # training run, e.g. scratch: 100 steps for each of the 2500 support sets of the default settings)
    classify: bool = True

    @field_validator("adapt")
    @classmethod
    def _adapt_keys(cls, v: list[str]) -> list[str]:
        try:
            adapt_overrides(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> BenchMethod:
        if (self.config is None) == (self.checkpoint is None):
            raise ValueError("give a method either config (to train it) or checkpoint (a trained run), not both")
        if self.checkpoint is not None and (self.steps is not None or self.set):
            raise ValueError("steps and set apply to trained configs, not to a checkpoint")
        return self


def positive_shots(v: list[int]) -> list[int]:
    """A bench's shot counts, sorted and deduplicated; each must be >= 1."""
    if not v or min(v) < 1:
        raise ValueError("must be a non-empty list of positive shot counts")
    return sorted(set(v))


Shots = Annotated[list[int], AfterValidator(positive_shots)]


class BenchPreset(Strict):
    description: str = ""
    shots: Shots = Field(default_factory=lambda: [1, 5, 10])
    seeds: list[int] = Field(default_factory=lambda: [0])  # each seed: its own training run and task draw
    queries: int = Field(10, ge=2)  # real images per task: NLL queries, FID/recall reference, classifier data
    samples: int = Field(20, ge=2)  # generated images per task and shot count
    iw_samples: int = Field(200, ge=1)  # importance samples of VAE bounds
    max_tasks: int | None = Field(None, ge=2)  # None: every held-out concept
    grid_shots: int = Field(5, ge=1)  # the sample grids adapt to this many shots
    grid_rows: int = Field(6, ge=1)
    fidelity_steps: int = Field(300, ge=1)
    pr_k: int = Field(3, ge=1)  # k of the precision/recall k-NN radii
    bootstrap: int = Field(200, ge=0)  # FID bootstrap resamples over tasks
    # Few-shot classification by likelihood (metagen.metrics.classify): (N ways, k shots) settings, episodes
    # per setting and seed, queries per concept, and the VAE bound's importance samples there.
    classify: list[tuple[int, int]] = Field(default_factory=lambda: [(5, 1), (20, 1)])
    classify_episodes: int = Field(100, ge=1)
    classify_queries: int = Field(1, ge=1)
    classify_iw_samples: int = Field(20, ge=1)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    methods: dict[str, BenchMethod]

    @field_validator("classify")
    @classmethod
    def _classify(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if any(n < 2 or k < 1 for n, k in v):
            raise ValueError("each setting is [N ways >= 2, k shots >= 1]")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: dict[str, BenchMethod]) -> dict[str, BenchMethod]:
        if not v:
            raise ValueError("name at least one method")
        return v


def bench_presets() -> list[str]:
    return presets("metagen.configs.bench")


def load_preset(name_or_path: str) -> tuple[str, BenchPreset]:
    """(name, preset) from a bench preset name or a TOML path."""
    name, raw = read_toml(name_or_path, "metagen.configs.bench", "bench preset")
    if raw.get("kind") == "fonts":
        raise ConfigError(f"bench preset '{name}' is a fonts bench (metagen.fontbench): run it with "
                          f"`metagen bench --preset {name_or_path}`; it has no feature-network settings")
    try:
        return name, BenchPreset.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"bad bench preset ({name_or_path}): {loc}: {err['msg']}") from None


def method_config(method: BenchMethod, seed: int, device: str) -> Config:
    """The config a method trains with at `seed`, or, for a checkpoint method, the one it was trained with."""
    if method.checkpoint is not None:
        from metagen.checkpoint import load_checkpoint

        return load_checkpoint(method.checkpoint).config
    overrides = [*method.set, f"train.seed={seed}", f"train.device='{device}'"]
    if method.steps is not None:
        overrides.append(f"train.steps={method.steps}")
    return load_config(method.config, overrides)


@dataclass
class Trained:
    learner: MetaLearner
    steps: int
    seconds: float | None  # total training time of the run, over all invocations (None: unknown)


def _logged_seconds(run: Path) -> float | None:
    """Training time of a run folder from its log.csv (summed over resumed invocations), if it has one."""
    import csv

    try:
        with (run / "log.csv").open() as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    total, last = 0.0, 0.0
    for row in rows:
        t = float(row["elapsed_s"])
        if t < last:  # a resumed invocation starts its clock again
            total += last
        last = t
    return total + last


def train_or_reuse(config: Config, run: Path, data_dir: str | None, device: torch.device, progress: bool,
                   method_checkpoint: str | None = None) -> Trained:
    """Train `config` in `run`, resume it if it was interrupted, or reuse it if a bench finished it;
    a checkpoint method is only loaded."""
    from metagen.train import train

    if method_checkpoint is not None:
        learner, ckpt = load_learner(method_checkpoint, device)
        return Trained(learner.eval(), ckpt.step, _logged_seconds(ckpt.path.parent))
    marker = run / "bench.json"
    wanted = config.to_dict()
    if marker.is_file():
        done = json.loads(marker.read_text())
        if _current(done.get("config", {})) == wanted:
            learner, ckpt = load_learner(run, device)
            return Trained(learner.eval(), done["step"], done["seconds"])
        marker.unlink()  # the preset changed: train again (resuming refuses a changed model)
    resume = (run / "checkpoint.safetensors").is_file()
    partial = run / "bench-partial.json"  # training time of interrupted invocations
    before = json.loads(partial.read_text())["seconds"] if resume and partial.is_file() else 0.0
    t0 = time.perf_counter()
    try:
        result = train(config, run, resume=resume, data_dir=data_dir, progress=progress)
    except CheckpointError as e:  # the preset now describes another model than the one in the run folder
        reason = str(e).split(";")[0]
        raise CheckpointError(f"{reason}; the bench preset changed the model: delete '{run}' or pass another "
                              "--runs folder") from None
    finally:
        if run.is_dir():
            atomic_write_text(partial, json.dumps({"seconds": before + time.perf_counter() - t0}) + "\n")
    seconds = before + time.perf_counter() - t0
    atomic_write_text(marker, json.dumps({"config": wanted, "step": result.step, "seconds": seconds}, indent=2) + "\n")
    learner, _ = load_learner(run, device)
    return Trained(learner.eval(), result.step, seconds)


@dataclass
class _PerK:
    """One method, one seed, one shot count."""

    per_task: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per task
    fid: float | None = None
    fid_ci: float | None = None
    adapt_ms: float = 0.0
    peak_mib: float = 0.0


def _scores_file(out: Path, method: str, seed: int) -> Path:
    return out / "scores" / f"{_slug(method)}-seed{seed}.json"


def _current(config: dict[str, Any]) -> dict[str, Any] | None:
    """A stored config as this metagen reads it (settings added since it was written get their defaults);
    None if it no longer validates."""
    try:
        return from_dict(config).to_dict()
    except ConfigError:
        return None


def _load_scores(path: Path, fingerprint: dict[str, Any],
                 png: Path | None) -> tuple[dict[int, _PerK], dict[str, list[float] | None], float] | None:
    """(scores, classification errors, scoring seconds) of a (method, seed) saved by an earlier invocation, if
    made the same way."""
    try:
        saved = json.loads(path.read_text())
        made = {**saved["fingerprint"], "config": _current(saved["fingerprint"]["config"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if made != fingerprint or (png is not None and not png.is_file()):
        return None
    return {int(k): _PerK(**v) for k, v in saved["scores"].items()}, saved.get("classify", {}), saved["seconds"]


def score_method(learner: MetaLearner, tasks: Tasks, p: BenchPreset, feats: FeatureNet, clf: FidelityClassifier,
                 real_f: torch.Tensor, support_f: torch.Tensor, seed: int, device: torch.device,
                 bar: Any = None) -> tuple[dict[int, _PerK], torch.Tensor]:
    """Adapt to every task at every shot count and score it. real_f: [T, Q, D] query features;
    support_f: [T, K, D]. Returns ({k: scores}, grid samples [R, N, ...] at `grid_shots`)."""
    T, Q = real_f.shape[:2]
    grid_k = min(p.grid_shots, max(p.shots))
    out: dict[int, _PerK] = {}
    grid: list[torch.Tensor] = []
    for k in p.shots:
        torch.manual_seed(seed)
        g = torch.Generator(device=device).manual_seed(seed)
        r = _PerK(per_task={m: [] for m in ("nll", "fidelity", "novelty", "diversity")})
        fake, adapt_s = [], 0.0
        for t in range(T):
            support = tasks.support[t, :k]
            adapted, seconds = timed(lambda s=support: learner.adapt(s))
            adapt_s += seconds
            if adapted.has_log_prob:
                r.per_task["nll"].append(query_nll(adapted, tasks.query[t], p.iw_samples))
            x = adapted.sample(p.samples, generator=g).float().clamp(0, 1)  # [N, C, H, W]
            f = feats.features(x)  # [N, D]
            fake.append(f)
            r.per_task["fidelity"].append(clf.recognised(x, t))
            r.per_task["novelty"].append(novelty(f, support_f[t, :k]))
            r.per_task["diversity"].append(diversity(f))
            if k == grid_k and t < p.grid_rows:
                grid.append(x.cpu())
            if bar is not None:
                bar.update(1)
        fake_f = torch.stack(fake)  # [T, N, D]
        r.fid, r.fid_ci = fid_bootstrap(real_f, fake_f, p.bootstrap, seed)
        precision, recall = precision_recall(real_f.flatten(0, 1), fake_f.flatten(0, 1), p.pr_k)
        r.per_task["precision"] = precision.view(T, -1).mean(1).tolist()
        r.per_task["recall"] = recall.view(T, Q).mean(1).tolist()
        r.adapt_ms = 1000 * adapt_s / T
        _, peak = peak_memory(lambda s=tasks.support[0, :k]: learner.adapt(s), device)
        r.peak_mib = peak / 2**20
        out[k] = r
    return out, torch.stack(grid)


def score_reference(tasks: Tasks, p: BenchPreset, clf: FidelityClassifier, real_f: torch.Tensor,
                    support_f: torch.Tensor, seed: int) -> dict[int, _PerK]:
    """Real held-out images scored like samples, the best a generator can hope for: the queries' novelty
    w.r.t. the k-shot support and their diversity; the classifier's accuracy on the support images (which it
    never saw) as fidelity; FID, precision and recall of all support images against the queries (the floor
    and ceilings these sample sizes allow)."""
    T = support_f.shape[0]
    fid_value, fid_ci = fid_bootstrap(real_f, support_f, p.bootstrap, seed)
    precision, recall = precision_recall(real_f.flatten(0, 1), support_f.flatten(0, 1), p.pr_k)
    same_for_every_k = {  # only novelty depends on how many support images there are
        "diversity": [diversity(real_f[t]) for t in range(T)],
        "fidelity": [clf.recognised(tasks.support[t], t) for t in range(T)],
        "precision": precision.view(T, -1).mean(1).tolist(),
        "recall": recall.view(T, -1).mean(1).tolist(),
    }
    return {k: _PerK(per_task={"novelty": [novelty(real_f[t], support_f[t, :k]) for t in range(T)],
                               **same_for_every_k}, fid=fid_value, fid_ci=fid_ci) for k in p.shots}


def classify_method(learner: MetaLearner, episodes: dict[str, Episodes], iw_samples: int, seed: int,
                    bar: Any = None) -> dict[str, list[float] | None]:
    """{"N-way k-shot": per-episode errors (None: no likelihood)} of classifying by the learner's log_prob."""
    out = {}
    for name, eps in episodes.items():
        torch.manual_seed(seed)
        out[name] = likelihood_errors(learner, eps, iw_samples, bar)
    return out


def _summarise_classify(runs: list[dict[str, list[float] | None]]) -> dict[str, Any]:
    """Seeds' classification errors -> {setting: summary}, episodes of every seed pooled."""
    settings = runs[0].keys() if runs else []
    return {s: summarise(None if any(r[s] is None for r in runs) else [e for r in runs for e in r[s]])
            for s in settings}


def _summarise(runs: list[dict[int, _PerK]], shots: list[int]) -> dict[str, Any]:
    """Seeds' results -> {k: {metric: {mean, ci95, n}}, adapt_ms, peak_mib} with per-task values pooled."""
    out: dict[str, Any] = {}
    for k in shots:
        row: dict[str, Any] = {}
        for m in METRICS:
            if m == "fid":
                vals = [r[k].fid for r in runs if r[k].fid is not None]
                if vals:
                    row[m] = {"mean": sum(vals) / len(vals), "ci95": sum(r[k].fid_ci for r in runs) / len(runs),
                              "per_seed": vals}
                continue
            vals = [v for r in runs for v in r[k].per_task.get(m, [])]
            diverged = sum(not math.isfinite(v) for v in vals)
            if diverged:  # a diverged adaptation (NaN samples or likelihood) has no meaningful mean
                row[m] = {"mean": math.nan, "ci95": math.nan, "n": len(vals), "diverged": diverged}
            elif vals:
                mean, ci = mean_ci(vals)
                row[m] = {"mean": mean, "ci95": ci, "n": len(vals)}
        row["adapt_ms"] = sum(r[k].adapt_ms for r in runs) / len(runs)
        row["peak_mib"] = sum(r[k].peak_mib for r in runs) / len(runs)
        out[str(k)] = row
    return out


def _checkpoint_stamp(run: str | None) -> list[int] | None:
    """Size and modification time of a checkpoint method's weights: retraining it invalidates its scores."""
    if run is None:
        return None
    st = checkpoint_path(run).stat()
    return [st.st_size, st.st_mtime_ns]


def _held_out(config: Config, concepts: ConceptSet) -> tuple[Any, ...]:
    """What makes two configs' evaluations comparable: the data and the held-out groups (resolved on `concepts`,
    the data every method shares)."""
    d = config.data
    return (d.source, d.image_size, d.examples_per_concept,
            resolve_test_groups(concepts, config.split.test_groups, config.split.seed))


def run_bench(preset: str, out_dir: str | Path, runs_dir: str | Path = "runs/bench", *, seeds: list[int] | None = None,
              methods: list[str] | None = None, data_dir: str | None = None, device: str = "cpu",
              docs: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run a bench preset; writes results.json, results.md and PNGs to `out_dir`, and the table to `docs`."""
    from tqdm.auto import tqdm

    from metagen.plots import fidelity_vs_novelty, nll_vs_shots
    from metagen.train import resolve_device
    from metagen.viz import save_png, task_grid

    t_start = time.perf_counter()
    name, p = load_preset(preset)
    seeds = seeds or p.seeds
    chosen = methods or list(p.methods)
    unknown = [m for m in chosen if m not in p.methods]
    if unknown:
        raise ConfigError(f"preset '{name}' has no method '{unknown[0]}'; it has: {', '.join(p.methods)}")
    dev = resolve_device(device)
    configs = {m: {s: method_config(p.methods[m], s, device) for s in seeds} for m in chosen}
    base = configs[chosen[0]][seeds[0]]
    concepts = load_concepts(base.data, data_dir)
    splits: Splits = load_splits(base.data, base.split, data_dir, concepts)
    for m in chosen:
        if _held_out(configs[m][seeds[0]], concepts) != _held_out(base, concepts):
            raise ConfigError(f"bench method '{m}' is evaluated on other data or other held-out groups than "
                              f"'{chosen[0]}'; every method of a bench must share data.source, data.image_size "
                              "and split.test_groups")
    resolved = base.model_copy(deep=True)
    resolved.split.test_groups = splits.test_groups
    background = splits.background if not base.data.mirrors else \
        load_splits(feature_data(base.data), base.split, data_dir, concepts).background
    feats = feature_net(resolved, background, p.features, dev, progress=progress)
    out = Path(out_dir)
    report: dict[str, Any] = {
        "preset": name, "description": p.description, "settings": p.model_dump(exclude={"methods"}),
        "data": {"source": base.data.source, "held_out_groups": splits.test_groups,
                 "image_size": base.data.image_size},
        "features": {k: v for k, v in feats.info.items() if k != "config"}, "seeds": seeds,
        "fidelity_classifier": {}, "methods": {}, "reference": {},
    }
    runs: dict[str, list[dict[int, _PerK]]] = {m: [] for m in chosen}
    classified: dict[str, list[dict[str, list[float] | None]]] = {m: [] for m in chosen}
    pixel_nn: list[dict[str, list[float] | None]] = []
    trained: dict[str, list[Trained]] = {m: [] for m in chosen}
    reference: list[dict[int, _PerK]] = []
    grid_support = None
    reused_seconds = 0.0
    for seed in seeds:
        tasks = fixed_tasks(splits.held_out, max(p.shots), p.queries, seed, p.max_tasks).to(dev)
        report["data"]["n_tasks"] = len(tasks)
        clf = FidelityClassifier(feats.net, tasks, p.fidelity_steps, seed=seed, progress=progress)
        report["fidelity_classifier"][str(seed)] = {"train_accuracy": clf.train_accuracy,
                                                    "support_accuracy": clf.support_accuracy}
        real_f = feats.net.features(tasks.query.flatten(0, 1)).view(len(tasks), p.queries, -1)
        support_f = feats.net.features(tasks.support.flatten(0, 1)).view(len(tasks), max(p.shots), -1)
        reference.append(score_reference(tasks, p, clf, real_f, support_f, seed))
        episodes = {label(n, k): classification_episodes(splits.held_out, n, k, p.classify_queries,
                                                         p.classify_episodes, seed).to(dev) for n, k in p.classify}
        pixel_nn.append({name: episode_errors(pixel_nn_score, eps) for name, eps in episodes.items()})
        grid_k = min(p.grid_shots, max(p.shots))
        if grid_support is None:
            grid_support = tasks.support[: p.grid_rows, :grid_k].cpu()
        for m in chosen:
            run = Path(runs_dir) / name / m / f"seed{seed}"
            tr = train_or_reuse(configs[m][seed], run, data_dir, dev, progress, p.methods[m].checkpoint)
            with_adapt_settings(tr.learner, adapt_overrides(p.methods[m].adapt))
            trained[m].append(tr)
            # Each (method, seed) is saved as soon as it is scored, so an interrupted bench resumes after it.
            png = out / f"samples_{_slug(m)}.png"
            saved = _scores_file(out, m, seed)
            fingerprint = {"settings": report["settings"], "features": feats.info["key"], "seed": seed,
                           "fidelity_version": FIDELITY_VERSION,
                           "config": configs[m][seed].to_dict(), "train_step": tr.steps,
                           "checkpoint": _checkpoint_stamp(p.methods[m].checkpoint)}
            fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back: tuples become lists
            reused = _load_scores(saved, fingerprint, png if seed == seeds[0] else None)
            if reused is not None:
                if progress:
                    print(f"bench {m} seed {seed}: scores reused from {saved} (delete it to score again)")
                runs[m].append(reused[0])
                classified[m].append(reused[1])
                reused_seconds += reused[2]
                report["methods"].setdefault(m, {"samples_png": png.name})
                report["methods"][m].setdefault("eval_seconds", []).append(reused[2])
                continue
            method_episodes = episodes if p.methods[m].classify else {}
            bar = tqdm(total=len(p.shots) * len(tasks) + len(method_episodes) * p.classify_episodes,
                       desc=f"bench {m} seed {seed}", unit="task", disable=not progress, dynamic_ncols=True)
            t0 = time.perf_counter()
            with torch.no_grad():
                scores, grid = score_method(tr.learner, tasks, p, feats.net, clf, real_f, support_f, seed, dev, bar)
                errors = classify_method(tr.learner, method_episodes, p.classify_iw_samples, seed, bar)
            bar.close()
            runs[m].append(scores)
            classified[m].append(errors)
            if seed == seeds[0]:
                save_png(task_grid(grid_support, grid), png)
            report["methods"].setdefault(m, {"samples_png": png.name})
            seconds = time.perf_counter() - t0
            report["methods"][m].setdefault("eval_seconds", []).append(seconds)
            saved.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved, json.dumps({"fingerprint": fingerprint, "seconds": seconds, "scores": {
                str(k): asdict(v) for k, v in scores.items()}, "classify": errors}) + "\n")
    for m in chosen:
        report["methods"][m].update({
            "config": p.methods[m].config, "checkpoint": p.methods[m].checkpoint,
            "learner": configs[m][seeds[0]].learner.name,
            "generator": configs[m][seeds[0]].generator.name if type(trained[m][0].learner).uses_generator else "—",
            "train_steps": [t.steps for t in trained[m]], "train_seconds": [t.seconds for t in trained[m]],
            "shots": _summarise(runs[m], p.shots), "classify": _summarise_classify(classified[m]),
        })
    report["reference"] = _summarise(reference, p.shots)
    report["classify_reference"] = {PIXEL_NN: _summarise_classify(pixel_nn)}
    # wall time of this invocation plus the scoring time of earlier ones whose scores it reused
    report["seconds"] = time.perf_counter() - t_start + reused_seconds
    report["plots"] = {"nll": nll_vs_shots(report, out / "nll_vs_shots.png").name,
                       "fidelity_novelty": fidelity_vs_novelty(report, out / "fidelity_vs_novelty.png").name}
    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    table = markdown_report(report, out)
    atomic_write_text(out / "results.md", table + "\n")
    if docs is not None:
        update_docs(Path(docs), name, table)
    return report


def _fmt(cell: dict[str, Any] | None, digits: int = 2) -> str:
    if cell is None:
        return "—"
    if cell.get("diverged"):
        return f"diverged on {cell['diverged']}/{cell['n']}"
    if not math.isfinite(cell["mean"]):
        return "diverged"  # FID of samples of which some are not finite
    return f"{cell['mean']:.{digits}f} ± {cell['ci95']:.{digits}f}"


def markdown_report(report: dict[str, Any], out_dir: Path | None = None) -> str:
    """The results table (one row per method and shot count) with the protocol above it."""
    s = report["settings"]
    d = report["data"]
    f = report["features"]
    clf = report["fidelity_classifier"]
    acc = sum(c["support_accuracy"] for c in clf.values()) / len(clf)
    seeds = report["seeds"]
    lines = [
        f"Bench preset `{report['preset']}`: held-out {d['source']} groups {', '.join(d['held_out_groups'])}, "
        f"{d['n_tasks']} tasks x {s['queries']} query images, {s['samples']} samples per task and shot count, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; {report['seconds'] / 60:.1f} min "
        "in all.",
        "",
        f"NLL in nats/image (VAE: IWAE bound, k = {s['iw_samples']}). FID, precision and recall (k = {s['pr_k']}) "
        f"pool every task's samples against the tasks' query images in a {f['key'][:8]} domain feature space "
        f"({f['classes']}-way background classifier, held-out accuracy {_pct(f['val_accuracy'])}). Fidelity: "
        f"fraction of samples a held-out classifier (trained on query images only; {_pct(acc)} on the unseen "
        "support images) gives the support's concept. Novelty: feature distance to the nearest support image; "
        "diversity: between two samples. Mean ± 95% CI across tasks (FID: bootstrap over tasks). The "
        "reference rows score real images: the held-out support images (FID, precision, recall against the "
        "queries; fidelity) and the queries (novelty w.r.t. the k-shot support, diversity).",
        "",
        "| method | shots | NLL | FID | precision | recall | fidelity | novelty | diversity | adapt ms | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = ("real images (reference)", {"shots": report["reference"]})
    for name, m in [reference, *report["methods"].items()]:
        for k, row in m["shots"].items():
            cells = [_fmt(row.get("nll")), _fmt(row.get("fid")), _fmt(row.get("precision"), 3),
                     _fmt(row.get("recall"), 3), _fmt(row.get("fidelity"), 3), _fmt(row.get("novelty")),
                     _fmt(row.get("diversity"))]
            cells += ["—", "—"] if name == reference[0] else [f"{row['adapt_ms']:.1f}", f"{row['peak_mib']:.1f}"]
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    if s.get("classify"):
        table = {**report["classify_reference"], **{n: m["classify"] for n, m in report["methods"].items()}}
        lines += ["", f"Few-shot classification by likelihood: {s['classify_episodes']} episodes per setting "
                  f"and seed drawn from the held-out concepts, {s['classify_queries']} query per concept; each "
                  "query goes to the support set under which its log-likelihood is highest (VAE bounds with k = "
                  f"{s['classify_iw_samples']}); error, mean ± 95% CI across episodes. The first row assigns it "
                  "to the support image nearest in pixel space.", "", *classify_table(table)]
    lines.append("")
    lines.append("| method | learner | generator | training steps | training min |")
    lines.append("|---|---|---|---:|---:|")
    for name, m in report["methods"].items():
        secs = [t for t in m["train_seconds"] if t is not None]
        mins = f"{sum(secs) / len(secs) / 60:.1f}" if secs else "—"
        source = f" (`{m['checkpoint']}`)" if m.get("checkpoint") else ""
        lines.append(f"| {name}{source} | {m['learner']} | {m['generator']} | "
                     f"{', '.join(map(str, m['train_steps']))} | {mins} |")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def update_docs(path: Path, name: str, table: str) -> None:
    """Put `table` between this preset's markers in `path` (appended at the end the first time)."""
    start, end = f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"
    text = path.read_text() if path.is_file() else ""
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    atomic_write_text(path, text)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
