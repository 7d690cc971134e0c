"""The meta-learner surface: `meta_loss(tasks)` to train, `adapt(support) -> Adapted` to use."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from metagen.config import Config, GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import DataError
from metagen.generators.base import Generator
from metagen.meta.functional import Params, call


@contextmanager
def seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Run the block on a global RNG seeded from `generator` (restored after), so code that draws from the
    global RNG (importance samples, dequantization noise, diffusion timesteps) is reproducible per call."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    devices = [generator.device.index or 0] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Adapted:
    """A generator specialised to one concept: `sample(n)` and, where the base has one, `log_prob(x)`."""

    has_log_prob: bool = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x | concept) per example, [N] nats (a stochastic lower bound for latent-variable families,
        tighter with `iw_samples`); `generator` makes the estimate reproducible."""
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

    def log_prob(self, x: torch.Tensor, iw_samples: int = 1000,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        with seeded(generator):
            return call(self.generator, self.params, "log_prob", x, cond=self.cond, memory=self.memory,
                        iw_samples=iw_samples)


class MetaLearner(nn.Module):
    """Wraps a base generator; subclasses define `Config`, `meta_loss` and `adapt`."""

    Config: ClassVar[type[LearnerConfig]]
    uses_generator: ClassVar[bool] = True  # False for learners with no base generator (copy)
    meta_trained: ClassVar[bool] = True  # False for learners that only train at adapt time (scratch)
    # True where `prior` draws a random concept (a set code from N(0, I)); the marginal then averages over them.
    stochastic_prior: ClassVar[bool] = False

    def __init__(self, cfg: LearnerConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg, self.example_shape = cfg, tuple(example_shape)

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        """Why this learner cannot run `generator` (a class), or None; checked when a config loads."""
        return None

    def fit_data(self, config: Config, splits: Any, data_dir: str | None) -> None:
        """Read what the learner learns from besides the examples (the programs learner: pen trajectories);
        `metagen train` calls it with the background and validation splits before the first step. Most
        learners need nothing."""

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        """Scalar loss over a task batch (support [T, K, ...], query [T, Q, ...]), per query example."""
        raise NotImplementedError

    def adapt(self, support: torch.Tensor) -> Adapted:
        """support [K, *example_shape] -> a generator of that concept. Deterministic: learners with a
        posterior over a set code condition on its mean (context, hyper), the spatial learner on the mean of
        the support's maps; gradient learners take their inner steps on the whole support."""
        raise NotImplementedError

    def marginal_log_prob(self, x: torch.Tensor, iw_samples: int = 1000, concepts: int = 100,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) with no support set, [N] nats: the likelihood of x as an example of *some* concept.

        Learners with a prior over concepts (context, hyper) average p(x | concept) over `concepts` draws
        from it (log-mean-exp: a Monte Carlo estimate, a lower bound in expectation); learners whose k = 0
        generator is a model of every concept (unconditional, finetune, MAML/Meta-SGD/Reptile's
        initialisation) score x under it. Learners with no prior over concepts (spatial, attention, copy,
        scratch) raise a DataError.
        """
        if concepts < 1:
            raise DataError(f"concepts must be at least 1, got {concepts}")
        try:
            models = ([self.prior(generator) for _ in range(concepts)] if self.stochastic_prior
                      else [self.zero_shot()])
        except DataError:
            raise DataError(f"learner '{self.cfg.name}' has no prior over concepts, so no log p(x) without a "
                            "support set; score x with adapt(support).log_prob(x)") from None
        lp = torch.stack([m.log_prob(x, iw_samples, generator=generator) for m in models])  # [S, N]
        return torch.logsumexp(lp, 0) - math.log(len(models))

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
