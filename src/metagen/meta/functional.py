"""Running a module with swapped parameters, the one primitive the gradient-based learners build on."""

from __future__ import annotations

import re
from typing import Annotated, Any

import torch
from pydantic import AfterValidator
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
    regex = re.compile(pattern)
    return {n: p for n, p in module.named_parameters() if regex.search(n)}


def _check_pattern(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"not a regular expression ({e})") from None
    return v


# A config field naming parameters by a regular expression over their names ("." = all).
ParamPattern = Annotated[str, AfterValidator(_check_pattern)]
