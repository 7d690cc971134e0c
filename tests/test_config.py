import json

import pytest

from metagen.config import Config, from_dict, load_config, merge, parse_override, presets
from metagen.errors import ConfigError


def test_every_preset_loads_and_round_trips_through_json():
    assert {"glyphs", "omniglot", "omniglot-maml", "omniglot-unconditional", "demo"} <= set(presets())
    for name in presets():
        cfg = load_config(name)
        again = from_dict(json.loads(cfg.to_json()))
        assert again == cfg


def test_extends_merges_the_parent():
    maml = load_config("omniglot-maml")
    base = load_config("omniglot")
    assert maml.learner.name == "maml" and maml.learner.inner_steps == 1
    assert maml.data == base.data and maml.generator == base.generator


def test_unknown_key_names_it():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lrr'"):
        load_config("glyphs", ["train.lrr=0.1"])


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.lr = -1.*greater than 0"):
        load_config("glyphs", ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"train\.shots"):
        load_config("glyphs", ["train.shots=[5, 2]"])
    with pytest.raises(ConfigError, match=r"train\.device"):
        load_config("glyphs", ["train.device='gpu'"])
    with pytest.raises(ConfigError, match=r"unknown learner 'mamll'"):
        load_config("glyphs", ["learner.name='mamll'"])


def test_errors_are_one_line():
    with pytest.raises(ConfigError) as err:
        load_config("glyphs", ["train.lr=-1", "train.steps=0", "data.bogus=1"])
    assert "\n" not in str(err.value)
    assert "train.lr" in str(err.value) and "train.steps" in str(err.value) and "data.bogus" in str(err.value)


def test_learner_specific_keys_are_validated_by_the_learner():
    with pytest.raises(ConfigError, match=r"unknown key 'learner\.inner_steps'"):
        load_config("glyphs", ["learner.inner_steps=2"])  # context learner has no inner loop
    cfg = load_config("glyphs", ["learner.name='maml'", "learner.inner_steps=2"])
    assert cfg.learner.inner_steps == 2


def test_switching_learner_replaces_its_section():
    base = {"learner": {"name": "context", "context_dim": 8}}
    assert merge(base, {"learner": {"name": "maml"}}) == {"learner": {"name": "maml"}}
    assert merge(base, {"learner": {"context_dim": 4}}) == {"learner": {"name": "context", "context_dim": 4}}


def test_override_parsing():
    assert parse_override("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    assert parse_override("split.test_groups=['Greek']") == {"split": {"test_groups": ["Greek"]}}
    assert parse_override("data.source=omniglot") == {"data": {"source": "omniglot"}}  # bare string
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")


def test_missing_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="presets:"):
        load_config("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.learner.name == "context" and cfg.generator.name == "vae"
