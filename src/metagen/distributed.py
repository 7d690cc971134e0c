"""Data-parallel meta-training: each process takes a shard of every meta-batch (DDP semantics).

Launched with torchrun, e.g. `torchrun --standalone --nproc_per_node 2 --no-python metagen train ...`.
Every process builds the same learner and draws the same meta-batch (same seed; the episode sampler has its
own RNG), keeps its contiguous shard of the tasks, and back-propagates its share of the meta-loss,
(shard size / meta-batch) * meta_loss(shard); summing the gradients over processes (all-reduce) then gives
exactly the gradient of the whole meta-batch's loss, so every process takes the same optimizer step.
gloo on CPU, NCCL on CUDA. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metagen.data.episodes import Tasks
from metagen.errors import ConfigError


@dataclass(frozen=True)
class Group:
    """This process's place in the job; `Group()` is a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, tasks: Tasks) -> tuple[Tasks, float]:
        """This process's contiguous share of a meta-batch, and its weight in the batch mean."""
        n = len(tasks)
        if self.world == 1:
            return tasks, 1.0
        if n < self.world:
            raise ConfigError(f"train.meta_batch = {n} is smaller than the {self.world} processes; "
                              f"use at least {self.world} tasks per meta-batch")
        start, stop = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return tasks.subset(slice(start, stop)), (stop - start) / n

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """In-place sum over processes."""
        if self.world > 1:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def sum_grads_(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over processes (a missing gradient counts as zero)."""
        if self.world == 1:
            return
        for p in params:
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])  # one all-reduce instead of one per tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def init_group(device: str) -> Group:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, ...), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Group(rank, world, local_rank)


def device_for(group: Group, device: torch.device) -> torch.device:
    """One GPU per process: cuda means cuda:<local rank> in a multi-process job."""
    if group.world > 1 and device.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return device


def close_group(group: Group) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
