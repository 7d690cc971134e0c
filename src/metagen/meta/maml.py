"""MAML (Finn et al. 2017) on a base generator, written with torch.func.

The meta-parameters are the generator's initial weights. For each task, the inner loop takes
`inner_steps` SGD steps on the support loss; the outer loss is the query loss at the adapted weights:
    theta_t = theta - lr * grad L_support(theta)   (repeated),     meta_loss = mean_t L_query(theta_t).
Second order by default: the outer gradient flows through the inner gradients. `first_order = true`
detaches them (FOMAML). The tasks of a meta-batch run under `vmap`; `adapt` runs the same inner loop
(with `eval_inner_steps` steps) on one support set.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch.func import grad

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError
from metagen.generators.base import Generator, build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.meta.functional import ParamPattern, Params, Vectorize, call, map_tasks, select, use_vmap
from metagen.registry import LEARNERS


class InnerLoopConfig(LearnerConfig):
    """Settings shared by the learners that adapt generator weights with inner SGD steps."""

    inner_steps: int = Field(1, ge=0)
    eval_inner_steps: int = Field(10, ge=0)  # steps taken by `adapt` at evaluation time
    inner_lr: float = Field(1e-3, gt=0)
    adapt_params: ParamPattern = "."  # regex over generator parameter names adapted in the inner loop ("." = all)
    vectorize: Vectorize = "auto"  # "vmap", "loop" or "auto" (vmap on CUDA, loop on CPU)


class InnerLoop(MetaLearner):
    """A base generator whose `adapt_params` weights are adapted by SGD steps on the support loss."""

    def __init__(self, cfg: InnerLoopConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.generator = build_generator(generator_cfg, self.example_shape)
        if not select(self.generator, cfg.adapt_params):
            raise ConfigError(f"learner.adapt_params = {cfg.adapt_params!r} matches no generator parameter")
        # vmap's treatment of random ops (e.g. the VAE's reparameterisation noise): "different" per task.
        self.randomness: Literal["different", "same", "error"] = "different"
        self._under_vmap = False  # set by map_tasks while its tasks run under vmap

    def support_grads(self, params: Params, support: torch.Tensor, create_graph: bool) -> Params:
        """Gradients of the support loss at `params`, differentiable in `params` when `create_graph`."""
        if self._under_vmap:
            grads = grad(lambda p: call(self.generator, p, "loss", support))(params)
            return grads if create_graph else {k: g.detach() for k, g in grads.items()}
        # One task at a time: plain autograd, which skips torch.func.grad's per-op wrapping (it cost 6% against
        # the textbook autograd loop at 5 inner steps on the VAE; docs/benchmarks.md).
        with torch.enable_grad():
            leaves = {k: p if p.requires_grad else p.detach().requires_grad_() for k, p in params.items()}
            loss = call(self.generator, leaves, "loss", support)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph,
                                        allow_unused=True, materialize_grads=True)
        return dict(zip(leaves, grads, strict=True))

    def inner_loop(self, params: Params, support: torch.Tensor, steps: int, create_graph: bool) -> Params:
        """`steps` SGD steps on the support loss, starting from `params`; support [K, *example_shape]."""
        for _ in range(steps):
            params = self.inner_update(params, self.support_grads(params, support, create_graph))
        return params

    def inner_update(self, params: Params, grads: Params) -> Params:
        """One inner SGD step; Meta-SGD overrides it with learned per-parameter rates."""
        return {k: p - self.cfg.inner_lr * grads[k] for k, p in params.items()}

    def map_tasks(self, fn: Any, *args: Any) -> Any:
        """fn(params, *task args) per task: the first argument is shared, the others batched [T, ...]."""
        vmapped = use_vmap(self.cfg.vectorize, next(self.parameters()).device)
        self._under_vmap = vmapped
        try:
            return map_tasks(fn, args, (None,) + (0,) * (len(args) - 1), vmapped, self.randomness)
        finally:
            self._under_vmap = False

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        params = {k: v.detach() for k, v in select(self.generator, self.cfg.adapt_params).items()}
        adapted = self.inner_loop(params, support, self.cfg.eval_inner_steps, create_graph=False)
        return GeneratorAdapted(self.generator, {k: v.detach() for k, v in adapted.items()})

    def prior(self, generator: torch.Generator | None = None) -> Adapted:
        return GeneratorAdapted(self.generator)

    def zero_shot(self) -> Adapted:
        return GeneratorAdapted(self.generator)  # the meta-learned initialisation


class MAMLConfig(InnerLoopConfig):
    name: Literal["maml"] = "maml"
    first_order: bool = False


@LEARNERS.register("maml")
class MAML(InnerLoop):
    Config = MAMLConfig

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        if generator.adversarial:
            return (f"learner '{cls.registry_name}' differentiates the query loss through the inner steps, which "
                    f"a two-player game ('{generator.registry_name}') has no single loss for; use learner.name = "
                    "'reptile' (FIGR), 'context', 'hyper', 'finetune' or 'unconditional'")
        return None

    def task_loss(self, params: Params, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        adapted = self.inner_loop(params, support, self.cfg.inner_steps, create_graph=not self.cfg.first_order)
        return call(self.generator, adapted, "loss", query)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        params = select(self.generator, self.cfg.adapt_params)
        return self.map_tasks(self.task_loss, params, tasks.support, tasks.query).mean()  # mean over [T]
