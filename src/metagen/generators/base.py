"""The generator surface every base generative model implements."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from metagen.config import GeneratorConfig
from metagen.errors import ConfigError, DataError


class Generator(nn.Module):
    """A generative model of examples `x: [B, *example_shape]`, optionally conditioned on a task.

    Two kinds of conditioning, both optional: a context `cond`, and a memory of support embeddings
    `memory: [B, M, E]` or `[M, E]` that the model attends over while generating (built with `memory_dim`;
    families without attention reject it). The context is either a vector `[B, D]` or `[D]` (built with
    `cond_dim`), or a map `[B, D, h, w]` or `[D, h, w]` over the image's area, at any resolution (built with
    `cond_map` = D; only families with `supports_cond_map` take one, and resample it where they read it).

    - `loss(x, cond=None, memory=None)`: scalar training loss per example (nats per example for likelihoods);
    - `sample(n, cond=None, memory=None, generator=None)`: `[n, *example_shape]` new examples;
    - `log_prob(x, cond=None, memory=None, iw_samples=...)`: `[B]` log-likelihood in nats (a bound where the
      family only has one; exact families ignore `iw_samples`).

    `forward(method, *args)` dispatches to one of these, so `torch.func.functional_call` can run any of them
    with swapped parameters (see `metagen.meta.functional.call`).
    """

    Config: ClassVar[type[GeneratorConfig]]
    has_log_prob: ClassVar[bool] = True
    supports_memory: ClassVar[bool] = False
    supports_cond_map: ClassVar[bool] = False  # takes a context map [B, D, h, w] over the image
    adversarial: ClassVar[bool] = False  # loss is a two-player game (GAN), not a likelihood to minimise
    modality: ClassVar[str] = "images"  # what it models: "images" [C, H, W] or "text" (token ids [L])
    # Parameters a hypernetwork emits per task unless learner.hyper_params says otherwise (the output side).
    task_params: ClassVar[str] = "."

    def __init__(self, example_shape: tuple[int, ...], cond_dim: int = 0, memory_dim: int = 0,
                 cond_map: int = 0) -> None:
        super().__init__()
        self.example_shape = tuple(example_shape)
        self.cond_dim, self.memory_dim, self.cond_map = cond_dim, memory_dim, cond_map
        if memory_dim and not self.supports_memory:
            raise ConfigError(f"generator '{type(self).__name__}' cannot attend over a support set; "
                              "choose another generator.name or learner")
        if cond_map and (cond_dim or not self.supports_cond_map or len(self.example_shape) != 3):
            raise ConfigError(f"generator '{type(self).__name__}' cannot take a context map; "
                              "choose another generator.name or learner")

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, method)(*args, **kwargs)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.example_shape:
            shape = ", ".join(map(str, self.example_shape))
            raise DataError(f"{type(self).__name__} expects a batch of shape [B, {shape}], got {list(x.shape)}")

    def expand_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """`cond` as [batch, cond_dim] or [batch, cond_map, h, w] (a single context is shared by the batch), or
        None if unconditional."""
        kind = "context map" if self.cond_map else "context vector"
        if not (self.cond_dim or self.cond_map):
            if cond is not None:
                raise ValueError(f"{type(self).__name__} was built unconditional but got a context")
            return None
        if cond is None:
            size = f"{self.cond_map} channels" if self.cond_map else f"size {self.cond_dim}"
            raise ValueError(f"{type(self).__name__} needs a {kind} of {size}")
        one = 3 if self.cond_map else 1  # dims of one example's context
        if cond.dim() == one:
            cond = cond.expand(batch, *cond.shape)
        width = self.cond_map or self.cond_dim
        if cond.dim() != one + 1 or cond.shape[0] != batch or cond.shape[1] != width:
            shape = f"[{batch}, {width}, h, w] or [{width}, h, w]" if self.cond_map else \
                f"[{batch}, {width}] or [{width}]"
            raise ValueError(f"context must be {shape}, got {list(cond.shape)}")
        return cond

    def expand_memory(self, memory: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """`memory` as [batch, M, memory_dim] (a single [M, memory_dim] set is shared), or None."""
        if self.memory_dim == 0:
            if memory is not None:
                raise ValueError(f"{type(self).__name__} was built without attention but got a memory")
            return None
        if memory is None:
            raise ValueError(f"{type(self).__name__} needs a memory of support embeddings [M, {self.memory_dim}]")
        if memory.dim() == 2:
            memory = memory.expand(batch, -1, -1)
        if memory.dim() != 3 or memory.shape[0] != batch or memory.shape[2] != self.memory_dim:
            raise ValueError(f"memory must be [{batch}, M, {self.memory_dim}] or [M, {self.memory_dim}], "
                             f"got {list(memory.shape)}")
        return memory


def build_generator(cfg: GeneratorConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                    memory_dim: int = 0, cond_map: int = 0) -> Generator:
    from metagen.registry import GENERATORS

    family = GENERATORS.get(cfg.name)
    if cond_map and not family.supports_cond_map:
        raise ConfigError(f"generator '{cfg.name}' cannot take a context map; choose another generator.name")
    extra = {"cond_map": cond_map} if cond_map else {}  # only families with supports_cond_map accept it
    return family(cfg, example_shape, cond_dim, memory_dim, **extra)
