"""The one training loop: meta-batches, Adam, gradient clipping, NaN guard, logs, checkpoints, resume."""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metagen.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    atomic_write_text,
    load_checkpoint,
    load_model_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from metagen.config import Config
from metagen.data import EpisodeSampler, Splits, Tasks, fixed_tasks, load_splits
from metagen.distributed import Group, close_group, device_for, init_group
from metagen.errors import CheckpointError, ConfigError, MetagenError, TrainingDiverged
from metagen.meta.base import MetaLearner, build_learner

# Config sections a resumed run must share with its checkpoint; `train` and `eval` may change.
MODEL_SECTIONS = ("data", "split", "generator", "learner")
LOG_FIELDS = ["step", "loss", "val_loss", "grad_norm", "shots", "tasks_per_s", "lr", "elapsed_s"]


class Interrupted(MetagenError):
    """Training was stopped by the user after saving a checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MetagenError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MetagenError(f"device '{name}' requested but MPS is not available here; use --device cpu")
    return device


@dataclass
class TrainResult:
    step: int
    loss: float
    seconds: float
    checkpoint: Path | None
    best_val: float | None = None


class Trainer:
    """Meta-trains `learner` on tasks from `sampler`; with a `run_dir`, logs and checkpoints there.

    With `val_tasks` and `train.val_every`, the validation loss is measured every `val_every` steps and the
    best weights so far are kept in `best.safetensors`. With a multi-process `group` (torchrun), each process
    takes a shard of every meta-batch and only rank 0 writes (see metagen.distributed).
    """

    def __init__(self, config: Config, learner: MetaLearner, sampler: EpisodeSampler, run_dir: Path | None = None,
                 progress: bool = True, val_tasks: Tasks | None = None, group: Group | None = None) -> None:
        self.config, self.learner, self.sampler, self.val_tasks = config, learner, sampler, val_tasks
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.group = group or Group()
        self.writes = self.run_dir is not None and self.group.is_main
        self.progress = progress and self.group.is_main
        self.device = device_for(self.group, resolve_device(config.train.device))
        self.learner.to(self.device)
        groups = param_groups(learner, config.train.lr, config.train.lr_scale)
        if config.train.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=config.train.lr,
                                                                     betas=config.train.betas)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=config.train.lr)
        self.step = 0
        self.best_val: float | None = None
        self.best_step: int | None = None

    @property
    def checkpoint_file(self) -> Path | None:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def save(self, name: str = CHECKPOINT_NAME) -> None:
        if self.writes:
            save_checkpoint(self.run_dir / name, self.config, self.step, self.learner, self.optimizer,
                            self.sampler.state_dict(), self.best_val, self.best_step)

    def validate(self) -> float:
        """Mean meta-loss over the fixed validation tasks, with fixed noise; training RNG streams are untouched."""
        cfg = self.config.train
        rng = torch.get_rng_state()
        torch.manual_seed(cfg.seed)
        self.learner.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.val_tasks), cfg.meta_batch):
                batch = self.val_tasks.subset(slice(start, start + cfg.meta_batch)).to(self.device)
                total += self.learner.meta_loss(batch).item() * len(batch)
        self.learner.train()
        torch.set_rng_state(rng)
        return total / len(self.val_tasks)

    def restore(self) -> None:
        """Continue from the run folder's checkpoint: weights, optimizer, step and both RNG streams."""
        if self.checkpoint_file is None or not self.checkpoint_file.is_file():
            raise CheckpointError(f"nothing to resume: no {CHECKPOINT_NAME} in '{self.run_dir}'; "
                                  "drop --resume to start a new run")
        try:
            ckpt = load_checkpoint(self.checkpoint_file)
        except CheckpointError as e:
            previous = self.run_dir / PREVIOUS_NAME
            if previous.is_file():
                raise CheckpointError(f"{e}; the checkpoint before it, '{previous}', is kept: copy it over "
                                      f"'{CHECKPOINT_NAME}' to resume from there") from None
            raise
        old, new = ckpt.config.to_dict(), self.config.to_dict()
        for section in MODEL_SECTIONS:
            if old[section] != new[section]:
                a, b = old[section], new[section]
                key = next(k for k in {**a, **b} if a.get(k) != b.get(k))
                raise CheckpointError(
                    f"'{self.checkpoint_file}' was trained with {section}.{key} = {a.get(key)!r}, the config "
                    f"now says {b.get(key)!r}; resume with the original config or use a new --out")
        for key in ("optimizer", "lr_scale"):
            if getattr(ckpt.config.train, key) != getattr(self.config.train, key):
                raise CheckpointError(f"'{self.checkpoint_file}' was trained with train.{key} = "
                                      f"{getattr(ckpt.config.train, key)!r}; resume with the same {key} or use a "
                                      "new --out")
        load_model_state(self.learner, ckpt)
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
            for group in self.optimizer.param_groups:  # a resumed run may lower the learning rate
                group["lr"] = self.config.train.lr * group.get("lr_scale", 1.0)
        if ckpt.torch_rng is not None:
            torch.set_rng_state(ckpt.torch_rng)
        if ckpt.sampler is not None:
            self.sampler.load_state_dict(ckpt.sampler)
        self.step, self.best_val, self.best_step = ckpt.step, ckpt.best_val, ckpt.best_step

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config.train
        if self.run_dir is not None:
            if self.writes:
                remove_stale_temporaries(self.run_dir)  # left by a run killed while writing
            if resume:
                self.restore()
            elif self.checkpoint_file.is_file():
                raise CheckpointError(f"'{self.run_dir}' already holds a checkpoint; pass --resume to continue it "
                                      "or choose a new --out")
            if self.writes:
                atomic_write_text(self.run_dir / "config.json", self.config.to_json() + "\n")
        if not resume and self.step == 0:  # a Trainer may fit again to continue (architecture search does)
            torch.manual_seed(cfg.seed)
        if self.group.world > 1:  # each process its own noise (the checkpoint holds rank 0's stream only)
            torch.manual_seed(cfg.seed + self.group.rank + 7919 * self.step)
        if not self.learner.meta_trained:
            self.save()
            if self.progress:
                print(f"learner '{self.config.learner.name}' has nothing to meta-train (it trains on each support "
                      f"set when adapting); its initialisation is saved in '{self.checkpoint_file}'")
            return TrainResult(self.step, float("nan"), 0.0, self.checkpoint_file)
        logs = _Logs(self.run_dir, self.step) if self.writes else None
        self.learner.train()
        start, last_loss, t0 = self.step, float("nan"), time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.config.learner.name}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            window_loss, window_steps, window_tasks, window_t = 0.0, 0, 0, time.perf_counter()
            val_loss: float | str = ""  # the latest validation loss since the last log row
            while self.step < cfg.steps:
                tasks = self.sampler.sample(cfg.meta_batch, cfg.shots, cfg.queries).to(self.device)
                last_loss, grad_norm = self._optimize(tasks)
                window_loss += last_loss
                window_steps += 1
                window_tasks += len(tasks)
                bar.update(1)
                stop = False
                if self.val_tasks is not None and cfg.val_every and self.step % cfg.val_every == 0:
                    val_loss = self._validate_and_keep_best(logs)
                    stop = bool(cfg.patience) and self.step - self.best_step >= cfg.patience * cfg.val_every
                timed_out = cfg.max_minutes is not None and time.perf_counter() - t0 >= 60 * cfg.max_minutes
                stop = stop or timed_out
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                    rate = window_tasks / max(time.perf_counter() - window_t, 1e-9)
                    row = {"step": self.step, "loss": window_loss / window_steps, "val_loss": val_loss,
                           "grad_norm": grad_norm, "shots": tasks.shots, "tasks_per_s": rate,
                           "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
                    best = {} if self.best_val is None else {"best_val": f"{self.best_val:.2f}"}
                    bar.set_postfix(loss=f"{row['loss']:.2f}", **best, tasks_s=f"{rate:.0f}")
                    if logs is not None:
                        logs.write(row)
                    window_loss, window_steps, window_tasks, window_t = 0.0, 0, 0, time.perf_counter()
                    val_loss = ""
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or stop:
                    self.save()
                if stop and timed_out:
                    if self.progress:
                        print(f"stopped at step {self.step}: train.max_minutes = {cfg.max_minutes:g} reached")
                    break
                if stop:
                    if self.progress:
                        print(f"early stop at step {self.step}: no better validation loss in {cfg.patience} "
                              f"validations since step {self.best_step}")
                    break
        except KeyboardInterrupt:
            self.save()
            where = f"; checkpoint saved to '{self.checkpoint_file}', continue with --resume" if self.run_dir else ""
            raise Interrupted(f"interrupted at step {self.step}{where}") from None
        finally:
            bar.close()
            if logs is not None:
                logs.close()
        seconds = time.perf_counter() - t0
        if self.progress and self.step > start:
            best = f"; best validation loss {self.best_val:.3f}" if self.best_val is not None else ""
            print(f"trained {self.step - start} steps in {seconds:.0f}s; last loss {last_loss:.3f}{best}")
        return TrainResult(self.step, last_loss, seconds, self.checkpoint_file, self.best_val)

    def _optimize(self, tasks: Tasks) -> tuple[float, float]:
        """One optimizer step on the meta-loss of `tasks`; returns (loss, gradient norm before clipping)."""
        clip = self.config.train.grad_clip if self.config.train.grad_clip > 0 else float("inf")
        shard, weight = self.group.shard(tasks)
        loss = self.learner.meta_loss(shard) * weight  # this process's share of the meta-batch mean
        total = loss.detach().clone()
        self.group.sum_([total])  # the whole meta-batch's loss, the same on every process
        self._guard(total, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.learner.parameters())
        self.group.sum_grads_(params)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
        self._guard(grad_norm, "gradient norm")
        self.optimizer.step()
        self.step += 1
        return total.item(), grad_norm.item()

    def _validate_and_keep_best(self, logs: _Logs | None) -> float:
        val_loss = self.validate()
        if logs is not None:
            logs.tb.add_scalar("val/loss", val_loss, self.step)
        if self.best_val is None or val_loss < self.best_val:
            self.best_val, self.best_step = val_loss, self.step
            self.save(BEST_NAME)
        return val_loss

    def _guard(self, value: torch.Tensor, what: str) -> None:
        """Stop on NaN/inf before the optimizer step, keeping the current (still good) weights."""
        if torch.isfinite(value):
            return
        self.save()
        kept = f"kept the last good weights in '{self.checkpoint_file}'; " if self.writes else ""
        raise TrainingDiverged(f"{what} became {value.item()} at step {self.step}; {kept}lower train.lr "
                               f"(now {self.config.train.lr:g}) or train.grad_clip and rerun with --resume")


class _Logs:
    """CSV and TensorBoard logs of a run folder; both continue where a resumed run left off."""

    def __init__(self, run_dir: Path, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        path = run_dir / "log.csv"
        fresh = not path.exists() or step == 0
        if not fresh:  # a killed run may have logged steps past its checkpoint: they are redone, so dropped
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        self.file = path.open("w" if fresh else "a", newline="")
        self.csv = csv.DictWriter(self.file, LOG_FIELDS)
        if fresh:
            self.csv.writeheader()
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=step if step > 0 else None)

    def write(self, row: dict[str, float]) -> None:
        self.csv.writerow(row)
        self.file.flush()
        for key in ("loss", "grad_norm", "tasks_per_s"):
            self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def param_groups(learner: torch.nn.Module, lr: float, lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """Optimizer groups: one per `lr_scale` pattern (the first matching pattern takes a parameter), plus the
    rest at `lr`. Each group records its `lr_scale`, so a resumed run can reapply it to a new `lr`."""
    groups: dict[str, list[torch.nn.Parameter]] = {p: [] for p in lr_scale}
    rest: list[torch.nn.Parameter] = []
    for name, param in learner.named_parameters():
        match = next((p for p in lr_scale if re.search(p, name)), None)
        (groups[match] if match is not None else rest).append(param)
    unused = [p for p, params in groups.items() if not params]
    if unused:
        example = next(n for n, _ in learner.named_parameters())
        raise ConfigError(f"train.lr_scale pattern '{unused[0]}' matches no parameter of this model; "
                          f"names look like '{example}'")
    out = [{"params": params, "lr": lr * lr_scale[p], "lr_scale": lr_scale[p]} for p, params in groups.items()]
    if rest:
        out.append({"params": rest, "lr": lr, "lr_scale": 1.0})
    return out


def prepare(config: Config, data_dir: str | None = None) -> tuple[Config, Splits, MetaLearner]:
    """Load the data and build the learner; the returned config records the resolved held-out groups (and, for
    text, the vocabulary)."""
    splits = load_splits(config.data, config.split, data_dir)
    config = config.model_copy(deep=True)
    config.split.test_groups = splits.test_groups
    if splits.vocab is not None:  # text: the model's vocabulary is the meta-training concepts' characters
        config.data.vocab = splits.vocab.chars
        config.generator.vocab_size = len(splits.vocab)
    torch.manual_seed(config.train.seed)  # weight initialisation follows the seed
    return config, splits, build_learner(config, splits.background.example_shape)


def train(config: Config, run_dir: str | Path | None, resume: bool = False, data_dir: str | None = None,
          progress: bool = True) -> TrainResult:
    """Meta-train `config` on its background split, writing logs and checkpoints to `run_dir`."""
    config, splits, learner = prepare(config, data_dir)
    learner.fit_data(config, splits, data_dir)
    sampler = EpisodeSampler(splits.background, seed=config.train.seed)
    run = Path(run_dir) if run_dir else None
    group = init_group(config.train.device)
    try:
        return Trainer(config, learner, sampler, run, progress, validation_tasks(config, splits), group).fit(resume)
    finally:
        close_group(group)


def validation_tasks(config: Config, splits: Splits) -> Tasks | None:
    """One fixed task per validation concept, with the middle of the training shot range, or None."""
    if config.train.patience and not config.train.val_every:
        raise ConfigError("train.patience needs validation: set train.val_every > 0 (and split.val_fraction > 0)")
    if config.train.val_every == 0:
        return None
    if len(splits.validation) == 0:
        raise ConfigError("train.val_every needs validation concepts: set split.val_fraction > 0 (e.g. 0.1)")
    lo, hi = config.train.shots
    return fixed_tasks(splits.validation, (lo + hi) // 2, config.train.queries, seed=config.split.seed)
