"""Stroke programs: characters as sequences of pen strokes (program.py), drawn by a differentiable
rasteriser (raster.py)."""

from metagen.programs.program import Program, ProgramError, Stroke
from metagen.programs.raster import render, render_points

__all__ = ["Program", "ProgramError", "Stroke", "render", "render_points"]
