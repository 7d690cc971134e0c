"""A small spatial model, trained briefly, draws its support's concept: its samples lie nearer to their own support
set than to other held-out concepts' support sets, in a fixed shift-tolerant feature space (3x3 blur, 2x2 average
pooling: 14x14 features). A fixed space, not a small trained network, so the test cannot fail on a classifier's luck."""

import torch
import torch.nn.functional as F

from metagen.checkpoint import load_learner
from metagen.config import load_config
from metagen.data import fixed_tasks, load_splits
from metagen.train import train

SMALL = ["learner.map_dim=8", "learner.channels=16", "generator.channels=16", "generator.hidden=64",
         "train.meta_batch=8", "train.val_every=0", "train.patience=0", "train.log_every=50",
         "train.ckpt_every=1000", "train.steps=200"]


def features(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, 28, 28] -> [N, 196]: blurred and pooled, so a stroke one pixel off is still near."""
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return F.avg_pool2d(blurred, 2).flatten(1)


def test_adapted_samples_are_nearer_their_own_support_than_other_concepts(tmp_path):
    train(load_config("glyphs-spatial", SMALL), tmp_path / "run", progress=False)
    learner, ckpt = load_learner(tmp_path / "run")
    splits = load_splits(ckpt.config.data, ckpt.config.split)
    T = 12
    tasks = fixed_tasks(splits.held_out, 5, 2, seed=0, max_tasks=T)
    g = torch.Generator().manual_seed(0)
    support_f = features(tasks.support.flatten(0, 1)).view(T, 5, -1)  # [T, K, D]
    dist = torch.zeros(T, T)  # [task of the samples, task of the support set]: mean distance to its nearest image
    with torch.no_grad():
        for t in range(T):
            f = features(learner.eval().adapt(tasks.support[t]).sample(10, generator=g))  # [10, D]
            dist[t] = torch.cdist(f[None].expand(T, -1, -1), support_f).min(-1).values.mean(-1)
    own, others = dist.diag(), dist[~torch.eye(T, dtype=torch.bool)].view(T, T - 1)
    assert (own < others.mean(1)).all()  # every concept's samples are nearer its own support than the average other
    assert (dist.argmin(1) == torch.arange(T)).float().mean() >= 0.75  # and mostly nearest of all 12 supports
