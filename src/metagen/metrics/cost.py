"""Adaptation cost: wall time and peak memory of one `adapt` call."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

R = TypeVar("R")


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    """(fn(), seconds); waits for the GPU when one is in use."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def peak_memory(fn: Callable[[], R], device: torch.device | str = "cpu") -> tuple[R, int]:
    """(fn(), peak bytes of tensor memory allocated while it ran, above what was allocated before).

    CUDA: the allocator's peak counter. CPU: the running sum of torch.profiler's allocation and free
    events in time order (CPU tensors only; Python objects and allocator caching are not counted)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, max(torch.cuda.max_memory_allocated(device) - base, 0)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's C++ side prints lines at start, stop and about earlier blocks
        prof.start()
        try:
            out = fn()
        finally:
            prof.stop()
    running, peak = 0, 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += e.self_cpu_memory_usage  # an op's allocations minus its frees, children excluded
        peak = max(peak, running)
    return out, peak


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ output included) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
