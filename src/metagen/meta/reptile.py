"""Reptile (Nichol et al. 2018), as FIGR (Clouâtre & Demers 2019) uses it for few-shot generation.

For each task, `inner_steps` plain SGD steps on the task's examples (support and query together) move
theta to phi_t; the outer update moves theta toward the adapted weights:
    theta <- theta + eps * mean_t (phi_t - theta).
The training loop applies that as a gradient: `meta_loss` returns a surrogate whose gradient with respect
to theta is (theta - mean_t phi_t), so `train.optimizer = "sgd"` with `train.lr = eps` is exactly the update
above, and Adam (the default) is Reptile with an Adam outer step (Nichol et al. 2018, sec. 5).
The surrogate's value is the query loss at the adapted weights, which is what the logs show. Generator
parameters that `adapt_params` leaves out are shared across tasks and trained by that query loss.
In eval mode (validation) the inner loop sees the support only, so the value is an honest held-out loss.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.func import grad, vmap

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError
from metagen.generators.base import build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.meta.functional import ParamPattern, Params, Vectorize, call, select, use_vmap
from metagen.registry import LEARNERS


class ReptileConfig(LearnerConfig):
    name: Literal["reptile"] = "reptile"
    inner_steps: int = Field(5, ge=1)
    eval_inner_steps: int = Field(20, ge=0)  # steps taken by `adapt` at evaluation time
    inner_lr: float = Field(1e-3, gt=0)
    adapt_params: ParamPattern = "."  # regex over generator parameter names adapted in the inner loop ("." = all)
    vectorize: Vectorize = "auto"  # "vmap", "loop" or "auto" (vmap on CUDA, loop on CPU)


@LEARNERS.register("reptile")
class Reptile(MetaLearner):
    Config = ReptileConfig

    def __init__(self, cfg: ReptileConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.generator = build_generator(generator_cfg, self.example_shape)
        if not select(self.generator, cfg.adapt_params):
            raise ConfigError(f"learner.adapt_params = {cfg.adapt_params!r} matches no generator parameter")
        self.randomness: Literal["different", "same", "error"] = "different"

    def inner_loop(self, params: Params, x: torch.Tensor, steps: int) -> Params:
        """`steps` SGD steps on the loss of x [N, *example_shape], from `params` (no graph kept)."""
        for _ in range(steps):
            grads = grad(lambda p: call(self.generator, p, "loss", x))(params)
            params = {k: (p - self.cfg.inner_lr * grads[k]).detach() for k, p in params.items()}
        return params

    def adapt_and_score(self, params: Params, train_x: torch.Tensor,
                        query: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """One task: phi after the inner loop on train_x, and the query loss at phi (for shared parameters)."""
        phi = self.inner_loop(params, train_x, self.cfg.inner_steps)
        return phi, call(self.generator, phi, "loss", query)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        theta = select(self.generator, self.cfg.adapt_params)
        start = {k: v.detach() for k, v in theta.items()}
        train_x = torch.cat([tasks.support, tasks.query], 1) if self.training else tasks.support  # [T, N, ...]
        if use_vmap(self.cfg.vectorize, next(self.parameters()).device):
            phi, losses = vmap(self.adapt_and_score, in_dims=(None, 0, 0), randomness=self.randomness)(
                start, train_x, tasks.query)  # phi: {name: [T, *shape]}, losses: [T]
        else:
            results = [self.adapt_and_score(start, x, q) for x, q in zip(train_x, tasks.query, strict=True)]
            phi = {k: torch.stack([r[0][k] for r in results]) for k in start}
            losses = torch.stack([r[1] for r in results])
        # d/d theta of 0.5 * ||theta - mean_t phi_t||^2 is the Reptile direction (theta - mean_t phi_t).
        surrogate = sum(0.5 * (theta[k] - phi[k].mean(0)).pow(2).sum() for k in theta)
        return losses.mean() + surrogate - surrogate.detach()

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        params = {k: v.detach() for k, v in select(self.generator, self.cfg.adapt_params).items()}
        return GeneratorAdapted(self.generator, self.inner_loop(params, support, self.cfg.eval_inner_steps))

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        return GeneratorAdapted(self.generator)
