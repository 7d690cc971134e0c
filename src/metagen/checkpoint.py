"""Checkpoints: one safetensors file holding everything needed to sample, evaluate or resume.

Tensors: `model.*` (the learner's state dict), `optim.<param index>.<key>` (optimizer state),
`rng.torch` (the CPU generator state). Metadata (strings): the format tag, the full config as JSON, the
step, the optimizer's param groups and the episode sampler's RNG state. Files are written to a
temporary name in the same folder and renamed over the old one, so a crash never leaves a torn file; the
latest checkpoint's predecessor is kept as `checkpoint.prev.safetensors`, a fallback should the latest be
damaged later (a bad disk, a copy cut short).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metagen.config import Config, from_dict
from metagen.errors import CheckpointError, ConfigError

FORMAT = "metagen-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"  # the latest state of a run: what --resume continues
BEST_NAME = "best.safetensors"  # the weights with the best validation loss, when validation is on
PREVIOUS_NAME = "checkpoint.prev.safetensors"  # the checkpoint before the latest one


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename the temporary file onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (`.<name>.<random>.tmp`); returns them."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def _keep_previous(path: Path) -> None:
    """Hard-link the current `path` as its predecessor (atomic: a temporary link renamed into place)."""
    if not path.is_file():
        return
    tmp = path.parent / f".{PREVIOUS_NAME}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links: no fallback copy, the latest is still atomic
        return
    os.replace(tmp, path.parent / PREVIOUS_NAME)


@dataclass
class Checkpoint:
    config: Config
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    torch_rng: torch.Tensor | None
    sampler: dict[str, Any] | None
    example_shape: tuple[int, ...]
    path: Path
    best_val: float | None = None  # the best validation loss seen so far in the run
    best_step: int | None = None  # the step that reached it


def save_checkpoint(path: Path, config: Config, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    sampler_state: dict[str, Any] | None = None, best_val: float | None = None,
                    best_step: int | None = None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": config.to_json(), "step": str(step),
            "example_shape": json.dumps(list(getattr(model, "example_shape", [])))}
    if optimizer is not None:
        state = optimizer.state_dict()
        for idx, pstate in state["state"].items():
            for key, val in pstate.items():
                if not torch.is_tensor(val):
                    val = torch.tensor(val)
                tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
        meta["optim_groups"] = json.dumps(state["param_groups"])
    tensors["rng.torch"] = torch.get_rng_state()
    if sampler_state is not None:
        meta["sampler"] = json.dumps(sampler_state)
    if best_val is not None:
        meta["best_val"] = repr(best_val)
    if best_step is not None:
        meta["best_step"] = str(best_step)
    try:
        if path.name == CHECKPOINT_NAME:
            _keep_previous(path)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    except (OSError, SafetensorError) as e:
        why = str(e).split("I/O error: ")[-1]  # safetensors wraps the OS message
        then = "; the previous one is untouched: free disk space, then rerun with --resume" if path.is_file() \
            else "; free disk space or choose another --out, then rerun"
        raise CheckpointError(f"could not write checkpoint '{path}' ({why}){then}") from None


def checkpoint_path(path: str | Path, which: Literal["auto", "best", "latest"] = "auto") -> Path:
    """A run folder or a checkpoint file -> the checkpoint file; a folder means its best checkpoint when
    validation picked one, else its latest (`which` = "best" or "latest" picks one)."""
    path = Path(path)
    if which not in ("auto", "best", "latest"):
        raise CheckpointError(f"which must be 'auto', 'best' or 'latest', not {which!r}")
    if path.is_dir():
        best = which != "latest" and ((path / BEST_NAME).is_file() or which == "best")
        path = path / BEST_NAME if best else path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}'; give a run folder or its {CHECKPOINT_NAME}")
    return path


def load_checkpoint(path: str | Path, which: Literal["auto", "best", "latest"] = "auto") -> Checkpoint:
    path = checkpoint_path(path, which)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"'{path}' is not a readable checkpoint ({e}); "
                              "it may be truncated or of another format") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is a safetensors file but not a metagen checkpoint (no '{FORMAT}' tag)")
    try:
        config = from_dict(json.loads(meta["config"]), source=f"{path} (stored config)")
    except ConfigError as e:
        raise CheckpointError(f"checkpoint '{path}' stores a config this metagen cannot read: {e}") from None
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = None
    if "optim_groups" in meta:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        optimizer = {"state": state, "param_groups": json.loads(meta["optim_groups"])}
    sampler = json.loads(meta["sampler"]) if "sampler" in meta else None
    shape = tuple(json.loads(meta.get("example_shape", "[]")))
    best = float(meta["best_val"]) if "best_val" in meta else None
    best_step = int(meta["best_step"]) if "best_step" in meta else None
    return Checkpoint(config, int(meta["step"]), model, optimizer, tensors.get("rng.torch"), sampler, shape, path,
                      best, best_step)


def _step(path: Path) -> str:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("step", "?")
    except (SafetensorError, OSError):  # a damaged latest checkpoint only costs the message its number
        return "?"


def load_model_state(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load weights, turning a key or shape mismatch into a one-line error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.model))
    unexpected = sorted(set(ckpt.model) - set(own))
    sized = set(getattr(model, "data_sized", ()))  # buffers whose shape is the training data's (refine's bank)
    shapes = sorted(k for k in set(own) & set(ckpt.model) - sized if own[k].shape != ckpt.model[k].shape)
    if missing or unexpected or shapes:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"shape mismatch in {shapes[:3]}")
        raise CheckpointError(f"checkpoint '{ckpt.path}' was written by a different model ({what}); "
                              "use the config it was trained with")
    model.load_state_dict(ckpt.model)


def load_learner(path: str | Path, device: torch.device | str = "cpu",
                 which: Literal["auto", "best", "latest"] = "auto", verbose: bool = True) -> tuple[Any, Checkpoint]:
    """Rebuild the learner a checkpoint was trained as, with its weights, in eval mode.

    A run folder means its best checkpoint (lowest validation loss) if it has one, else the latest; `which`
    chooses. With `verbose`, says on stderr which file of a folder holding both it loaded.
    """
    from metagen.meta import build_learner

    ckpt = load_checkpoint(path, which)
    latest = Path(path) / CHECKPOINT_NAME
    # said only when it matters: the run's latest step is not its best one
    if verbose and which == "auto" and ckpt.path.name == BEST_NAME and latest.is_file() and \
            _step(latest) != str(ckpt.step):
        print(f"metagen: loaded {ckpt.path} (step {ckpt.step}, the best validation loss); the latest is "
              f"step {_step(latest)}: load_learner(..., which='latest') or pass the file", file=sys.stderr)
    learner = build_learner(ckpt.config, ckpt.example_shape)
    load_model_state(learner, ckpt)
    return learner.to(device).eval(), ckpt
