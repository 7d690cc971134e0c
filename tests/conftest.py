from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from metagen.config import Config, from_dict

REAL_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = {
    "generator": {"name": "vae", "latent_dim": 4, "channels": 4, "hidden": 16},
    "train": {"steps": 4, "meta_batch": 4, "shots": [1, 3], "queries": 2, "log_every": 1, "ckpt_every": 2},
    "eval": {"shots": [1, 2], "queries": 2, "iw_samples": 4, "max_tasks": 3},
}


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Glyph renders go to a per-session cache, so tests never depend on (or touch) ~/.cache."""
    os.environ["METAGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


def tiny_config(**sections: dict) -> Config:
    """A small, fast config; `sections` are merged over it (learner={"name": "maml"}, ...)."""
    from metagen.config import merge

    return from_dict(merge(TINY, sections))


def _stroke_png(rng: np.random.Generator, size: int = 105) -> Image.Image:
    """A random Omniglot-like drawing: black strokes on a white canvas, mode '1' like the real files."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    pts = rng.integers(15, size - 15, size=(4, 2))
    draw.line([tuple(p) for p in pts], fill=0, width=4)
    return img.convert("1")


def make_omniglot(root: Path, archives: dict[str, dict[str, int]], drawers: int = 20, zipped: bool = True,
                  seed: int = 0) -> Path:
    """Write fake Omniglot sources: {"images_background": {"Alpha": n_characters, ...}, ...}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for source, alphabets in archives.items():
        folder = root / source
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                char_dir = folder / alphabet / f"character{c:02d}"
                char_dir.mkdir(parents=True, exist_ok=True)
                for d in range(1, drawers + 1):
                    _stroke_png(rng).save(char_dir / f"{c:04d}_{d:02d}.png")
        if zipped:
            with zipfile.ZipFile(root / f"{source}.zip", "w") as zf:
                for f in sorted(folder.rglob("*")):
                    zf.write(f, f.relative_to(root))
            for f in sorted(folder.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            folder.rmdir()
    return root


@pytest.fixture
def tiny():
    """Factory for small, fast configs: tiny(learner={"name": "maml"}) merges sections over TINY."""
    return tiny_config


@pytest.fixture
def omniglot_factory():
    return make_omniglot


@pytest.fixture
def fake_omniglot(tmp_path: Path) -> Path:
    """Two overlapping 'background small' archives (Greek in both) and one evaluation archive."""
    return make_omniglot(tmp_path / "data", {
        "images_background_small1": {"Greek": 3, "Korean": 2},
        "images_background_small2": {"Greek": 3, "Latin": 2},
        "images_evaluation": {"Tifinagh": 2},
    })


@pytest.fixture
def binary_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((6, 1, 28, 28), 0.2), generator=g)


SERVE_TINY = ["--set", "generator.latent_dim=4", "--set", "generator.channels=4", "--set", "generator.hidden=16",
              "--set", "learner.context_dim=4", "--set", "learner.hidden=16", "--set", "learner.channels=4",
              "--set", "train.meta_batch=4", "--quiet"]


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs/ folder for `metagen serve`: demo/spatial (an image model trained 3 steps), text/lstm (an
    untrained text model) and broken/ (a damaged checkpoint, which the server must leave out)."""
    from metagen.checkpoint import save_checkpoint
    from metagen.cli import main
    from metagen.meta import build_learner

    root = tmp_path_factory.mktemp("serve") / "runs"
    assert main(["train", "--config", "glyphs", "--out", str(root / "demo" / "spatial"), "--steps", "3",
                 *SERVE_TINY]) == 0
    cfg = from_dict({"data": {"source": "fortunes", "vocab": "abcdefgh ", "max_len": 24},
                     "generator": {"name": "lstm", "embed_dim": 8, "hidden": 16, "vocab_size": 12},
                     "learner": {"name": "context", "context_dim": 4, "hidden": 16}})
    save_checkpoint(root / "text" / "lstm" / "checkpoint.safetensors", cfg, 0, build_learner(cfg, (24,)))
    (root / "broken").mkdir()
    (root / "broken" / "checkpoint.safetensors").write_bytes(b"junk")
    return root
