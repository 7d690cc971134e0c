"""Running a module with swapped parameters, the one primitive the gradient-based learners build on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def call(module: nn.Module, params: Params, method: str, *args: Any, **kwargs: Any) -> Any:
    """`module.<method>(*args, **kwargs)` with `params` (a subset of its named parameters) swapped in.

    Works under `torch.func.grad` / `vmap` and with ordinary autograd through `params`.
    """
    return functional_call(module, params, (method, *args), kwargs, strict=False)


def select(module: nn.Module, pattern: str) -> Params:
    """The named parameters whose names match the regular expression `pattern` (searched, not anchored)."""
    import re

    regex = re.compile(pattern)
    return {n: p for n, p in module.named_parameters() if regex.search(n)}
