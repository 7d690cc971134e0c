"""Running a module with swapped parameters, the one primitive the gradient-based learners build on."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BeforeValidator
from torch import nn
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]


def call(module: nn.Module, params: Params, method: str, *args: Any, **kwargs: Any) -> Any:
    """`module.<method>(*args, **kwargs)` with `params` (a subset of its named parameters) swapped in.

    Works under `torch.func.grad` / `vmap` and with ordinary autograd through `params`.
    """
    return functional_call(module, params, (method, *args), kwargs, strict=False)


def select(module: nn.Module, pattern: str) -> Params:
    """The named parameters whose names match the regular expression `pattern` (searched, not anchored)."""
    regex = re.compile(pattern)
    return {n: p for n, p in module.named_parameters() if regex.search(n)}


def task_slice(batch: Any, t: int) -> Any:
    """Task `t` of a batch: a tensor [T, ...], or a tuple or dict of them (images and labels, parameters)."""
    if isinstance(batch, tuple):
        return tuple(task_slice(b, t) for b in batch)
    if isinstance(batch, dict):
        return {k: task_slice(v, t) for k, v in batch.items()}
    return batch[t]


def _stack(outs: list[Any]) -> Any:
    """Per-task outputs (tensors, or tuples / dicts of them) -> one with a leading task dim, as vmap returns."""
    first = outs[0]
    if isinstance(first, tuple):
        return tuple(_stack([o[i] for o in outs]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _stack([o[k] for o in outs]) for k in first}
    return torch.stack(outs)


def map_tasks(fn: Any, args: tuple, in_dims: tuple, vmapped: bool, randomness: str = "different") -> Any:
    """`fn` over the tasks of a meta-batch: args with in_dim 0 are batched per task, None are shared.
    Under `vmap` when `vmapped`, else one task at a time (same results, stacked the same way)."""
    if vmapped:
        return vmap(fn, in_dims=in_dims, randomness=randomness)(*args)
    batched = next(a for a, d in zip(args, in_dims, strict=True) if d == 0)
    return _stack([fn(*(a if d is None else task_slice(a, t) for a, d in zip(args, in_dims, strict=True)))
                   for t in range(_num_tasks(batched))])


def _num_tasks(batch: Any) -> int:
    if isinstance(batch, tuple):
        return _num_tasks(batch[0])
    if isinstance(batch, dict):
        return _num_tasks(next(iter(batch.values())))
    return batch.shape[0]


def _check_pattern(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"not a regular expression ({e})") from None
    return v


# A config field naming parameters by a regular expression over their names ("." = all).
ParamPattern = Annotated[str, AfterValidator(_check_pattern)]


def _vectorize_mode(v: Any) -> Any:
    return {True: "vmap", False: "loop"}.get(v, v) if isinstance(v, bool) else v


# How the gradient-based learners run the tasks of a meta-batch: "vmap" (torch.func.vmap over tasks),
# "loop" (one task at a time), or "auto": vmap on CUDA, the loop on CPU. On CPU the loop measured faster
# (benchmarks/meta_speed.py, docs/benchmarks.md): batched per-task weights make T-times larger activations
# that fall out of cache, while one task's fit in it. true / false are accepted for vmap / loop.
Vectorize = Annotated[Literal["auto", "vmap", "loop"], BeforeValidator(_vectorize_mode)]


def use_vmap(mode: str, device: torch.device) -> bool:
    """Whether `mode` (a `Vectorize` value) means vmap for a model on `device`."""
    return mode == "vmap" or (mode == "auto" and device.type == "cuda")
