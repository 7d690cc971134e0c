"""Set-conditioned meta-generator (Neural Statistician, Edwards & Storkey 2017, used predictively).

A permutation-invariant set encoder maps the support set to q(c | S) = N(mu, sigma^2) over a context c;
the base generator models each query example given c. The loss, per query example, is
    -[ sum_q ELBO(x_q | c) - beta * KL(q(c|S) || N(0, I)) ] / Q,   c ~ q(c|S).
With beta = 1 it bounds -log p(query set) / Q. The default beta = 0.1: a character's shape costs tens of
nats of context, paid once per task but spread over only Q query images, so at beta = 1 the context
collapses onto the prior and is ignored (measured on Omniglot: no gain over the unconditional VAE).
q(c|S) also starts nearly deterministic (`init_logvar`), so c carries the support's signal from the first
step. `adapt` uses the posterior mean of c; `prior` draws c ~ N(0, I), a concept never seen.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.generators.base import build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.nets import example_encoder, gaussian_kl, mlp
from metagen.registry import LEARNERS


class ContextConfig(LearnerConfig):
    name: Literal["context"] = "context"
    context_dim: int = Field(64, ge=1)
    hidden: int = Field(256, ge=1)
    channels: int = Field(32, ge=1)  # set encoder's first conv width
    kl_weight: float = Field(0.1, ge=0)  # beta, the weight of KL(q(c|S) || p(c)); 1 gives a true bound
    # Initial log-variance of q(c|S). Near-deterministic at the start, so c carries the support's signal
    # instead of N(0, I) noise that the decoder learns to ignore.
    init_logvar: float = Field(-6.0, le=0)


class SetEncoder(nn.Module):
    """Support sets [T, K, *example_shape] -> q(c|S) as (mu, logvar), each [T, context_dim]; mean pooling over K."""

    def __init__(self, example_shape: tuple[int, ...], channels: int, hidden: int, context_dim: int,
                 init_logvar: float = 0.0, vocab_size: int = 0) -> None:
        super().__init__()
        self.embed = example_encoder(example_shape, channels, hidden, vocab_size)
        self.post = mlp(hidden, hidden, 2 * context_dim)
        with torch.no_grad():
            self.post[-1].bias[context_dim:] = init_logvar

    def forward(self, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T, K = support.shape[:2]
        h = self.embed(support.flatten(0, 1)).view(T, K, -1).mean(1)  # [T, hidden]
        mu, logvar = self.post(h).chunk(2, -1)  # [T, D] each
        return mu, logvar.clamp(-12, 8)


@LEARNERS.register("context")
class SetConditioned(MetaLearner):
    Config = ContextConfig
    stochastic_prior = True

    def __init__(self, cfg: ContextConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.encoder = SetEncoder(self.example_shape, cfg.channels, cfg.hidden, cfg.context_dim, cfg.init_logvar,
                                  getattr(generator_cfg, "vocab_size", 0))
        self.generator = build_generator(generator_cfg, self.example_shape, cond_dim=cfg.context_dim,
                                         memory_dim=self.memory_dim(cfg))

    def memory_dim(self, cfg: ContextConfig) -> int:
        """Width of the memory tokens the generator attends over besides the code; 0: none (here)."""
        return 0

    def memory(self, support: torch.Tensor) -> torch.Tensor | None:
        """Support sets [T, K, *example_shape] -> memory tokens [T, M, memory_dim], or None without a memory."""
        return None

    def blank_memory(self) -> torch.Tensor | None:
        """The memory of no support at all (zero-shot, prior): one zero token [1, memory_dim], or None."""
        p = next(self.parameters())
        return torch.zeros(1, self.generator.memory_dim, device=p.device, dtype=p.dtype) if self.generator.memory_dim \
            else None

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        mu, logvar = self.encoder(tasks.support)  # [T, D]
        c = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        _T, Q = tasks.query.shape[:2]
        memory = self.memory(tasks.support)  # [T, M, E] or None
        memory = None if memory is None else memory.repeat_interleave(Q, 0)
        nll = self.generator.loss(tasks.query.flatten(0, 1), c.repeat_interleave(Q, 0), memory)  # per query example
        return nll + self.cfg.kl_weight * gaussian_kl(mu, logvar).mean() / Q

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        mu, _ = self.encoder(support[None])
        memory = self.memory(support[None])
        return GeneratorAdapted(self.generator, cond=mu[0], memory=None if memory is None else memory[0])

    def zero_shot(self) -> Adapted:
        p = next(self.parameters())
        return GeneratorAdapted(self.generator, cond=torch.zeros(self.cfg.context_dim, device=p.device, dtype=p.dtype),
                                memory=self.blank_memory())

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        p = next(self.parameters())
        c = torch.randn(self.cfg.context_dim, generator=generator, device=p.device, dtype=p.dtype)
        return GeneratorAdapted(self.generator, cond=c, memory=self.blank_memory())
