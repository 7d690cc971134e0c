import csv

import pytest
import torch

from metagen.checkpoint import load_checkpoint
from metagen.errors import CheckpointError, ConfigError, TrainingDiverged
from metagen.train import train


def _weights(run):
    return load_checkpoint(run).model


def test_resume_continues_to_the_same_step_and_weights(tmp_path, tiny):
    straight = train(tiny(train={"steps": 6}), tmp_path / "a", progress=False)
    train(tiny(train={"steps": 3}), tmp_path / "b", progress=False)
    resumed = train(tiny(train={"steps": 6}), tmp_path / "b", resume=True, progress=False)
    assert straight.step == resumed.step == 6
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: RNG streams and optimizer state restored
    rows = list(csv.DictReader((tmp_path / "b" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_logs_config_and_tensorboard_are_written(tmp_path, tiny):
    train(tiny(), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.json").is_file()
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    cfg = load_checkpoint(tmp_path / "run").config
    assert isinstance(cfg.split.test_groups, list)  # the resolved held-out groups are recorded


def test_existing_run_is_not_overwritten(tmp_path, tiny):
    train(tiny(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="pass --resume"):
        train(tiny(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny(), tmp_path / "empty", resume=True, progress=False)


def test_resume_with_another_model_is_refused(tmp_path, tiny):
    train(tiny(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="learner.name = 'context'.*'maml'"):
        train(tiny(learner={"name": "maml"}, train={"steps": 8}), tmp_path / "run", resume=True, progress=False)


def test_nan_loss_stops_with_a_clear_message_and_keeps_good_weights(tmp_path, tiny, monkeypatch):
    from metagen.meta.context import SetConditioned

    calls = {"n": 0}
    original = SetConditioned.meta_loss

    def flaky(self, tasks):
        calls["n"] += 1
        loss = original(self, tasks)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SetConditioned, "meta_loss", flaky)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 2; kept the last good weights.*--resume"):
        train(tiny(train={"steps": 10}), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2
    assert all(torch.isfinite(v).all() for v in ckpt.model.values())


def test_validation_keeps_the_best_weights_without_changing_training(tmp_path, tiny):
    from metagen.checkpoint import checkpoint_path

    split = {"val_fraction": 0.2}
    plain = train(tiny(split=split, train={"steps": 6}), tmp_path / "plain", progress=False)
    checked = train(tiny(split=split, train={"steps": 6, "val_every": 2}), tmp_path / "val", progress=False)
    assert plain.best_val is None and checked.best_val is not None
    a = _weights(tmp_path / "plain" / "checkpoint.safetensors")
    b = _weights(tmp_path / "val" / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # validation draws no training randomness
    best = load_checkpoint(tmp_path / "val" / "best.safetensors")
    assert best.step in (2, 4, 6) and best.best_val == checked.best_val
    assert checkpoint_path(tmp_path / "val").name == "best.safetensors"
    assert checkpoint_path(tmp_path / "plain").name == "checkpoint.safetensors"
    rows = list(csv.DictReader((tmp_path / "val" / "log.csv").open()))
    assert [r["val_loss"] != "" for r in rows] == [False, True, False, True, False, True]


def test_validation_needs_validation_concepts(tmp_path, tiny):
    from metagen.errors import ConfigError

    with pytest.raises(ConfigError, match="split.val_fraction"):
        train(tiny(train={"val_every": 2}), tmp_path / "run", progress=False)


def test_sgd_optimizer_and_resume_with_another_optimizer_is_refused(tmp_path, tiny):
    train(tiny(train={"optimizer": "sgd", "lr": 1e-4}), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="train.optimizer = 'sgd'"):
        train(tiny(train={"steps": 8}), tmp_path / "run", resume=True, progress=False)


def test_patience_stops_after_validations_without_improvement_and_survives_resume(tmp_path, tiny, monkeypatch):
    from metagen.errors import ConfigError
    from metagen.train import Trainer

    scores = iter([5.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    monkeypatch.setattr(Trainer, "validate", lambda self: next(scores))
    cfg = {"split": {"val_fraction": 0.2}, "train": {"steps": 20, "val_every": 2, "patience": 2}}
    result = train(tiny(**cfg), tmp_path / "run", progress=False)
    assert result.step == 8  # best at step 4, then two validations (6, 8) without improvement
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors").step == 8
    best = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert (best.step, best.best_val, best.best_step) == (4, 4.0, 4)
    # resumed with more patience: continues from 8 and stops two validations later (still best at 4)
    cfg["train"]["patience"] = 4
    assert train(tiny(**cfg), tmp_path / "run", resume=True, progress=False).step == 12
    with pytest.raises(ConfigError, match="train.patience needs validation"):
        train(tiny(train={"patience": 2}), tmp_path / "other", progress=False)


def test_lr_scale_gives_matching_parameters_their_own_learning_rate(tmp_path, tiny):
    from metagen.config import load_config
    from metagen.meta.base import build_learner
    from metagen.train import param_groups

    learner = build_learner(tiny(), (1, 28, 28))
    groups = param_groups(learner, 1e-3, {r"^encoder\.": 4.0, r"encoder|decoder": 0.5})
    names = {id(p): n for n, p in learner.named_parameters()}
    assert [g["lr"] for g in groups] == [4e-3, 5e-4, 1e-3]
    assert all(names[id(p)].startswith("encoder.") for p in groups[0]["params"])  # the first match wins
    assert all("decoder" in names[id(p)] for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(learner.parameters()))

    # Plain SGD: a scaled parameter moves exactly `scale` times as far on the same gradient.
    cfg = tiny(train={"optimizer": "sgd", "lr": 0.1, "lr_scale": {r"^encoder\.": 3.0}, "grad_clip": 0})
    a = build_learner(cfg, (1, 28, 28))
    opt_a = torch.optim.SGD(param_groups(a, 0.1, cfg.train.lr_scale), lr=0.1)
    for p in a.parameters():
        p.grad = torch.ones_like(p)
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    opt_a.step()
    moved = {n: (before[n] - p.detach()).abs().max().item() for n, p in a.named_parameters()}
    assert all(m == pytest.approx(0.3 if n.startswith("encoder.") else 0.1) for n, m in moved.items())

    with pytest.raises(ConfigError, match="matches no parameter"):
        param_groups(learner, 1e-3, {"^nothing_like_this": 2.0})
    with pytest.raises(ConfigError, match="not a regular expression"):
        load_config("glyphs", ["train.lr_scale={'(' = 2.0}"])

    from metagen.data import EpisodeSampler, load_splits
    from metagen.train import Trainer

    gan_like = tiny(train={"betas": [0.0, 0.9], "lr_scale": {r"\.decoder\.": 4.0}})
    splits = load_splits(gan_like.data, gan_like.split)
    opt = Trainer(gan_like, build_learner(gan_like, (1, 28, 28)), EpisodeSampler(splits.background)).optimizer
    assert [(g["betas"], g["lr"]) for g in opt.param_groups] == [((0.0, 0.9), 4e-3), ((0.0, 0.9), 1e-3)]
    with pytest.raises(ConfigError, match="betas"):
        load_config("glyphs", ["train.betas=[0.9, 1.0]"])

    run = tmp_path / "run"
    scaled = {"lr_scale": {r"\.decoder\.": 2.0}}
    train(tiny(train=scaled), run, progress=False)
    assert train(tiny(train={**scaled, "steps": 6}), run, resume=True, progress=False).step == 6
    changed = tiny(train={"steps": 8})
    with pytest.raises(CheckpointError, match="lr_scale"):
        train(changed, run, resume=True, progress=False)
