"""The meta-learner surface: `meta_loss(tasks)` to train, `adapt(support) -> Adapted` to use."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from metagen.config import Config, GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import DataError
from metagen.generators.base import Generator
from metagen.meta.functional import Params, call


class Adapted:
    """A generator specialised to one concept: `sample(n)` and, where the base has one, `log_prob(x)`."""

    has_log_prob: bool = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000) -> torch.Tensor:
        raise NotImplementedError


class GeneratorAdapted(Adapted):
    """A base generator run with task-specific parameters, a task context vector and/or a support memory."""

    def __init__(self, generator: Generator, params: Params | None = None, cond: torch.Tensor | None = None,
                 memory: torch.Tensor | None = None) -> None:
        self.generator, self.params, self.cond, self.memory = generator, params or {}, cond, memory
        self.has_log_prob = generator.has_log_prob

    def sample(self, n: int, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """`options` go to the generator's sample (text: temperature, top_k, prompt)."""
        return call(self.generator, self.params, "sample", n, cond=self.cond, memory=self.memory, generator=generator,
                    **options)

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000) -> torch.Tensor:
        return call(self.generator, self.params, "log_prob", x, cond=self.cond, memory=self.memory,
                    iw_samples=iw_samples)


class MetaLearner(nn.Module):
    """Wraps a base generator; subclasses define `Config`, `meta_loss` and `adapt`."""

    Config: ClassVar[type[LearnerConfig]]
    uses_generator: ClassVar[bool] = True  # False for learners with no base generator (copy)
    meta_trained: ClassVar[bool] = True  # False for learners that only train at adapt time (scratch)

    def __init__(self, cfg: LearnerConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg, self.example_shape = cfg, tuple(example_shape)

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        """Why this learner cannot run `generator` (a class), or None; checked when a config loads."""
        return None

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        """Scalar loss over a task batch (support [T, K, ...], query [T, Q, ...]), per query example."""
        raise NotImplementedError

    def adapt(self, support: torch.Tensor) -> Adapted:
        """support [K, *example_shape] -> a generator of that concept."""
        raise NotImplementedError

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        """A generator with no support set (a new concept drawn from the prior, or the meta-learned init)."""
        raise DataError(f"learner '{self.cfg.name}' cannot generate without a support set; use `metagen adapt`")

    def zero_shot(self) -> Adapted:
        """The generator before any example of the concept (k = 0): the meta-learned initialisation, or the
        generator at the set code's prior mean. Learners that need a support set raise."""
        raise DataError(f"learner '{self.cfg.name}' needs at least one support example; evaluate k >= 1")

    def check_support(self, support: torch.Tensor) -> None:
        if support.dim() != len(self.example_shape) + 1 or tuple(support.shape[1:]) != self.example_shape:
            shape = ", ".join(map(str, self.example_shape))
            raise DataError(f"support must be [K, {shape}], got {list(support.shape)}")
        if support.shape[0] == 0:
            raise DataError("the support set is empty; give at least one example")


def build_learner(config: Config, example_shape: tuple[int, ...]) -> MetaLearner:
    from metagen.registry import LEARNERS

    return LEARNERS.get(config.learner.name)(config.learner, config.generator, example_shape)
