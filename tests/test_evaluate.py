import math

import pytest
import torch

from conftest import tiny_config
from metagen.data.episodes import Tasks
from metagen.evaluate import markdown_table, nll_curve, sample_tasks
from metagen.meta.base import Adapted


class _Const(Adapted):
    def __init__(self, value: float, support: torch.Tensor) -> None:
        self.value, self.support = value, support

    def sample(self, n, generator=None):
        return self.support[:1].expand(n, *self.support.shape[1:])

    def log_prob(self, x, iw_samples=1000):
        return torch.full((len(x),), -self.value)


class _Learner:
    """Scores every query at NLL = 10 / K; adapting to 2 examples "diverges"."""

    def adapt(self, support):
        k = len(support)
        return _Const(math.nan if k == 2 else 10.0 / k, support)


def _tasks(T=4, K=3, Q=2):
    return Tasks(torch.rand(T, K, 1, 4, 4), torch.rand(T, Q, 1, 4, 4), torch.arange(T),
                 torch.zeros(T, K, dtype=torch.long), torch.zeros(T, Q, dtype=torch.long))


def test_nll_curve_uses_k_support_examples_and_flags_divergence():
    curve = nll_curve(_Learner(), _tasks(), [1, 2, 3], iw_samples=1)
    assert curve[1]["nll"] == 10.0 and curve[1]["ci95"] == 0.0 and curve[1]["n_tasks"] == 4
    assert math.isclose(curve[3]["nll"], 10 / 3, rel_tol=1e-6)  # float32 log-likelihoods
    assert curve[2]["diverged"] == 4 and math.isnan(curve[2]["nll"])
    report = {"shots": [1, 2], "iw_samples": 1, "methods": {"m": {"nll": {str(k): curve[k] for k in (1, 2)}}},
              "data": {"source": "s", "held_out_groups": ["g"], "n_tasks": 4, "queries_per_task": 2}}
    table = markdown_table(report)
    assert "| m | 10.00 ± 0.00 | diverged on 4/4 tasks |" in table


def test_sample_tasks_shape():
    samples = sample_tasks(_Learner(), _tasks(), shots=2, n=5)
    assert samples.shape == (4, 5, 1, 4, 4)


def test_evaluation_may_change_adaptation_settings_only(tmp_path, tiny):
    import pytest

    from metagen.errors import ConfigError
    from metagen.evaluate import adapt_overrides, load_methods
    from metagen.train import train

    assert adapt_overrides(["learner.eval_inner_steps=1"]) == {"eval_inner_steps": 1}
    for bad in ("train.lr=1", "learner.inner_lr=0.1", "learner"):
        with pytest.raises(ConfigError):
            adapt_overrides([bad])
    train(tiny(learner={"name": "maml", "eval_inner_steps": 5}), tmp_path / "maml", progress=False)
    train(tiny(), tmp_path / "context", progress=False)
    _, methods = load_methods([tmp_path / "maml", tmp_path / "context"], "cpu", {"eval_inner_steps": 1})
    assert [m.name for m in methods] == ["maml (eval_inner_steps=1)", "context"]
    assert methods[0].learner.cfg.eval_inner_steps == 1
    with pytest.raises(ConfigError, match="no evaluated learner has learner.finetune_steps"):
        load_methods([tmp_path / "context"], "cpu", {"finetune_steps": 3})
    with pytest.raises(ConfigError, match="learner.eval_inner_steps"):
        load_methods([tmp_path / "maml"], "cpu", {"eval_inner_steps": -1})


def test_zero_shots_score_the_unadapted_model_or_say_why_not(tiny):
    from metagen.meta.base import build_learner

    torch.manual_seed(0)
    binary = (torch.rand(2, 5, 1, 8, 8) < 0.3).float()
    tasks = Tasks(binary[:, :3], binary[:, 3:], torch.arange(2), torch.zeros(2, 3, dtype=torch.long),
                  torch.zeros(2, 2, dtype=torch.long))
    for name in ("context", "maml", "hyper", "unconditional", "finetune"):
        learner = build_learner(tiny(learner={"name": name}), (1, 8, 8)).eval()
        curve = nll_curve(learner, tasks, [0, 1], iw_samples=2)
        assert math.isfinite(curve[0]["nll"]) and math.isfinite(curve[1]["nll"]), name
    copy = build_learner(tiny(learner={"name": "copy"}), (1, 8, 8))
    curve = nll_curve(copy, tasks, [0, 1], iw_samples=2)
    assert curve[0]["nll"] is None and curve[0]["why"] == "needs a support example"
    report = {"shots": [0, 1], "iw_samples": 2, "methods": {"copy": {"nll": {str(k): curve[k] for k in (0, 1)}}},
              "data": {"source": "s", "held_out_groups": ["g"], "n_tasks": 2, "queries_per_task": 2}}
    assert "| copy | n/a (needs a support example) |" in markdown_table(report)


def test_checkpoints_of_one_split_evaluate_together_whatever_their_background_augmentation(tmp_path):
    from metagen.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from metagen.errors import CheckpointError
    from metagen.evaluate import load_methods
    from metagen.meta import build_learner

    runs = {"plain": {}, "mirrored": {"data": {"mirrors": True, "rotations": True}},
            "other-split": {"split": {"seed": 3}}}
    for name, extra in runs.items():
        cfg = tiny_config(**extra)
        (tmp_path / name).mkdir()
        save_checkpoint(tmp_path / name / CHECKPOINT_NAME, cfg, 1, build_learner(cfg, (1, 28, 28)))
    _, methods = load_methods([tmp_path / "plain", tmp_path / "mirrored"], "cpu")
    assert len(methods) == 2  # mirrors and rotations only add background concepts: same held-out tasks
    with pytest.raises(CheckpointError, match="different data or split"):
        load_methods([tmp_path / "plain", tmp_path / "other-split"], "cpu")
