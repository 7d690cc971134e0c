"""Omniglot's pen trajectories (the official `strokes_background*` / `strokes_evaluation*` files).

`<source>/<Alphabet>/<characterNN>/<id>_<drawer>.txt` holds one drawing: blocks of `x,y,t` lines, one block
per stroke, each closed by a `BREAK` line (the file starts with `START`). x runs right and y up in the frame of
the 105 x 105 image of the same name, so the image row is -y. A drawing is returned as a list of strokes,
each `[n, 2]` float array of (x, y) = (column, row) in that 105-pixel frame, in drawing order. Drawings are
ordered like the images (by file name), so drawing i of a character is image i of `load_omniglot`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metagen.data.omniglot import zip_members
from metagen.errors import DataError

PREFIXES = ("strokes_background", "strokes_evaluation")
FRAME = 105  # the side of the image the coordinates refer to

Drawing = list[np.ndarray]  # strokes, each [n, 2] (column, row)


def parse_drawing(text: str, where: str = "stroke file") -> Drawing:
    """The strokes of one stroke file's text; repeated points (the pen resting) are dropped."""
    strokes: Drawing = []
    points: list[tuple[float, float]] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line == "START":
            continue
        if line == "BREAK":
            if points:
                strokes.append(_dedupe(np.asarray(points, dtype=np.float64)))
            points = []
            continue
        try:
            x, y = (float(v) for v in line.split(",")[:2])
        except ValueError:
            raise DataError(f"{where}, line {line_no}: expected 'x,y,t', got '{line[:40]}'; the stroke file is "
                            "corrupt, re-download the Omniglot stroke archive") from None
        points.append((x, -y))
    if points:  # a last stroke without its BREAK
        strokes.append(_dedupe(np.asarray(points, dtype=np.float64)))
    if not strokes:
        raise DataError(f"{where} holds no strokes; re-download the Omniglot stroke archive")
    return strokes


def _dedupe(points: np.ndarray) -> np.ndarray:
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(np.diff(points, axis=0) != 0, axis=1)
    return points[keep]


def find_stroke_sources(data_dir: Path) -> list[Path]:
    found: list[Path] = []
    for root in (data_dir, data_dir / "omniglot"):
        if root.is_dir():
            found += [p for p in sorted(root.iterdir(), key=lambda p: (p.suffix == ".zip", p.name))
                      if p.name.startswith(PREFIXES) and (p.is_dir() or p.suffix == ".zip")]
    return found


def _files(path: Path) -> Iterator[tuple[tuple[str, str, str], str]]:
    if path.suffix != ".zip":
        for f in sorted(path.glob("*/*/*.txt")):
            yield (f.parent.parent.name, f.parent.name, f.name), f.read_text()
        return
    for parts, data in zip_members(path, ".txt"):
        if "__MACOSX" not in parts:  # macOS metadata beside the stroke files
            yield (parts[-3], parts[-2], parts[-1]), data.decode()


def load_strokes(data_dir: str | Path, groups: set[str] | None = None) -> dict[tuple[str, str], list[Drawing]]:
    """{(alphabet, character): its drawings in file-name order}, of the alphabets in `groups` (None: all).
    A character found in several archives (Greek, Latin in the small splits) is kept once."""
    data_dir = Path(data_dir).expanduser()
    sources = find_stroke_sources(data_dir)
    if not sources:
        raise DataError(f"no Omniglot stroke data in '{data_dir}': expected strokes_background*.zip (or its folder) "
                        "there or in its omniglot/ subfolder; pass --data-dir or set METAGEN_DATA_DIR")
    out: dict[tuple[str, str], list[Drawing]] = {}
    for src in sources:
        here: dict[tuple[str, str], list[Drawing]] = {}
        for (alphabet, character, fname), text in _files(src):
            if groups is not None and alphabet not in groups:
                continue
            here.setdefault((alphabet, character), []).append(
                parse_drawing(text, f"{src.name}/{alphabet}/{character}/{fname}"))
        for key, drawings in here.items():
            out.setdefault(key, drawings)
    if not out:
        raise DataError(f"the stroke sources in '{data_dir}' hold no drawings"
                        + (f" of the alphabets {sorted(groups)}" if groups is not None else ""))
    return out
