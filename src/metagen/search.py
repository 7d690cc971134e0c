"""Architecture search as a meta-generator: choose the generator's architecture for a task distribution.

The search space covers the decoder family (a latent-variable VAE or an autoregressive PixelCNN), depth,
width, kernel sizes, latent sizes, and where attention over the support set sits (nowhere: a set code
conditions the generator; in the VAE's encoder, decoder or both; in every n-th PixelCNN layer). Optuna's
TPE sampler proposes architectures and its median pruner stops a trial whose meta-validation NLL is worse
than the median of earlier trials at the same point (early stopping, so a CPU budget covers ~3x more trials).

Every trial meta-trains for the same wall-clock minutes, so a slow architecture pays for its cost, and is
scored by k-shot NLL on **held-out background groups**: groups drawn from the meta-training groups by
`split.seed`, never the test groups, which are dropped before any trial runs. The study lives in an SQLite
file in the output folder, so a search that is stopped (Ctrl+C, a crash, a killed machine) continues with
`--resume`; interrupted trials are run again. The best architecture so far is kept as a preset, `best.toml`,
that `metagen train --config` accepts.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from metagen.checkpoint import atomic_write_text
from metagen.config import Config, SplitConfig, from_dict
from metagen.data import EpisodeSampler, Splits, Tasks, fixed_tasks, load_concepts, load_splits
from metagen.data.concepts import resolve_test_groups
from metagen.errors import ConfigError, DataError, MetagenError, TrainingDiverged
from metagen.evaluate import nll_curve
from metagen.meta.base import build_learner
from metagen.train import Interrupted, Trainer

SOURCES = ("omniglot", "glyphs")  # image sources whose groups are whole scripts, so held-out groups mean something
STUDY_FILE, BEST_FILE, TRIALS_FILE, SETTINGS_FILE = "study.db", "best.toml", "trials.csv", "search.json"
PARAM_COUNT = "weights"
CHUNK_STEPS = 5  # a trial checks its CPU clock every this many steps
# Random architectures before TPE models the results (Optuna's default is 10: most of a CPU-hour's trials).
STARTUP_TRIALS = 4


@dataclass
class SearchSettings:
    """How the search spends its budget and scores a trial."""

    # CPU minutes (this process, every thread) of trials, summed over every session of the search
    budget_minutes: float = 60.0
    trial_minutes: float = 4.0  # CPU minutes of meta-training of one trial that is not pruned
    rungs: int = 3  # scores per trial (after 1/rungs, 2/rungs, ... of its minutes); the pruner acts on them
    val_groups: int = 1  # background groups held out to score trials (drawn by split.seed)
    shots: int = 5  # support examples of a meta-validation task
    queries: int = 5
    max_tasks: int = 40  # meta-validation tasks (one per concept, at most this many)
    iw_samples: int = 50  # the VAE's importance samples when scoring (PixelCNNs are exact)
    seed: int = 0  # the sampler's seed
    n_trials: int | None = None  # stop after this many trials in all (None: when the budget is spent)

    def check(self) -> None:
        for key in ("budget_minutes", "trial_minutes"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be > 0, got {getattr(self, key)}")
        for key in ("rungs", "val_groups", "shots", "queries", "max_tasks", "iw_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"search setting {key} must be at least 1, got {getattr(self, key)}")


# -- the search space -------------------------------------------------------------------------------------
# Every value a trial may take; depth and layers are integer ranges drawn by suggest_int.
CHOICES: dict[str, list[Any]] = {
    "family": ["vae", "pixelcnn"], "vae.channels": [16, 32, 48, 64], "vae.depth": [0, 1, 2], "vae.kernel": [3, 5],
    "vae.latent_dim": [8, 16, 32, 64], "vae.hidden": [128, 256, 512],
    "vae.attention": ["none", "encoder", "decoder", "both"], "pixelcnn.channels": [16, 32, 48],
    "pixelcnn.layers": list(range(2, 9)), "pixelcnn.kernel": [3, 5, 7], "pixelcnn.attention_every": [0, 1, 2, 3],
    "context_dim": [32, 64, 128], "memory_dim": [32, 64]}


def _range(key: str) -> tuple[int, int]:
    return min(CHOICES[key]), max(CHOICES[key])


def suggest_architecture(trial: Any, base: Config) -> dict[str, Any]:
    """The `generator` and `learner` sections of one architecture drawn by an Optuna trial."""
    family = trial.suggest_categorical("family", CHOICES["family"])
    if family == "vae":
        generator = {"name": "vae",
                     "channels": trial.suggest_categorical("vae.channels", CHOICES["vae.channels"]),
                     "depth": trial.suggest_int("vae.depth", *_range("vae.depth")),
                     "kernel": trial.suggest_categorical("vae.kernel", CHOICES["vae.kernel"]),
                     "latent_dim": trial.suggest_categorical("vae.latent_dim", CHOICES["vae.latent_dim"]),
                     "hidden": trial.suggest_categorical("vae.hidden", CHOICES["vae.hidden"])}
        attention = trial.suggest_categorical("vae.attention", CHOICES["vae.attention"])
        if attention != "none":
            generator["attend"] = attention
    else:
        generator = {"name": "pixelcnn",
                     "channels": trial.suggest_categorical("pixelcnn.channels", CHOICES["pixelcnn.channels"]),
                     "layers": trial.suggest_int("pixelcnn.layers", *_range("pixelcnn.layers")),
                     "kernel": trial.suggest_categorical("pixelcnn.kernel", CHOICES["pixelcnn.kernel"])}
        # attention over the support in every n-th layer; 0: none
        every = trial.suggest_categorical("pixelcnn.attention_every", CHOICES["pixelcnn.attention_every"])
        attention = "none" if every == 0 else "layers"
        if every:
            generator["attn_every"] = every
    if base.generator.name == family:  # keep the preset's other settings of this family (kl_weight, ...)
        generator = {**base.generator.model_dump(), **generator}
    if attention == "none":
        learner = {"name": "context",
                   "context_dim": trial.suggest_categorical("context_dim", CHOICES["context_dim"])}
        if base.learner.name == "context":  # keep the preset's other set-encoder settings (kl_weight, ...)
            learner = {**base.learner.model_dump(), **learner}
    else:
        learner = {"name": "attention", "memory_dim": trial.suggest_categorical("memory_dim", CHOICES["memory_dim"])}
    return {"generator": generator, "learner": learner}


def base_params(config: Config) -> dict[str, Any] | None:
    """The trial parameters of `config`'s own architecture, or None if the search space does not hold it."""
    g, learner = config.generator, config.learner
    if learner.name not in ("context", "attention") or g.name not in ("vae", "pixelcnn"):
        return None
    attention = learner.name == "attention"
    if g.name == "vae":
        params = {"family": "vae", "vae.channels": g.channels, "vae.depth": g.depth, "vae.kernel": g.kernel,
                  "vae.latent_dim": g.latent_dim, "vae.hidden": g.hidden,
                  "vae.attention": g.attend if attention else "none"}
    else:
        params = {"family": "pixelcnn", "pixelcnn.channels": g.channels, "pixelcnn.layers": g.layers,
                  "pixelcnn.kernel": g.kernel, "pixelcnn.attention_every": g.attn_every if attention else 0}
    params.update({"memory_dim": learner.memory_dim} if attention else {"context_dim": learner.context_dim})
    return params if all(v in CHOICES[k] for k, v in params.items()) else None


def trial_config(base: Config, architecture: dict[str, Any]) -> Config:
    """`base` with the architecture's generator and learner; its data, split, train and eval sections unchanged."""
    raw = base.to_dict()
    raw.update(architecture)
    return from_dict(raw, source="search trial")


# -- the data a search may touch -------------------------------------------------------------------------
def search_splits(config: Config, val_groups: int, data_dir: str | None = None) -> tuple[Splits, list[str]]:
    """(splits of the background groups only, the test groups left out). `held_out` is the `val_groups` groups
    that score trials, drawn by split.seed; `background` (rotated/mirrored as configured) trains them. The
    test groups are dropped before anything else sees the data."""
    if config.data.source not in SOURCES:
        raise ConfigError(f"metagen search covers image sources ({', '.join(SOURCES)}); data.source is "
                          f"'{config.data.source}'")
    concepts = load_concepts(config.data, data_dir)
    test_groups = resolve_test_groups(concepts, config.split.test_groups, config.split.seed)
    background = concepts.in_groups(set(concepts.group_names) - set(test_groups))
    del concepts
    if val_groups >= len(background.group_names):
        raise DataError(f"cannot hold out {val_groups} of the {len(background.group_names)} background groups to "
                        f"score the search; lower --val-groups below {len(background.group_names)}")
    split_cfg = SplitConfig(seed=config.split.seed, test_groups=val_groups, val_fraction=0.0)
    return load_splits(config.data, split_cfg, data_dir, concepts=background), test_groups


def meta_validation_tasks(splits: Splits, settings: SearchSettings) -> Tasks:
    return fixed_tasks(splits.held_out, settings.shots, settings.queries, seed=0, max_tasks=settings.max_tasks)


# -- one trial --------------------------------------------------------------------------------------------
def run_trial(config: Config, splits: Splits, tasks: Tasks, settings: SearchSettings,
              report: Any = None) -> tuple[float, dict[str, Any]]:
    """Meta-train `config` for `settings.trial_minutes` of CPU time and score it after each rung: (final NLL,
    facts). CPU time, not wall-clock time, so a trial's share does not depend on what else the machine runs.
    `report(value, rung, facts)` is called after each rung and may raise to stop the trial (the pruner does)."""
    cpu0 = time.process_time()
    torch.manual_seed(config.train.seed)
    learner = build_learner(config, splits.background.example_shape)
    train_cfg = config.model_copy(deep=True)
    train_cfg.train.val_every, train_cfg.train.patience = 0, 0
    trainer = Trainer(train_cfg, learner, EpisodeSampler(splits.background, seed=config.train.seed), progress=False)
    facts: dict[str, Any] = {PARAM_COUNT: sum(p.numel() for p in learner.parameters())}
    value = math.inf
    for rung in range(settings.rungs):
        rung_end = time.process_time() + 60 * settings.trial_minutes / settings.rungs
        while time.process_time() < rung_end:  # a few steps at a time until the rung's CPU time is used
            trainer.config.train.steps = trainer.step + CHUNK_STEPS
            trainer.fit()
        learner.eval()
        with torch.no_grad():
            value = nll_curve(learner, tasks, [settings.shots], settings.iw_samples)[settings.shots]["nll"]
        learner.train()
        facts["steps"] = trainer.step
        facts["cpu_s"] = time.process_time() - cpu0
        if value is None or not math.isfinite(value):
            raise TrainingDiverged(f"meta-validation NLL is {value} after {trainer.step} steps")
        if report is not None:
            report(value, rung, facts)
    return value, facts


# -- the study --------------------------------------------------------------------------------------------
def _optuna() -> Any:
    try:
        import optuna
        import tomli_w  # noqa: F401  (writes the best preset)
    except ImportError:
        raise MetagenError("architecture search needs Optuna: pip install 'metagen[search]'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a stopped trial is reported by the search, not by a traceback
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
    return optuna


def _retry_callback(optuna: Any) -> Any:
    # Optuna 5 renamed RetryFailedTrialCallback to RetryHeartbeatStaleTrialCallback
    storages = optuna.storages
    return getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback


def _storage(optuna: Any, out: Path) -> Any:
    # The heartbeat marks a trial whose process died (killed, not interrupted) as failed; the callback queues
    # it again. Optuna 4.9 renamed the callback's keyword.
    import inspect

    retry = _retry_callback(optuna)(max_retry=1)
    keyword = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
               in inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")
    return optuna.storages.RDBStorage(f"sqlite:///{(out / STUDY_FILE).resolve()}", heartbeat_interval=30,
                                      grace_period=90, **{keyword: retry})


def _spent_seconds(study: Any) -> float:
    """CPU seconds of the finished trials: what each recorded at its last rung. A trial that completed or was
    pruned without that record counts its wall-clock time; a failed one (interrupted, or its process killed:
    its wall-clock time may include the time it lay dead) counts what it recorded, if anything."""
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        if t.datetime_complete is None or t.datetime_start is None:
            continue
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        total += t.user_attrs.get("cpu_s", 0.0 if t.state.name == "FAIL" else wall)
    return total


def _requeue_interrupted(optuna: Any, study: Any) -> int:
    """Queue again, once, every trial that an interruption or crash left failed; returns how many."""
    trials = study.get_trials(deepcopy=False)
    retried = ({t.user_attrs.get("retry_of") for t in trials}
               | {_retry_callback(optuna).retried_trial_number(t) for t in trials})
    n = 0
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and t.number not in retried and "retry_of" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            n += 1
    return n


def search(config: Config, out: str | Path, settings: SearchSettings, resume: bool = False,
           data_dir: str | None = None, source: str = "config", progress: bool = True) -> dict[str, Any]:
    """Run (or continue) the search; returns the summary also written to `out`/search.json."""
    settings.check()
    optuna = _optuna()
    out = Path(out)
    record = {"base": config.to_dict(), "settings": {k: v for k, v in asdict(settings).items()
                                                      if k not in ("budget_minutes", "n_trials")}}
    if (out / STUDY_FILE).exists() and not resume:
        raise ConfigError(f"'{out}' already holds a search; pass --resume to continue it or choose a new --out")
    if resume:
        if not (out / STUDY_FILE).exists():
            raise ConfigError(f"nothing to resume: no {STUDY_FILE} in '{out}'; drop --resume to start a search")
        try:
            old = json.loads((out / SETTINGS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot resume '{out}': its {SETTINGS_FILE} is unreadable ({e}); start a new "
                              "--out") from None
        for key in ("base", "settings"):
            if old[key] != record[key]:
                a, b = old[key], record[key]
                diff = next(k for k in {**a, **b} if a.get(k) != b.get(k))
                raise ConfigError(f"'{out}' searched with a different {'config' if key == 'base' else 'setting'} "
                                  f"({diff}); resume with the original one or use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    splits, test_groups = search_splits(config, settings.val_groups, data_dir)
    tasks = meta_validation_tasks(splits, settings)
    record.update(source=source, test_groups=test_groups, val_groups=splits.test_groups,
                  train_groups=splits.background.group_names)
    atomic_write_text(out / SETTINGS_FILE, json.dumps({**record, "summary": None}, indent=2) + "\n")

    storage = _storage(optuna, out)
    # A resumed study's sampler is seeded past the trials it holds: the same seed would propose the same first
    # architectures again.
    done = len(storage.get_all_trials(storage.get_study_id_from_name("metagen"))) if resume else 0
    study = optuna.create_study(study_name="metagen", storage=storage, direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS,
                                                                   seed=settings.seed + 7919 * done),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    requeued = _requeue_interrupted(optuna, study) if resume else 0
    hand_made = base_params(config)
    if not study.trials and hand_made is not None:  # the first trial is the config's own architecture
        study.enqueue_trial(hand_made, user_attrs={"hand_made": True})
    if progress:
        spent = _spent_seconds(study) / 60
        print(f"search: {len(splits.background)} concepts of {len(splits.background.group_names)} groups train trials, "
              f"{len(tasks)} tasks of {', '.join(splits.test_groups)} score them ({settings.shots}-shot NLL); "
              f"test groups {', '.join(test_groups)} are never read"
              + (f"; resumed after {len(study.trials)} trials, {spent:.1f} min" if resume else "")
              + (f", {requeued} interrupted trial(s) queued again" if requeued else ""))

    def objective(trial: Any) -> float:
        architecture = suggest_architecture(trial, config)
        cfg = trial_config(config, architecture)
        trial.set_user_attr("architecture", architecture)

        def report(value: float, rung: int, facts: dict[str, Any]) -> None:
            for k, v in facts.items():  # kept if the trial is pruned: the budget counts its CPU time
                trial.set_user_attr(k, v)
            trial.report(value, rung)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            value, facts = run_trial(cfg, splits, tasks, settings, report)
        except TrainingDiverged as e:
            trial.set_user_attr("diverged", str(e))
            raise optuna.TrialPruned() from None
        for k, v in facts.items():
            trial.set_user_attr(k, v)
        return value

    def after_trial(study: Any, trial: Any) -> None:
        _write_results(study, out, config, record, settings)
        if progress:
            value = "" if trial.value is None else f" {trial.value:.2f} nats"
            best = _best(study)
            best_txt = f"; best {best.value:.2f} (trial {best.number})" if best is not None else ""
            print(f"  trial {trial.number:3d} {trial.state.name.lower():8s}{value}  {_describe(trial.params)}"
                  f"{best_txt}; {_spent_seconds(study) / 60:.1f}/{settings.budget_minutes:g} min", flush=True)

    previous = _interrupt_on_sigterm()
    try:
        _optimize(study, objective, after_trial, settings, out, config, record)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary = _write_results(study, out, config, record, settings)
    if summary["best"] is None:
        raise MetagenError(f"no trial finished within the budget; raise --budget-minutes (now "
                           f"{settings.budget_minutes:g}) or lower --trial-minutes")
    return summary


def _interrupt_on_sigterm() -> Any:
    """Make SIGTERM (kill, a batch system's stop) end the search like Ctrl+C, so the trial is recorded as
    interrupted and rerun on --resume. Returns the previous handler (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _optimize(study: Any, objective: Any, after_trial: Any, settings: SearchSettings, out: Path, config: Config,
              record: dict[str, Any]) -> None:
    """Trials one at a time until the CPU budget (or the trial count) is spent."""
    while True:
        left = 60 * settings.budget_minutes - _spent_seconds(study)
        n_left = None if settings.n_trials is None else settings.n_trials - len(
            [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
        if left <= 0 or (n_left is not None and n_left <= 0):
            break
        try:
            study.optimize(objective, n_trials=1, timeout=None, callbacks=[after_trial], catch=())
        except (KeyboardInterrupt, Interrupted):  # Interrupted: the trainer turned a Ctrl+C into its own error
            _write_results(study, out, config, record, settings)
            raise Interrupted(f"search interrupted after {len(study.trials)} trials; the best so far is in "
                              f"'{out / BEST_FILE}'; continue with --resume") from None


def _best(study: Any) -> Any:
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None and t.state.name == "COMPLETE"]
    return min(done, key=lambda t: t.value) if done else None


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _write_results(study: Any, out: Path, config: Config, record: dict[str, Any],
                   settings: SearchSettings) -> dict[str, Any]:
    """trials.csv, search.json and (once a trial completed) best.toml; returns the summary."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete and t.datetime_start else None)
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({"trial": t.number, "hand_made": bool(t.user_attrs.get("hand_made")),
                     "state": t.state.name.lower(), "nll": t.value, "last_rung_nll": last,
                     "rungs": len(t.intermediate_values), "seconds": seconds, "steps": t.user_attrs.get("steps"),
                     PARAM_COUNT: t.user_attrs.get(PARAM_COUNT), "params": json.dumps(t.params)})
    with (out / (TRIALS_FILE + ".tmp")).open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    (out / (TRIALS_FILE + ".tmp")).replace(out / TRIALS_FILE)
    best = _best(study)
    summary: dict[str, Any] = {"trials": len(trials), "minutes": _spent_seconds(study) / 60,
                               "states": {s: sum(r["state"] == s for r in rows) for s in {r["state"] for r in rows}},
                               "hand_made": next((r for r in rows if r["hand_made"]), None), "best": None}
    if best is not None:
        architecture = best.user_attrs["architecture"]
        summary["best"] = {"trial": best.number, "nll": best.value, "params": best.params,
                           "architecture": architecture, "steps": best.user_attrs.get("steps"),
                           PARAM_COUNT: best.user_attrs.get(PARAM_COUNT), "preset": str(out / BEST_FILE)}
        write_preset(trial_config(config, architecture), out / BEST_FILE, header=[
            f"Found by `metagen search` ({record['source']}): trial {best.number} of {len(trials)}, "
            f"{summary['minutes']:.0f} min of trials.",
            f"Meta-validation: {settings.shots}-shot NLL {best.value:.2f} nats/image on the held-out background "
            f"group(s) {', '.join(record['val_groups'])}",
            f"after {settings.trial_minutes:g} min of meta-training ({best.user_attrs.get('steps')} steps); "
            f"the test groups were never read.",
            "Train it: metagen train --config THIS_FILE --out runs/NAME"])
    atomic_write_text(out / SETTINGS_FILE, json.dumps({**record, "summary": summary}, indent=2) + "\n")
    return summary


def write_preset(config: Config, path: Path, header: list[str] | None = None) -> Path:
    """`config` as a TOML preset that `metagen train --config` reads back to the same config."""
    import tomli_w

    def drop_none(d: dict[str, Any]) -> dict[str, Any]:  # TOML has no null: a None is the key's default
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    text = "".join(f"# {line}\n" for line in header or []) + tomli_w.dumps(drop_none(config.to_dict()))
    atomic_write_text(path, text)
    return path
