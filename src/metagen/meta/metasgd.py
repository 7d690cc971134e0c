"""Meta-SGD (Li et al. 2017): MAML whose inner learning rates are meta-learned, one per parameter entry.

    theta_t = theta - alpha * grad L_support(theta)     (elementwise; alpha has theta's shape)

alpha starts at `inner_lr` everywhere and is trained with theta by the outer loss. As in the paper it is
unconstrained (an entry may turn negative). Everything else, including `first_order`, `adapt_params`
and `vectorize`, is MAML's.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from metagen.config import GeneratorConfig
from metagen.meta.functional import Params, select
from metagen.meta.maml import MAML, MAMLConfig
from metagen.registry import LEARNERS


class MetaSGDConfig(MAMLConfig):
    name: Literal["metasgd"] = "metasgd"  # type: ignore[assignment]


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot contain dots


@LEARNERS.register("metasgd")
class MetaSGD(MAML):
    Config = MetaSGDConfig

    def __init__(self, cfg: MetaSGDConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        adapted = select(self.generator, cfg.adapt_params)
        self.inner_lrs = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p, cfg.inner_lr)) for n, p in adapted.items()})

    def inner_update(self, params: Params, grads: Params) -> Params:
        return {k: p - self.inner_lrs[_key(k)] * grads[k] for k, p in params.items()}
