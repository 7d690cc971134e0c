"""Apply a font model to a user's glyphs: `metagen font` (draw characters in the style of a few glyphs) and
`metagen stylize` (draw one content glyph in the style of a few others).

A user's glyph image has no baseline or em square, so it is placed where the reference face (DejaVu Sans;
Droid Sans Fallback for a model of the CJK track) puts the same character: the ink is scaled to the height
of the reference glyph's ink, bottom-aligned with it and centred on it. An image of exactly the model's size
is taken as it is (a glyph the fonts data rendered, or one `metagen font --each` wrote). Content comes from
the reference face, so `--chars` may name any character it draws, also outside the training character set.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metagen.data.fonts import LATIN, reference_path, render_face, track_of
from metagen.data.images import SUPERSAMPLE, THRESHOLD, read_coverage
from metagen.errors import DataError
from metagen.meta.base import MetaLearner


def reference_glyphs(chars: str, size: int, scripts: list[str] | tuple[str, ...] = LATIN.scripts,
                     dirs: list[str] | None = None) -> torch.Tensor:
    """The reference face's glyphs of `chars` (for the track of `scripts`, its faces under `dirs`), uint8
    [N, size, size]; a character it cannot draw is an error."""
    from fontTools.ttLib import TTFont

    track = track_of(scripts)
    path = reference_path(track, dirs)
    cmap = TTFont(path, lazy=True).getBestCmap()
    missing = [c for c in chars if ord(c) not in cmap]
    if missing:
        raise DataError(f"the reference face ({path.stem}) has no glyph for {''.join(missing)!r}, so there is no "
                        "content to draw; leave those characters out")
    return torch.from_numpy(render_face(path, chars, size, track))


def place_like(coverage: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """A user's glyph (coverage [h, w]) placed in the reference glyph's box (ref [H, H] in {0, 1}): uint8 [H, H]."""
    size = ref.shape[-1]
    if coverage.shape == (size, size):
        return (coverage > THRESHOLD).astype(np.uint8)
    ys, xs = np.nonzero(coverage > 0.1)
    rys, rxs = np.nonzero(ref)
    if len(ys) == 0:
        return np.zeros((size, size), np.uint8)
    crop = coverage[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    big = size * SUPERSAMPLE
    if len(rys):
        height = (rys.max() - rys.min() + 1) * SUPERSAMPLE
        bottom, centre = (rys.max() + 1) * SUPERSAMPLE, (rxs.min() + rxs.max() + 1) / 2 * SUPERSAMPLE
    else:  # a blank reference (a space): the cap-height box
        height, bottom, centre = round(0.42 * big), round(0.70 * big), big / 2
    scale = height / crop.shape[0]
    nh, nw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    if nw > big:  # wider than the canvas: fit the width instead
        nh, nw = max(1, round(nh * big / nw)), big
    resized = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.BILINEAR))
    canvas = np.zeros((big, big), np.float32)
    top, left = max(0, bottom - nh), int(min(max(0, round(centre - nw / 2)), big - nw))
    h = min(nh, big - top)
    canvas[top : top + h, left : left + nw] = resized[:h]
    small = np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BOX))
    return (small > THRESHOLD).astype(np.uint8)


def chars_of_files(paths: list[str], given: str | None, flag: str) -> str:
    """The character each glyph file shows: `given` (one per file), else each file's name ("A.png", "U+0416.png")."""
    if given is not None:
        if len(given) != len(paths):
            raise DataError(f"{flag} names {len(given)} characters for {len(paths)} files; give one per file")
        return given
    chars = ""
    for p in paths:
        stem = Path(p).stem
        if re.fullmatch(r"U\+[0-9A-Fa-f]{4,6}", stem):  # as `metagen font --each` names them
            stem = chr(int(stem[2:], 16))
        if len(stem) != 1:
            raise DataError(f"cannot tell which character '{p}' shows; name the file after it (A.png) or give "
                            f"{flag} with one character per file")
        chars += stem
    return chars


def read_glyphs(paths: list[str], chars: str, size: int, scripts: list[str] | tuple[str, ...] = LATIN.scripts,
                dirs: list[str] | None = None) -> torch.Tensor:
    """Glyph files of `chars` -> glyph pairs float [K, 2, size, size] (glyph, reference glyph)."""
    if not paths:
        raise DataError("no glyph images given; pass at least one with --support/--style")
    refs = reference_glyphs(chars, size, scripts, dirs)
    pairs = []
    for p, ref in zip(paths, refs, strict=True):
        glyph = place_like(read_coverage(p), ref.numpy())
        if glyph.sum() == 0:
            raise DataError(f"image '{p}' has no ink after binarization; use dark strokes on a light background")
        pairs.append(torch.stack([torch.from_numpy(glyph), ref]))
    return torch.stack(pairs).float()


def check_font_model(learner: MetaLearner, source: str, path: str) -> None:
    if source != "fonts":
        raise DataError(f"'{path}' is a model of {source}; `metagen font` and `metagen stylize` need a font model "
                        "(data.source = 'fonts', e.g. `metagen train --config fonts`)")


@torch.no_grad()
def draw(learner: MetaLearner, support: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Glyph probabilities [N, H, W] of the content glyphs [N, H, W] in the style of the support pairs."""
    with torch.enable_grad():  # gradient learners adapt here
        adapted = learner.adapt(support)
    return adapted.sample(len(content), content=content[:, None].float())[:, 0].clamp(0, 1)


def sheet(rows: list[torch.Tensor], per_row: int = 16) -> Image.Image:
    """Rows of glyphs ([N_i, H, W] each, wrapped at `per_row`) as one dark-on-white image, rows apart by a gap."""
    H = rows[0].shape[-1]
    lines: list[torch.Tensor] = []
    for r in rows:
        for i in range(0, max(len(r), 1), per_row):
            chunk = r[i : i + per_row]
            line = torch.zeros(H, per_row * H)
            for j, g in enumerate(chunk):
                line[:, j * H : (j + 1) * H] = g.float()
            lines.append(line)
        lines.append(torch.full((H // 4, per_row * H), -1.0))  # a gap between rows (drawn light grey)
    grid = torch.cat(lines[:-1])
    img = np.where(grid.numpy() < 0, 0.9, 1 - grid.numpy())
    pil = Image.fromarray((img * 255).astype(np.uint8))
    return pil.resize((pil.width * 2, pil.height * 2), Image.Resampling.NEAREST)


def save_each(glyphs: torch.Tensor, chars: str, folder: Path) -> list[Path]:
    """One PNG per glyph, named after its code point (U+0041.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for g, c in zip(glyphs, chars, strict=True):
        path = folder / f"U+{ord(c):04X}.png"
        Image.fromarray(((1 - g.numpy()) * 255).astype(np.uint8)).save(path)
        out.append(path)
    return out
