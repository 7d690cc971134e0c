"""Fine-tuning baselines: what a meta-learner must beat when the support set is used by plain training.

- `finetune`: pretrain one generator on every background example (as `unconditional`), then `adapt`
  takes `finetune_steps` Adam steps on the support set, starting from the pretrained weights.
- `scratch`: no meta-training at all; `adapt` trains a freshly initialised generator on the support set
  alone. Its checkpoint holds only that (seeded) initialisation.
Which parameters are fine-tuned is a name pattern (`finetune_params`, "." = all); the rest stay fixed.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError, DataError
from metagen.generators.base import Generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.meta.baselines import Unconditional
from metagen.meta.functional import ParamPattern, Params, call, select
from metagen.registry import LEARNERS


def finetune(generator: Generator, init: Params, support: torch.Tensor, steps: int, lr: float) -> Params:
    """`steps` full-batch Adam steps on the loss of support [K, ...], from `init`; the module is left alone."""
    params = {k: v.detach().clone().requires_grad_() for k, v in init.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    with torch.enable_grad():  # evaluation calls adapt under no_grad
        for _ in range(steps):
            loss = call(generator, params, "loss", support)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return {k: v.detach() for k, v in params.items()}


class FineTuneConfig(LearnerConfig):
    name: Literal["finetune"] = "finetune"
    finetune_steps: int = Field(20, ge=0)
    finetune_lr: float = Field(1e-4, gt=0)
    finetune_params: ParamPattern = "."


@LEARNERS.register("finetune")
class FineTune(Unconditional):
    Config = FineTuneConfig

    def __init__(self, cfg: FineTuneConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        if not select(self.generator, cfg.finetune_params):
            raise ConfigError(f"learner.finetune_params = {cfg.finetune_params!r} matches no generator parameter")

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        init = select(self.generator, self.cfg.finetune_params)
        params = finetune(self.generator, init, support, self.cfg.finetune_steps, self.cfg.finetune_lr)
        return GeneratorAdapted(self.generator, params)


class ScratchConfig(FineTuneConfig):
    name: Literal["scratch"] = "scratch"  # type: ignore[assignment]
    finetune_steps: int = Field(300, ge=0)
    finetune_lr: float = Field(1e-3, gt=0)


@LEARNERS.register("scratch")
class Scratch(FineTune):
    Config = ScratchConfig
    meta_trained: ClassVar[bool] = False

    def __init__(self, cfg: ScratchConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.generator.requires_grad_(False)  # the initialisation is never meta-trained

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        raise ConfigError("learner 'scratch' has nothing to meta-train; it trains on each support set in adapt")

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        return MetaLearner.prior(self, generator)  # an untrained generator is no concept: a one-line error

    def marginal_log_prob(self, x: torch.Tensor, iw_samples: int = 1000, concepts: int = 100,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        raise DataError("learner 'scratch' is an untrained generator until it sees a support set, so it has no "
                        "log p(x) without one; score x with adapt(support).log_prob(x)")
