"""Stroke programs: a character as a short sequence of pen strokes, readable as text.

A stroke is a clamped B-spline (cubic when it has 4 or more control points; a line with 2; a dot with 1) whose
control points are given relative to its start. Where a stroke starts is its relation to the strokes before it
(as in Lake et al. 2015): `at (x, y)` anywhere on the canvas, `from start of j` / `from end of j`, or
`along j at u` (the point at parameter u in [0, 1] of stroke j). Coordinates are canvas units: the canvas is
100 x 100, x to the right, y down, whatever the image size; the pen width is in the same units.

Text form (`Program.to_text`, `Program.from_text` read each other back):

    program pen=2.50
    stroke 1 at (40.20, 30.10): (3.10, -2.00) (5.00, 1.20) (8.00, 4.00)
    stroke 2 from end of 1: (0.00, 12.00)
    stroke 3 along 1 at 0.50: (6.00, 0.00)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from metagen.errors import MetagenError

CANVAS = 100.0
RELATIONS = ("at", "start", "end", "along")


class ProgramError(MetagenError):
    """A program's text or structure is malformed."""


@dataclass
class Stroke:
    offsets: torch.Tensor  # [m - 1, 2] control points after the first, relative to the start; [0, 2] for a dot
    relation: str = "at"  # at | start | end | along
    at: tuple[float, float] | None = None  # "at": the start on the canvas
    ref: int | None = None  # start/end/along: the 0-based index of an earlier stroke
    u: float | None = None  # along: where on `ref`, in [0, 1]

    @property
    def n_control(self) -> int:
        return self.offsets.shape[0] + 1


@dataclass
class Program:
    strokes: list[Stroke]
    pen: float = 2.5  # pen width, canvas units

    def __post_init__(self) -> None:
        check_program(self)

    # -- geometry --------------------------------------------------------------------------------------
    def control_points(self) -> list[torch.Tensor]:
        """Absolute control points of every stroke, each [m_i, 2] in canvas units (differentiable in the offsets
        and, for "along", in u)."""
        out: list[torch.Tensor] = []
        for s in self.strokes:
            start = self.start_of(s, out)
            out.append(torch.cat([start[None], start[None] + s.offsets.to(start.dtype)], 0))
        return out

    def start_of(self, s: Stroke, earlier: list[torch.Tensor]) -> torch.Tensor:
        if s.relation == "at":
            return torch.as_tensor(s.at, dtype=s.offsets.dtype)
        cp = earlier[s.ref]
        if s.relation == "start":
            return cp[0]
        if s.relation == "end":
            return cp[-1]
        return point_at(cp, s.u)

    # -- text ------------------------------------------------------------------------------------------
    def to_text(self, digits: int = 2) -> str:
        f = f"{{:.{digits}f}}"
        lines = [f"program pen={f.format(self.pen)}"]
        for i, s in enumerate(self.strokes, 1):
            if s.relation == "at":
                where = f"at ({f.format(s.at[0])}, {f.format(s.at[1])})"
            elif s.relation == "along":
                where = f"along {s.ref + 1} at {f.format(s.u)}"
            else:
                where = f"from {s.relation} of {s.ref + 1}"
            pts = " ".join(f"({f.format(x)}, {f.format(y)})" for x, y in s.offsets.tolist())
            lines.append(f"stroke {i} {where}:" + (f" {pts}" if pts else ""))
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> Program:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if not lines:
            raise ProgramError("empty program text; it starts with 'program pen=W'")
        head = re.fullmatch(r"program pen=(\S+)", lines[0])
        if head is None:
            raise ProgramError(f"a program starts with 'program pen=W', got '{lines[0][:40]}'")
        strokes = [_parse_stroke(line, i) for i, line in enumerate(lines[1:], 1)]
        return cls(strokes, pen=_number(head.group(1), lines[0]))


NUM = r"(-?\d+(?:\.\d*)?(?:e-?\d+)?)"
STROKE = re.compile(rf"stroke (\d+) (?:at \({NUM}, {NUM}\)|from (start|end) of (\d+)|along (\d+) at {NUM}):(.*)")
POINT = re.compile(rf"\({NUM}, {NUM}\)")


def _number(s: str, line: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ProgramError(f"'{s}' is not a number in '{line[:60]}'") from None


def _parse_stroke(line: str, expected: int) -> Stroke:
    m = STROKE.fullmatch(line)
    if m is None:
        raise ProgramError(f"cannot read '{line[:60]}'; a stroke line looks like 'stroke 2 from end of 1: (1.0, 2.0)'")
    number, ax, ay, rel, rel_ref, along_ref, u, rest = m.groups()
    if int(number) != expected:
        raise ProgramError(f"strokes must be numbered 1, 2, ... in order; found stroke {number} in place {expected}")
    if POINT.sub("", rest).strip():
        raise ProgramError(f"cannot read the control points of stroke {number}: '{rest.strip()[:40]}'")
    offsets = torch.tensor([[float(x), float(y)] for x, y in POINT.findall(rest)], dtype=torch.float64).view(-1, 2)
    if ax is not None:
        return Stroke(offsets, "at", at=(float(ax), float(ay)))
    if rel is not None:
        return Stroke(offsets, rel, ref=int(rel_ref) - 1)
    return Stroke(offsets, "along", ref=int(along_ref) - 1, u=float(u))


def check_program(p: Program) -> None:
    if not p.strokes:
        raise ProgramError("a program needs at least one stroke")
    if not p.pen > 0:
        raise ProgramError(f"the pen width must be > 0, got {p.pen}")
    for i, s in enumerate(p.strokes):
        if s.relation not in RELATIONS:
            raise ProgramError(f"stroke {i + 1}: unknown relation '{s.relation}'; one of {', '.join(RELATIONS)}")
        if s.offsets.dim() != 2 or s.offsets.shape[-1] != 2:
            raise ProgramError(f"stroke {i + 1}: offsets must be [m - 1, 2], got {list(s.offsets.shape)}")
        if s.relation == "at" and s.at is None:
            raise ProgramError(f"stroke {i + 1}: 'at' needs a start point")
        if s.relation != "at" and (s.ref is None or not 0 <= s.ref < i):
            raise ProgramError(f"stroke {i + 1} refers to stroke {None if s.ref is None else s.ref + 1}; it may only "
                               "refer to an earlier stroke")
        if s.relation == "along" and (s.u is None or not 0 <= s.u <= 1):
            raise ProgramError(f"stroke {i + 1}: 'along' needs u in [0, 1], got {s.u}")


# -- B-splines --------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _basis_np(m: int, samples: int) -> np.ndarray:
    """[samples, m] weights of m control points at `samples` parameters evenly spread over [0, 1]: a clamped
    B-spline of degree min(3, m - 1), which starts at the first control point and ends at the last."""
    if m == 1:
        return np.ones((samples, 1))
    k = min(3, m - 1)
    inner = np.linspace(0, 1, m - k + 1)[1:-1]
    knots = np.concatenate([np.zeros(k + 1), inner, np.ones(k + 1)])
    u = np.linspace(0, 1, samples)
    # Cox-de Boor, degree 0 upwards; the last parameter belongs to the last span
    basis = np.zeros((samples, len(knots) - 1))
    for i in range(len(knots) - 1):
        basis[:, i] = (knots[i] <= u) & (u < knots[i + 1])
    basis[-1, m - 1] = 1.0
    for d in range(1, k + 1):
        nxt = np.zeros((samples, len(knots) - 1 - d))
        for i in range(len(knots) - 1 - d):
            left = knots[i + d] - knots[i]
            right = knots[i + d + 1] - knots[i + 1]
            if left > 0:
                nxt[:, i] += (u - knots[i]) / left * basis[:, i]
            if right > 0:
                nxt[:, i] += (knots[i + d + 1] - u) / right * basis[:, i + 1]
        basis = nxt
    return basis[:, :m]


def basis(m: int, samples: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(_basis_np(m, samples)).to(dtype)


def curve(cp: torch.Tensor, samples: int = 32) -> torch.Tensor:
    """cp [m, 2] -> [samples, 2] points of the spline, evenly spaced in its parameter."""
    return basis(cp.shape[0], samples, cp.dtype) @ cp


def point_at(cp: torch.Tensor, u: float | torch.Tensor, samples: int = 65) -> torch.Tensor:
    """The point at parameter u in [0, 1] of the spline cp [m, 2] (linear between `samples` curve points)."""
    pts = curve(cp, samples)  # [S, 2]
    pos = torch.as_tensor(u, dtype=cp.dtype).clamp(0, 1) * (samples - 1)
    i = pos.detach().floor().long().clamp(max=samples - 2)
    frac = pos - i
    return pts[i] * (1 - frac) + pts[i + 1] * frac


def fit_spline(points: np.ndarray, m: int, samples: int = 64) -> np.ndarray:
    """Least-squares control points [m, 2] of a trajectory [n, 2], parameterised by arc length, with its ends
    kept exactly."""
    pts = resample(points, samples)
    if m == 1:
        return pts.mean(0, keepdims=True)
    b = _basis_np(m, samples)
    cp = np.empty((m, 2))
    cp[0], cp[-1] = pts[0], pts[-1]
    if m > 2:
        rhs = pts - b[:, :1] * pts[0] - b[:, -1:] * pts[-1]
        cp[1:-1] = np.linalg.lstsq(b[:, 1:-1], rhs, rcond=None)[0]
    return cp


def resample(points: np.ndarray, samples: int) -> np.ndarray:
    """`samples` points evenly spaced by arc length along the polyline `points` [n, 2]."""
    if len(points) == 1:
        return np.repeat(points, samples, 0)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(points[:1], samples, 0)
    t = np.linspace(0, s[-1], samples)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], 1)
