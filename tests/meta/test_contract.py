"""One table, every meta-learner, the same checks (the surface every learner promises)."""

import pytest
import torch

from metagen.config import from_dict
from metagen.data.episodes import Tasks
from metagen.errors import ConfigError, DataError
from metagen.meta import build_learner
from metagen.registry import LEARNERS

GEN = {"name": "vae", "latent_dim": 4, "channels": 4, "hidden": 16}
LEARNER_CFG = {
    "context": {"context_dim": 4, "hidden": 16, "channels": 4},
    "maml": {"inner_steps": 1, "eval_inner_steps": 2, "inner_lr": 0.01},
    "metasgd": {"inner_steps": 1, "eval_inner_steps": 2, "inner_lr": 0.01},
    "reptile": {"inner_steps": 2, "eval_inner_steps": 2, "inner_lr": 0.01},
    "unconditional": {},
    "attention": {"memory_dim": 8, "channels": 4},
    "hyper": {"code_dim": 4, "hidden": 16, "channels": 4, "rank": 2},
    "finetune": {"finetune_steps": 2},
    "scratch": {"finetune_steps": 2},
    "copy": {},
    "spatial": {"map_dim": 3, "channels": 4},
    "programs": {"strokes": 2, "control": 4, "channels": 4, "hidden": 16, "refine_steps": 2, "joint_steps": 2,
                 "fit_steps": 2},
}


# learners of one kind of data, whose surface is checked on that data in their own tests
OWN_TESTS = {"refine": "tests/data/test_fonts_refine.py (glyph pairs and a bank of training typefaces)"}


def test_the_table_covers_every_registered_learner():
    assert set(LEARNER_CFG) | set(OWN_TESTS) == set(LEARNERS.names())
    assert not set(LEARNER_CFG) & set(OWN_TESTS)


@pytest.fixture(params=sorted(LEARNER_CFG))
def learner(request):
    torch.manual_seed(0)
    cfg = from_dict({"generator": GEN, "learner": {"name": request.param, **LEARNER_CFG[request.param]}})
    learner = build_learner(cfg, (1, 28, 28))
    if request.param == "programs":  # it learns from pen trajectories: give the toy images made-up strokes
        from metagen.programs.model import NoiseModel

        tasks = _tasks()
        images = torch.cat([tasks.support, tasks.query], 1).flatten(0, 1)
        cps = torch.rand(len(images), 2, 4, 2, generator=torch.Generator().manual_seed(0)) * 60 + 20
        present = torch.tensor([[1.0, 0.0]]).expand(len(images), -1)
        learner.learn_strokes(images, cps, present, NoiseModel())
    return learner


def _tasks(T=3, K=4, Q=2):
    g = torch.Generator().manual_seed(0)
    return Tasks(torch.bernoulli(torch.full((T, K, 1, 28, 28), 0.2), generator=g),
                 torch.bernoulli(torch.full((T, Q, 1, 28, 28), 0.2), generator=g),
                 torch.arange(T), torch.zeros(T, K, dtype=torch.long), torch.zeros(T, Q, dtype=torch.long))


def test_meta_loss_is_a_finite_scalar_with_gradients(learner):
    if not learner.meta_trained:
        with pytest.raises(ConfigError, match="nothing to meta-train"):
            learner.meta_loss(_tasks())
        return
    loss = learner.meta_loss(_tasks())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())


def test_adapted_samples_and_log_prob(learner):
    tasks = _tasks()
    adapted = learner.adapt(tasks.support[0])
    x = adapted.sample(5, generator=torch.Generator().manual_seed(1))
    y = adapted.sample(5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (5, 1, 28, 28) and torch.equal(x, y)
    assert x.min() >= 0 and x.max() <= 1
    lp = adapted.log_prob(tasks.query[0], iw_samples=3)
    assert lp.shape == (2,) and torch.isfinite(lp).all() and (lp <= 0).all()


def test_one_shot_adaptation_works(learner):
    assert learner.adapt(_tasks(K=1).support[0]).sample(2).shape == (2, 1, 28, 28)


def test_bad_support_sets_are_clear_errors(learner):
    with pytest.raises(DataError, match="support set is empty"):
        learner.adapt(torch.zeros(0, 1, 28, 28))
    with pytest.raises(DataError, match=r"support must be \[K, 1, 28, 28\]"):
        learner.adapt(torch.zeros(3, 28, 28))


NO_PRIOR = {"copy", "scratch", "attention", "spatial"}  # nothing to generate from without a support set


def test_prior_samples_or_says_why_not(learner):
    if learner.cfg.name not in NO_PRIOR:
        assert learner.prior().sample(3).shape == (3, 1, 28, 28)
    else:
        with pytest.raises(DataError, match="cannot generate without a support set"):
            learner.prior()
