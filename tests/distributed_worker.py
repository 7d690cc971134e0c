"""Run by tests/test_distributed.py under torchrun: one sharded meta-step against the single-process step.

Every process builds the same learner and tasks, takes one reference step on the whole meta-batch alone,
and one step through the Trainer with its shard of the tasks and summed gradients; it writes the largest
parameter difference to <out>/<learner>.rank<r>.json. The VAE's reparameterisation noise is switched off
so that the loss does not depend on how the tasks are split between processes.
"""

import copy
import json
import sys
from pathlib import Path

import torch

from metagen.config import from_dict
from metagen.data import EpisodeSampler
from metagen.data.concepts import ConceptSet
from metagen.data.episodes import Tasks
from metagen.distributed import close_group, init_group
from metagen.meta import build_learner
from metagen.train import Trainer

LEARNERS = {
    "maml": {"inner_steps": 2, "inner_lr": 0.05},
    "context": {"context_dim": 4, "hidden": 16, "channels": 4},
    "hyper": {"code_dim": 4, "hidden": 16, "channels": 4, "rank": 2},
}


def _tasks(T=5, K=3, Q=2):  # T = 5 over 2 processes: shards of 2 and 3 tasks
    g = torch.Generator().manual_seed(1)
    s = torch.bernoulli(torch.full((T, K, 1, 8, 8), 0.3, dtype=torch.float64), generator=g)
    q = torch.bernoulli(torch.full((T, Q, 1, 8, 8), 0.3, dtype=torch.float64), generator=g)
    return Tasks(s, q, torch.arange(T), torch.zeros(T, K, dtype=torch.long), torch.zeros(T, Q, dtype=torch.long))


def main(out: Path) -> None:
    torch.randn_like = torch.zeros_like  # noise-free VAE and context: the loss is a function of the tasks only
    group = init_group("cpu")
    concepts = ConceptSet([torch.zeros(4, 1, 8, 8)] * 3, ["a", "b", "c"], ["g"] * 3)
    tasks = _tasks()
    for name, learner_cfg in LEARNERS.items():
        cfg = from_dict({"data": {"image_size": 8},
                         "generator": {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16},
                         "learner": {"name": name, **learner_cfg},
                         "train": {"lr": 1e-2, "grad_clip": 1.0, "meta_batch": 5}})
        torch.manual_seed(0)
        learner = build_learner(cfg, (1, 8, 8)).double()
        reference = copy.deepcopy(learner)
        init = {n: p.detach().clone() for n, p in learner.named_parameters()}
        optimizer = torch.optim.Adam(reference.parameters(), lr=cfg.train.lr)
        ref_loss = reference.meta_loss(tasks)
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in reference.parameters() if p.grad is not None], cfg.train.grad_clip)
        optimizer.step()
        trainer = Trainer(cfg, learner, EpisodeSampler(concepts, 0), progress=False, group=group)
        loss, _ = trainer._optimize(tasks)
        ref = dict(reference.named_parameters())
        diff = max((p - ref[n]).abs().max().item() for n, p in learner.named_parameters())
        moved = max((p - init[n]).abs().max().item() for n, p in learner.named_parameters())
        (out / f"{name}.rank{group.rank}.json").write_text(json.dumps(
            {"world": group.world, "loss": loss, "ref_loss": ref_loss.item(), "max_diff": diff, "moved": moved}))
    close_group(group)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
