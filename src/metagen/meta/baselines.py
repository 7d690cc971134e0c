"""Baselines behind the meta-learner surface: every result is reported next to these.

- `unconditional`: one generator trained on every background example; it ignores the support set.
- `copy`: returns support examples verbatim. Its likelihood is a mixture of the support examples with
  independent pixel flips, p(x | S) = (1/K) sum_k prod_p eps^[x_p != s_kp] (1 - eps)^[x_p = s_kp],
  whose one parameter eps is fitted by maximum likelihood on background tasks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.generators.base import Generator, build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.registry import LEARNERS


class UnconditionalConfig(LearnerConfig):
    name: Literal["unconditional"] = "unconditional"


@LEARNERS.register("unconditional")
class Unconditional(MetaLearner):
    Config = UnconditionalConfig

    def __init__(self, cfg: UnconditionalConfig, generator_cfg: GeneratorConfig,
                 example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.generator = build_generator(generator_cfg, self.example_shape)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        x = torch.cat([tasks.support, tasks.query], 1).flatten(0, 1)  # [T*(K+Q), *example_shape]
        return self.generator.loss(x)

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        return GeneratorAdapted(self.generator)

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        return GeneratorAdapted(self.generator)

    def zero_shot(self) -> Adapted:
        return GeneratorAdapted(self.generator)  # the same generator for every k (finetune: the pretrained one)


class CopyConfig(LearnerConfig):
    name: Literal["copy"] = "copy"
    init_flip: float = Field(0.05, gt=0, lt=0.5)  # starting pixel-flip probability eps


def copy_log_prob(x: torch.Tensor, support: torch.Tensor, flip_logit: torch.Tensor, example_dims: int) -> torch.Tensor:
    """log p(x | support) under the flip mixture: x [..., B, *shape], support [..., K, *shape] -> [..., B]."""
    xf, sf = x.flatten(-example_dims), support.flatten(-example_dims)  # [..., B, P], [..., K, P]
    P, K = xf.shape[-1], sf.shape[-2]
    differ = (xf.unsqueeze(-2) != sf.unsqueeze(-3)).sum(-1).to(flip_logit.dtype)  # [..., B, K]
    log_lik = differ * F.logsigmoid(flip_logit) + (P - differ) * F.logsigmoid(-flip_logit)  # [..., B, K]
    return torch.logsumexp(log_lik, -1) - math.log(K)


@LEARNERS.register("copy")
class CopySupport(MetaLearner):
    Config = CopyConfig
    uses_generator = False

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        if generator.modality != "images":
            return (f"learner 'copy' has a likelihood for binary images only (pixel flips); generator "
                    f"'{generator.registry_name}' models {generator.modality}")
        return None

    def __init__(self, cfg: CopyConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.flip_logit = nn.Parameter(torch.tensor(math.log(cfg.init_flip / (1 - cfg.init_flip))))

    @property
    def flip(self) -> float:
        return torch.sigmoid(self.flip_logit).item()

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        return -copy_log_prob(tasks.query, tasks.support, self.flip_logit, len(self.example_shape)).mean()

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        return CopyAdapted(support, self.flip_logit.detach(), len(self.example_shape))


class CopyAdapted(Adapted):
    def __init__(self, support: torch.Tensor, flip_logit: torch.Tensor, example_dims: int) -> None:
        self.support, self.flip_logit, self.example_dims = support, flip_logit, example_dims

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(len(self.support), (n,), generator=generator, device=self.support.device)
        return self.support[idx]

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return copy_log_prob(x, self.support, self.flip_logit, self.example_dims)
