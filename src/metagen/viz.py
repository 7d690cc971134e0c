"""Image grids as PNG: support sets next to generated samples. Images are [C, H, W] in [0, 1], 1 = ink."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PAD = 2  # pixels between cells
GAP = 6  # pixels of a divider between the support and the samples


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] (1 = ink) -> uint8 [H, W], black ink on white paper."""
    return (255 * (1 - img.detach().float().clamp(0, 1).mean(0))).round().byte().cpu().numpy()


def grid(rows: list[list[torch.Tensor]], split_col: int | None = None, split_row: int | None = None,
         scale: int = 2) -> Image.Image:
    """Cells laid out row by row; a grey divider before column `split_col` and/or before row `split_row`."""
    H, W = next(c for row in rows for c in row).shape[-2:]
    n_cols = max(len(r) for r in rows)
    col_gap = GAP if split_col else 0
    row_gap = GAP if split_row else 0
    canvas = np.full((len(rows) * (H + PAD) + PAD + row_gap, n_cols * (W + PAD) + PAD + col_gap), 255, np.uint8)
    if split_col:
        x = PAD + split_col * (W + PAD) + col_gap // 2
        canvas[:, x - 1 : x + 1] = 160
    if split_row:
        y = PAD + split_row * (H + PAD) + row_gap // 2
        canvas[y - 1 : y + 1, :] = 160
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            y = PAD + r * (H + PAD) + (row_gap if split_row and r >= split_row else 0)
            x = PAD + c * (W + PAD) + (col_gap if split_col and c >= split_col else 0)
            canvas[y : y + H, x : x + W] = to_uint8(cell)
    img = Image.fromarray(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def task_grid(support: torch.Tensor, samples: torch.Tensor, scale: int = 2) -> Image.Image:
    """One row per task, its support examples then its samples: support [R, K, ...], samples [R, N, ...]."""
    rows = [[*s, *x] for s, x in zip(support, samples, strict=True)]
    return grid(rows, split_col=support.shape[1], scale=scale)


def sample_grid(samples: torch.Tensor, scale: int = 2) -> Image.Image:
    """samples [R, N, ...] -> one row per concept."""
    return grid([list(x) for x in samples], scale=scale)


def adapt_grid(support: torch.Tensor, samples: torch.Tensor, per_row: int = 10, scale: int = 2) -> Image.Image:
    """The support set [K, ...] on the first row, the samples [N, ...] below it, `per_row` a row."""
    cols = max(per_row, len(support))
    rows = [list(support)] + [list(samples[i : i + cols]) for i in range(0, len(samples), cols)]
    return grid(rows, split_row=1, scale=scale)


def save_png(img: Image.Image, path: str | Path) -> Path:
    from metagen.checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path


def save_each(samples: torch.Tensor, folder: str | Path) -> list[Path]:
    """Every sample [N, C, H, W] as its own PNG, sample_000.png, ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, math.ceil(math.log10(len(samples) + 1)))
    paths = []
    for i, s in enumerate(samples):
        paths.append(folder / f"sample_{i:0{width}d}.png")
        Image.fromarray(to_uint8(s)).save(paths[-1])
    return paths
