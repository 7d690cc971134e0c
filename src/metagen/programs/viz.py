"""Pictures of programs: an image with each inferred stroke drawn over it in its own colour."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from metagen.programs.program import CANVAS, curve

COLOURS = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (166, 86, 40)]


def strokes_over(image: torch.Tensor, cps: torch.Tensor, presence: torch.Tensor, scale: int = 4) -> Image.Image:
    """RGB picture: `image` [1, H, W] (ink in light grey) with each present stroke of cps [S, M, 2] (canvas
    units) drawn in its own colour, a dot where it starts."""
    H, W = image.shape[-2:]
    ink = image[0].float().clamp(0, 1).numpy()
    base = Image.fromarray((255 - 90 * ink).astype("uint8"), "L").resize((W * scale, H * scale), Image.NEAREST)
    out = base.convert("RGB")
    draw = ImageDraw.Draw(out)
    px = W * scale / CANVAS
    for i, (cp, present) in enumerate(zip(cps, presence, strict=True)):
        if present < 0.5:
            continue
        pts = [(float(x) * px, float(y) * px) for x, y in curve(cp.double(), 32)]
        colour = COLOURS[i % len(COLOURS)]
        draw.line(pts, fill=colour, width=max(1, scale // 2))
        x0, y0 = pts[0]
        draw.ellipse([x0 - scale, y0 - scale, x0 + scale, y0 + scale], fill=colour)
    return out


def row(pictures: list[Image.Image], gap: int = 4) -> Image.Image:
    """Pictures side by side on white."""
    w = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (w, max(p.height for p in pictures)), "white")
    x = 0
    for p in pictures:
        out.paste(p.convert("RGB"), (x, 0))
        x += p.width + gap
    return out


def column(pictures: list[Image.Image], gap: int = 4) -> Image.Image:
    h = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (max(p.width for p in pictures), h), "white")
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height + gap
    return out
