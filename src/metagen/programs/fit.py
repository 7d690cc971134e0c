"""Programs from pen trajectories: each stroke's spline by least squares, each start's relation to the strokes
drawn before it."""

from __future__ import annotations

import numpy as np
import torch

from metagen.data.strokes import FRAME, Drawing
from metagen.programs.program import CANVAS, Program, Stroke, _basis_np, fit_spline, resample

MAX_CONTROL = 24  # control points of a stroke at most
TOLERANCE = 1.5  # canvas units: a stroke's spline may stray this far from its trajectory
ATTACH = 4.0  # canvas units: a start this close to an earlier stroke is attached to it


def fit_stroke(points: np.ndarray, tolerance: float = TOLERANCE, max_control: int = MAX_CONTROL) -> np.ndarray:
    """Control points [m, 2] of the fewest (1, 2, 4, 5, ... max_control) whose spline stays within `tolerance`
    of the trajectory `points` [n, 2] (canvas units)."""
    dense = resample(points, 64)
    if np.linalg.norm(dense - dense.mean(0), axis=1).max() <= tolerance:
        return dense.mean(0, keepdims=True)  # a dot
    for m in (2, *range(4, max_control + 1)):
        cp = fit_spline(points, m)
        if np.linalg.norm(_basis_np(m, 64) @ cp - dense, axis=1).max() <= tolerance:
            return cp
    return cp


def relation(start: np.ndarray, earlier: list[np.ndarray],
             attach: float = ATTACH) -> tuple[str, int | None, float | None]:
    """(relation, ref, u) of a stroke starting at `start` given the earlier strokes' control points: attached to
    the nearest start, end or point along an earlier stroke within `attach`, else "at"."""
    best: tuple[float, str, int | None, float | None] = (attach, "at", None, None)
    for j, cp in enumerate(earlier):
        pts = _basis_np(cp.shape[0], 65) @ cp  # [65, 2]
        d = np.linalg.norm(pts - start, axis=1)
        for name, dist, u in (("start", d[0], None), ("end", d[-1], None)):
            if dist < best[0]:
                best = (dist, name, j, u)
        i = int(d.argmin())
        if 0 < i < 64 and d[i] + 1e-6 < best[0] - 1.0:  # along, if clearly nearer than either end
            best = (d[i], "along", j, i / 64)
    return best[1], best[2], best[3]


def program_from_control_points(strokes: list[np.ndarray], pen: float, attach: float = ATTACH) -> Program:
    """The program of strokes given as absolute control points (each [m, 2], canvas units, in drawing order): each
    start is related to an earlier stroke it lies on (and moved onto it), else placed "at" its point."""
    out: list[Stroke] = []
    earlier: list[np.ndarray] = []  # absolute control points of the program's strokes
    for cp in strokes:
        rel, ref, u = relation(cp[0], earlier, attach) if earlier else ("at", None, None)
        if rel == "at":
            out.append(Stroke(torch.from_numpy(cp[1:] - cp[0]), "at", at=(float(cp[0, 0]), float(cp[0, 1]))))
        else:
            out.append(Stroke(torch.from_numpy(cp[1:] - cp[0]), rel, ref=ref, u=u))
            anchor = earlier[ref][0] if rel == "start" else earlier[ref][-1] if rel == "end" else \
                _basis_np(earlier[ref].shape[0], 65)[round(u * 64)] @ earlier[ref]
            cp = np.concatenate([anchor[None], anchor[None] + (cp[1:] - cp[0])])
        earlier.append(cp)
    return Program(out, pen=pen)


def program_from_drawing(drawing: Drawing, pen: float = 2.5, tolerance: float = TOLERANCE,
                         attach: float = ATTACH) -> Program:
    """The program of a drawing (strokes in the 105-pixel frame of `metagen.data.strokes`)."""
    return program_from_control_points([fit_stroke(traj * (CANVAS / FRAME), tolerance) for traj in drawing], pen,
                                       attach)
