import pytest
import torch

from metagen.checkpoint import load_checkpoint, load_learner
from metagen.config import from_dict
from metagen.errors import ConfigError
from metagen.meta import build_learner
from metagen.meta.functional import call
from metagen.train import train

GEN = {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16}


def _learner(name, **cfg):
    torch.manual_seed(0)
    return build_learner(from_dict({"data": {"image_size": 8}, "generator": GEN,
                                    "learner": {"name": name, **cfg}}), (1, 8, 8))


def _support():
    return torch.bernoulli(torch.full((4, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["finetune", "scratch"])
def test_adapt_trains_on_the_support_and_leaves_the_module_alone(name):
    learner = _learner(name, finetune_steps=30, finetune_lr=1e-2)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    with torch.no_grad():  # as in evaluation
        adapted = learner.adapt(_support())
    torch.manual_seed(0)
    start = learner.generator.loss(_support())
    torch.manual_seed(0)
    assert call(learner.generator, adapted.params, "loss", _support()) < start - 1.0
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())


def test_finetune_params_pattern_selects_what_is_tuned():
    adapted = _learner("finetune", finetune_params=r"^decoder\.", finetune_steps=2).adapt(_support())
    assert adapted.params and all(k.startswith("decoder.") for k in adapted.params)
    with pytest.raises(ConfigError, match="matches no generator parameter"):
        _learner("finetune", finetune_params="^nothing$")


def test_zero_steps_is_the_pretrained_model():
    learner = _learner("finetune", finetune_steps=0)
    adapted = learner.adapt(_support())
    assert all(torch.equal(v, dict(learner.generator.named_parameters())[k]) for k, v in adapted.params.items())


def test_scratch_is_not_meta_trained_but_its_run_is_usable(tmp_path, tiny):
    result = train(tiny(learner={"name": "scratch", "finetune_steps": 2}), tmp_path / "run", progress=False)
    assert result.step == 0
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 0
    learner, _ = load_learner(tmp_path / "run")
    assert learner.adapt(torch.zeros(2, 1, 28, 28)).sample(3).shape == (3, 1, 28, 28)
