"""Architecture search: the space builds valid models, the search never reads the test groups, the best
architecture is written as a preset that trains, and a stopped search resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import torch
from tests.conftest import make_omniglot, tiny_config

import metagen.search as search_mod
from metagen.cli import main
from metagen.config import load_config
from metagen.data.concepts import ConceptSet
from metagen.errors import ConfigError
from metagen.meta.base import build_learner
from metagen.search import SearchSettings, search, search_splits, suggest_architecture, trial_config, write_preset
from metagen.train import Interrupted

ALPHABETS = {"Alpha": 3, "Beta": 3, "Gamma": 3, "Delta": 3, "Epsilon": 3}
FAST = SearchSettings(budget_minutes=30, trial_minutes=0.01, rungs=2, val_groups=1, shots=2, queries=2, max_tasks=3,
                      iw_samples=3, n_trials=2)


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_omniglot(tmp_path_factory.mktemp("omni"), {"images_background": ALPHABETS}, drawers=8)


def base_config(omniglot_dir: Path, **train):
    return tiny_config(data={"source": "omniglot", "data_dir": str(omniglot_dir)},
                       split={"test_groups": ["Beta", "Delta"]},
                       train={"meta_batch": 2, "shots": [1, 2], "queries": 2, **train})


def settings(**changes) -> SearchSettings:
    return SearchSettings(**{**FAST.__dict__, **changes})


def test_every_architecture_of_the_space_builds_and_trains_a_step():
    config = tiny_config()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        arch = suggest_architecture(trial, config)
        cfg = trial_config(config, arch)
        learner = build_learner(cfg, (1, 28, 28))
        x = torch.rand(2, 3, 1, 28, 28).round()
        from metagen.data import Tasks

        loss = learner.meta_loss(Tasks(x[:, :2], x[:, 2:], None, None, None))
        assert torch.isfinite(loss)
        seen.add((arch["generator"]["name"], arch["learner"]["name"]))
        study.tell(trial, loss.item())
    assert seen == {("vae", "context"), ("vae", "attention"), ("pixelcnn", "context"), ("pixelcnn", "attention")}


def test_where_attention_sits_in_the_vae():
    config = tiny_config()
    for attend, enc, dec in (("encoder", True, False), ("decoder", False, True), ("both", True, True)):
        cfg = trial_config(config, {"generator": {**config.generator.model_dump(), "attend": attend},
                                    "learner": {"name": "attention", "memory_dim": 8}})
        gen = build_learner(cfg, (1, 28, 28)).generator
        assert (gen.enc_attn is not None, gen.dec_attn is not None) == (enc, dec)


def test_search_touches_only_background_groups(omniglot_dir, tmp_path, monkeypatch):
    config = base_config(omniglot_dir)
    seen: set[str] = set()
    original = search_mod.run_trial

    def spy(cfg, splits, tasks, settings, report=None):
        seen.update(splits.background.groups)
        seen.update(splits.held_out.groups[i] for i in tasks.concepts.tolist())
        return original(cfg, splits, tasks, settings, report)

    monkeypatch.setattr(search_mod, "run_trial", spy)
    loaded: list[ConceptSet] = []
    real_load = search_mod.load_splits
    monkeypatch.setattr(search_mod, "load_splits", lambda *a, **k: loaded.append(k["concepts"]) or real_load(*a, **k))
    summary = search(config, tmp_path / "s", settings(), progress=False)
    record = json.loads((tmp_path / "s" / "search.json").read_text())
    assert record["test_groups"] == ["Beta", "Delta"]
    assert seen and not seen & {"Beta", "Delta"}
    assert not set(loaded[0].groups) & {"Beta", "Delta"}
    assert len(record["val_groups"]) == 1 and record["val_groups"][0] in seen
    assert set(record["train_groups"]) | set(record["val_groups"]) == {"Alpha", "Gamma", "Epsilon"}
    assert summary["trials"] == 2 and summary["best"] is not None


def test_search_splits_refuse_too_many_validation_groups_and_text(omniglot_dir):
    config = base_config(omniglot_dir)
    splits, test = search_splits(config, 2)
    assert test == ["Beta", "Delta"] and len(splits.test_groups) == 2 and len(splits.background.group_names) == 1
    with pytest.raises(Exception, match="lower --val-groups below 3"):
        search_splits(config, 3)
    with pytest.raises(ConfigError, match="image sources"):
        search_splits(load_config("fortunes"), 1)


def test_best_preset_trains_and_reads_back(omniglot_dir, tmp_path):
    config = base_config(omniglot_dir)
    summary = search(config, tmp_path / "s", settings(), progress=False)
    preset = Path(summary["best"]["preset"])
    assert preset.read_text().startswith("# Found by `metagen search`")
    loaded = load_config(str(preset))
    assert loaded.generator.model_dump() == trial_config(config, summary["best"]["architecture"]).generator.model_dump()
    assert loaded.to_dict() == trial_config(config, summary["best"]["architecture"]).to_dict()
    assert main(["train", "--config", str(preset), "--out", str(tmp_path / "run"), "--quiet", "--steps", "2"]) == 0
    with (tmp_path / "s" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["state"] in ("complete", "pruned") for r in rows)


def test_preset_round_trip_keeps_every_section(tmp_path):
    for name in ("omniglot", "omniglot-attention", "omniglot-pixelcnn", "glyphs"):
        config = load_config(name)
        path = write_preset(config, tmp_path / f"{name}.toml", header=["a comment"])
        assert load_config(str(path)).to_dict() == config.to_dict()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_search_resumes_and_reruns_the_interrupted_trial(omniglot_dir, tmp_path, monkeypatch, how):
    import os
    import signal

    from metagen.train import Trainer

    config = base_config(omniglot_dir)
    out = tmp_path / "s"
    original = Trainer._optimize
    calls = {"trials": 0}
    real_run_trial = search_mod.run_trial

    def count_trials(*args, **kwargs):
        calls["trials"] += 1
        return real_run_trial(*args, **kwargs)

    def interrupt_second(self, tasks):  # the user stops the search while the second trial trains
        if calls["trials"] == 2:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return original(self, tasks)

    monkeypatch.setattr(search_mod, "run_trial", count_trials)
    monkeypatch.setattr(Trainer, "_optimize", interrupt_second)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="continue with --resume"):
        search(config, out, settings(n_trials=3), progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler  # the search's own handler is gone
    study = optuna.load_study(study_name="metagen", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL"]

    with pytest.raises(ConfigError, match="already holds a search"):
        search(config, out, settings(n_trials=3), progress=False)
    with pytest.raises(ConfigError, match="different config"):
        search(base_config(omniglot_dir, lr=0.01), out, settings(n_trials=3), resume=True, progress=False)
    with pytest.raises(ConfigError, match="different setting"):
        search(config, out, settings(n_trials=3, shots=1), resume=True, progress=False)

    monkeypatch.setattr(Trainer, "_optimize", original)
    summary = search(config, out, settings(n_trials=3), resume=True, progress=False)
    trials = optuna.load_study(study_name="metagen", storage=f"sqlite:///{out / 'study.db'}").trials
    assert trials[0].params == first[0].params and trials[0].value == first[0].value  # kept, not rerun
    assert trials[2].params == first[1].params and trials[2].user_attrs["retry_of"] == 1  # the interrupted one again
    assert trials[2].state.name in ("COMPLETE", "PRUNED")
    assert sum(t.state.is_finished() for t in trials) >= 3 and summary["trials"] == len(trials)


def test_the_budget_counts_every_session(omniglot_dir, tmp_path):
    config = base_config(omniglot_dir)
    out = tmp_path / "s"
    search(config, out, settings(n_trials=1), progress=False)
    spent = json.loads((out / "search.json").read_text())["summary"]["minutes"]
    summary = search(config, out, settings(n_trials=None, budget_minutes=spent * 0.99), resume=True, progress=False)
    assert summary["trials"] == 1  # the budget was already spent: no new trial


def test_cli_search_errors_are_one_line(omniglot_dir, tmp_path, capsys):
    assert main(["search", "--config", "glyphs", "--budget-minutes", "0", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--budget-minutes must be > 0" in err and err.count("\n") == 1
    assert main(["search", "--config", "fortunes", "--out", str(tmp_path / "b")]) == 2
    assert "image sources" in capsys.readouterr().err
    assert main(["search", "--config", "glyphs", "--resume", "--out", str(tmp_path / "c")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_cli_search_end_to_end(omniglot_dir, tmp_path, capsys):
    cfg = tmp_path / "base.toml"
    write_preset(base_config(omniglot_dir), cfg)
    out = tmp_path / "s"
    assert main(["search", "--config", str(cfg), "--trial-minutes", "0.01", "--trials", "2", "--shots", "2",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "best of 2 trials" in printed and str(out / "best.toml") in printed
    assert (out / "best.toml").is_file() and (out / "trials.csv").is_file()


def test_max_minutes_stops_training_and_resume_continues(tmp_path):
    from metagen.train import train

    config = tiny_config(train={"steps": 10**6, "max_minutes": 0.002})
    result = train(config, tmp_path / "run", progress=False)
    assert 0 < result.step < 10**6
    again = train(config, tmp_path / "run", resume=True, progress=False)
    assert again.step > result.step


def test_the_first_trial_is_the_presets_own_architecture(omniglot_dir, tmp_path):
    from metagen.search import base_params

    config = base_config(omniglot_dir)
    assert base_params(config) is None  # 4 channels are outside the space
    config = trial_config(config, {"generator": {"name": "vae", "channels": 16, "latent_dim": 8, "hidden": 128,
                                                 "kl_weight": 0.5},
                                   "learner": config.learner.model_dump()})
    params = base_params(config)
    assert params == {"family": "vae", "vae.channels": 16, "vae.depth": 0, "vae.kernel": 3, "vae.latent_dim": 8,
                      "vae.hidden": 128, "vae.attention": "none", "context_dim": 64}
    search(config, tmp_path / "s", settings(n_trials=1), progress=False)
    trial = optuna.load_study(study_name="metagen", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").trials[0]
    assert trial.params == params and trial.user_attrs["hand_made"]
    assert trial.user_attrs["architecture"]["generator"]["kl_weight"] == 0.5  # the preset's other settings kept
    for name in ("omniglot", "glyphs", "omniglot-attention", "omniglot-pixelcnn"):
        assert base_params(load_config(name)) is not None, name


def test_a_resumed_search_proposes_new_architectures(omniglot_dir, tmp_path):
    config = base_config(omniglot_dir)
    out = tmp_path / "s"
    search(config, out, settings(n_trials=2), progress=False)
    search(config, out, settings(n_trials=4), resume=True, progress=False)
    trials = optuna.load_study(study_name="metagen", storage=f"sqlite:///{out / 'study.db'}").trials
    assert trials[2].params != trials[0].params and trials[2].params != trials[1].params
