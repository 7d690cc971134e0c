"""Hypernetwork meta-generator: the support set's code z sets the generator's weights, theta_t = f_phi(z).

A permutation-invariant set encoder gives q(z | S) = N(mu, sigma^2); a hypernetwork maps z to the weights
of the generator layers named by `hyper_params` (the others are shared by all tasks):
    theta_t[name] = theta[name] + delta_name(h),   h = trunk(z),
either in full (`rank = 0`: a linear head emits every entry) or as a low-rank product for matrices and
conv kernels (`rank = r`: delta = U V with U [out, r] and V [r, in * kernel], so it scales to conv layers;
biases are always emitted in full). The deltas start at zero, so training starts from one shared
generator. Each task's generator runs with `functional_call` under `vmap` over the tasks. The loss is the
set-conditioned one: query negative ELBO + kl_weight * KL(q(z|S) || N(0, I)) / Q. `prior()` draws
z ~ N(0, I) and so emits a generator of a new concept.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError
from metagen.generators.base import build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.meta.context import SetEncoder
from metagen.meta.functional import ParamPattern, Params, Vectorize, call, map_tasks, select, use_vmap
from metagen.nets import gaussian_kl
from metagen.registry import LEARNERS


class HyperConfig(LearnerConfig):
    name: Literal["hyper"] = "hyper"
    code_dim: int = Field(64, ge=1)
    hidden: int = Field(256, ge=1)  # set encoder and hypernetwork trunk width
    channels: int = Field(32, ge=1)  # set encoder's first conv width
    # Generator parameters emitted per task; None: the family's output side (Generator.task_params).
    hyper_params: ParamPattern | None = None
    rank: int = Field(4, ge=0)  # 0: emit full weights; r > 0: low-rank deltas for matrices and kernels
    kl_weight: float = Field(0.1, ge=0)
    init_logvar: float = Field(-6.0, le=0)
    vectorize: Vectorize = "auto"  # "vmap", "loop" or "auto" (vmap on CUDA, loop on CPU)


class WeightHead(nn.Module):
    """h [T, hidden] -> a weight delta [T, *shape] for one generator parameter, full or low-rank."""

    def __init__(self, hidden: int, shape: torch.Size, rank: int) -> None:
        super().__init__()
        self.shape, self.rank = tuple(shape), rank if len(shape) >= 2 else 0
        if self.rank:
            out, rest = shape[0], math.prod(shape[1:])
            self.u = nn.Linear(hidden, out * self.rank)
            self.v = nn.Linear(hidden, self.rank * rest)
            nn.init.zeros_(self.v.weight)  # delta = U V starts at zero with a live gradient through V
            nn.init.zeros_(self.v.bias)
        else:
            self.full = nn.Linear(hidden, math.prod(shape))
            nn.init.zeros_(self.full.weight)
            nn.init.zeros_(self.full.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[0]
        if not self.rank:
            return self.full(h).view(T, *self.shape)
        u = self.u(h).view(T, self.shape[0], self.rank)  # [T, out, r]
        v = self.v(h).view(T, self.rank, -1)  # [T, r, in * kernel]
        return (u @ v).view(T, *self.shape) / math.sqrt(self.rank)


@LEARNERS.register("hyper")
class HyperNetwork(MetaLearner):
    Config = HyperConfig
    stochastic_prior = True

    def __init__(self, cfg: HyperConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.generator = build_generator(generator_cfg, self.example_shape)
        pattern = self.generator.task_params if cfg.hyper_params is None else cfg.hyper_params
        targets = select(self.generator, pattern)
        if not targets:
            raise ConfigError(f"learner.hyper_params = {pattern!r} matches no generator parameter")
        self.names = list(targets)
        self.encoder = SetEncoder(self.example_shape, cfg.channels, cfg.hidden, cfg.code_dim, cfg.init_logvar,
                                  getattr(generator_cfg, "vocab_size", 0))
        self.trunk = nn.Sequential(nn.Linear(cfg.code_dim, cfg.hidden), nn.ELU())
        self.heads = nn.ModuleList(WeightHead(cfg.hidden, p.shape, cfg.rank) for p in targets.values())
        self.randomness: Literal["different", "same", "error"] = "different"  # vmap's noise per task

    def weights(self, z: torch.Tensor) -> Params:
        """Codes z [T, code_dim] -> per-task weights {name: [T, *shape]} of the `hyper_params` layers."""
        h = self.trunk(z)
        base = dict(self.generator.named_parameters())
        return {n: base[n] + head(h) for n, head in zip(self.names, self.heads, strict=True)}

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        mu, logvar = self.encoder(tasks.support)  # [T, D]
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        params = self.weights(z)

        def task_loss(p: Params, query: torch.Tensor) -> torch.Tensor:
            return call(self.generator, p, "loss", query)

        vmapped = use_vmap(self.cfg.vectorize, next(self.parameters()).device)
        nll = map_tasks(task_loss, (params, tasks.query), (0, 0), vmapped, self.randomness)  # [T]
        Q = tasks.query.shape[1]
        return nll.mean() + self.cfg.kl_weight * gaussian_kl(mu, logvar).mean() / Q

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        mu, _ = self.encoder(support[None])
        return GeneratorAdapted(self.generator, {k: v[0] for k, v in self.weights(mu).items()})

    def zero_shot(self) -> Adapted:
        p = next(self.parameters())
        z = torch.zeros(1, self.cfg.code_dim, device=p.device, dtype=p.dtype)  # the code's prior mean
        return GeneratorAdapted(self.generator, {k: v[0] for k, v in self.weights(z).items()})

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        p = next(self.parameters())
        z = torch.randn(1, self.cfg.code_dim, generator=generator, device=p.device, dtype=p.dtype)
        return GeneratorAdapted(self.generator, {k: v[0] for k, v in self.weights(z).items()})
