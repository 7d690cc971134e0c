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

from metagen.data.episodes import Tasks
from metagen.meta.functional import Params, call, select
from metagen.meta.maml import InnerLoop, InnerLoopConfig
from metagen.registry import LEARNERS


class ReptileConfig(InnerLoopConfig):
    name: Literal["reptile"] = "reptile"
    inner_steps: int = Field(5, ge=1)
    eval_inner_steps: int = Field(20, ge=0)


@LEARNERS.register("reptile")
class Reptile(InnerLoop):
    Config = ReptileConfig

    def adapt_and_score(self, params: Params, train_x: torch.Tensor,
                        query: torch.Tensor) -> tuple[Params, torch.Tensor]:
        """One task: phi after the inner loop on train_x, and the query loss at phi (for shared parameters)."""
        phi = self.inner_loop(params, train_x, self.cfg.inner_steps, create_graph=False)
        return phi, call(self.generator, phi, "loss", query)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        theta = select(self.generator, self.cfg.adapt_params)
        start = {k: v.detach() for k, v in theta.items()}  # phi carries no graph back to theta
        train_x = torch.cat([tasks.support, tasks.query], 1) if self.training else tasks.support  # [T, N, ...]
        phi, losses = self.map_tasks(self.adapt_and_score, start, train_x, tasks.query)  # {name: [T, ...]}, [T]
        # d/d theta of 0.5 * ||theta - mean_t phi_t||^2 is the Reptile direction (theta - mean_t phi_t).
        surrogate = sum(0.5 * (theta[k] - phi[k].mean(0)).pow(2).sum() for k in theta)
        return losses.mean() + surrogate - surrogate.detach()
