"""The run folders a server may load: found under allowed roots, named by id, never opened by a user's path."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from metagen.checkpoint import BEST_NAME, CHECKPOINT_NAME, FORMAT, Checkpoint, load_learner
from metagen.config import from_dict
from metagen.errors import MetagenError

MAX_DEPTH = 4  # run folders are looked for this many levels below a root
SLOW_GENERATORS = ("pixelcnn", "diffusion")  # sampled in chunks so the page can show progress


class UnknownRun(MetagenError):
    """A run id that is not one of the served run folders."""


@dataclass(frozen=True)
class RunInfo:
    id: str  # "<root name>/<path below the root>", e.g. "runs/demo/spatial"
    path: Path
    kind: str  # "image", "text" or "tunes"
    learner: str
    generator: str
    image_size: int | None
    step: int

    def public(self) -> dict[str, Any]:
        """What a client may see: no absolute paths."""
        return {"id": self.id, "kind": self.kind, "learner": self.learner, "generator": self.generator,
                "image_size": self.image_size, "step": self.step,
                "slow": self.generator in SLOW_GENERATORS or self.learner in ("finetune", "scratch", "maml",
                                                                               "fomaml", "metasgd", "reptile")}


class RunRegistry:
    """Discovers run folders under `roots` and keeps the `cache_size` most recently used learners loaded."""

    def __init__(self, roots: list[Path], cache_size: int = 4) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Any, Checkpoint]] = OrderedDict()
        self._headers: dict[tuple[str, int, int], RunInfo | None] = {}
        self._lock = threading.Lock()

    def scan(self) -> dict[str, RunInfo]:
        """Every readable run folder below the roots, by id; unreadable ones are left out. Cheap to repeat:
        a checkpoint's header is read again only when the file changes."""
        found: dict[str, RunInfo] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for ckpt_file in sorted(root.rglob(CHECKPOINT_NAME)):
                folder = ckpt_file.parent
                rel = folder.relative_to(root)
                if len(rel.parts) > MAX_DEPTH or not folder.resolve().is_relative_to(root):
                    continue  # too deep, or a link leading outside the root
                run_id = "/".join((root.name, *rel.parts))
                info = self._describe(run_id, ckpt_file)
                if info is not None:
                    found[run_id] = info
        return found

    def _describe(self, run_id: str, ckpt_file: Path) -> RunInfo | None:
        """The run's config and step from the checkpoint's header (no tensors loaded), or None if unreadable."""
        try:
            stat = ckpt_file.stat()
        except OSError:
            return None
        key = (str(ckpt_file), stat.st_mtime_ns, stat.st_size)
        if key in self._headers:
            return self._headers[key]
        info = None
        try:
            with safe_open(str(ckpt_file), "pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") == FORMAT:
                cfg = from_dict(json.loads(meta["config"]), source=str(ckpt_file))
                text = cfg.data.is_text
                kind = "tunes" if cfg.data.source == "tunes" else "text" if text else "image"
                info = RunInfo(run_id, ckpt_file.parent, kind, cfg.learner.name,
                               cfg.generator.name, None if text else cfg.data.image_size, int(meta["step"]))
        except (SafetensorError, OSError, ValueError, KeyError, MetagenError):
            info = None
        with self._lock:
            self._headers[key] = info
        return info

    def get(self, run_id: str) -> RunInfo:
        runs = self.scan()
        if run_id not in runs:
            raise UnknownRun(f"unknown run '{run_id[:200]}'; choose one of GET /api/runs")
        return runs[run_id]

    def learner(self, info: RunInfo) -> tuple[Any, Checkpoint]:
        """The run's learner (best weights if validation kept some), loaded once and cached."""
        key = f"{info.id}@{(info.path / BEST_NAME).is_file()}:{info.step}"
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loaded = load_learner(info.path, verbose=False)
        with self._lock:
            self._cache[key] = loaded
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return loaded
