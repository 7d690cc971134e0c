"""A differentiable rasteriser written with torch ops: strokes (spline control points) -> ink probabilities.

Each stroke's spline is sampled into a polyline; a pixel's ink is a sigmoid of how far inside the pen it lies,
(pen / 2 - d) / blur, where d is its distance to the nearest polyline segment of any stroke. Everything is
differentiable in the control points and the pen width (d is a min over segments: piecewise smooth).
"""

from __future__ import annotations

import torch

from metagen.programs.program import CANVAS, Program, curve


def segments(control_points: list[torch.Tensor], samples: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) [N, 2] each: the segments of every stroke's polyline, canvas units. A dot is a zero-length segment."""
    starts, ends = [], []
    for cp in control_points:
        pts = curve(cp, samples if cp.shape[0] > 1 else 2)  # [S, 2]
        starts.append(pts[:-1])
        ends.append(pts[1:])
    return torch.cat(starts), torch.cat(ends)


def distance_map(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """[size, size] distance (canvas units) from each pixel centre to the nearest segment (a[i], b[i])."""
    scale = CANVAS / size
    centres = (torch.arange(size, dtype=a.dtype, device=a.device) + 0.5) * scale
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    p = torch.stack([xx, yy], -1).view(-1, 1, 2)  # [P, 1, 2]: (x = column, y = row)
    ab = b - a  # [N, 2]
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-9)  # [P, N]
    nearest = a + t.clamp(0, 1)[..., None] * ab  # [P, N, 2]
    d = (p - nearest).pow(2).sum(-1).add(1e-12).sqrt()  # [P, N]
    return d.min(1).values.view(size, size)


def render_points(control_points: list[torch.Tensor], pen: torch.Tensor | float, size: int = 28,
                  blur: float = 0.5, samples: int = 24) -> torch.Tensor:
    """Ink probabilities [size, size] in (0, 1) of strokes given as absolute control points (canvas units).
    `blur` (canvas units) is the softness of the pen's edge."""
    a, b = segments(control_points, samples)
    d = distance_map(a, b, size)
    return torch.sigmoid((torch.as_tensor(pen, dtype=d.dtype) / 2 - d) / blur)


def render(program: Program, size: int = 28, blur: float = 0.5, samples: int = 24) -> torch.Tensor:
    """The program's image: ink probabilities [size, size]."""
    return render_points(program.control_points(), program.pen, size, blur, samples)
