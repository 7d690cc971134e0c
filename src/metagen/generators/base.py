"""The generator surface every base generative model implements."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from metagen.config import GeneratorConfig
from metagen.errors import DataError


class Generator(nn.Module):
    """A generative model of examples `x: [B, *example_shape]`, optionally conditioned on `cond: [B, D]` or `[D]`.

    - `loss(x, cond=None)`: scalar training loss per example (for likelihood models, nats per example);
    - `sample(n, cond=None, generator=None)`: `[n, *example_shape]` new examples;
    - `log_prob(x, cond=None, iw_samples=...)`: `[B]` log-likelihood in nats (a bound where the family only
      has one; exact families ignore `iw_samples`).

    `forward(method, *args)` dispatches to one of these, so `torch.func.functional_call` can run any of them
    with swapped parameters (see `metagen.meta.functional.call`).
    """

    Config: ClassVar[type[GeneratorConfig]]
    has_log_prob: ClassVar[bool] = True

    def __init__(self, example_shape: tuple[int, ...], cond_dim: int = 0) -> None:
        super().__init__()
        self.example_shape = tuple(example_shape)
        self.cond_dim = cond_dim

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, method)(*args, **kwargs)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, iw_samples: int = 1000) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.example_shape:
            shape = ", ".join(map(str, self.example_shape))
            raise DataError(f"{type(self).__name__} expects a batch of shape [B, {shape}], got {list(x.shape)}")

    def expand_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """`cond` as [batch, cond_dim] (a single [cond_dim] vector is shared), or None if unconditional."""
        if self.cond_dim == 0:
            if cond is not None:
                raise ValueError(f"{type(self).__name__} was built unconditional but got a context vector")
            return None
        if cond is None:
            raise ValueError(f"{type(self).__name__} needs a context vector of size {self.cond_dim}")
        if cond.dim() == 1:
            cond = cond.expand(batch, -1)
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"context must be [{batch}, {self.cond_dim}] or [{self.cond_dim}], got {list(cond.shape)}")
        return cond


def build_generator(cfg: GeneratorConfig, example_shape: tuple[int, ...], cond_dim: int = 0) -> Generator:
    from metagen.registry import GENERATORS

    return GENERATORS.get(cfg.name)(cfg, example_shape, cond_dim)
