"""Scoring a trained model from Python: preprocessing from the checkpoint, reproducible and marginal
likelihoods, and which checkpoint of a run folder was loaded."""

import math

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import tiny_config
from metagen.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_learner, save_checkpoint
from metagen.config import load_config
from metagen.data import load_support
from metagen.data.images import preprocessing
from metagen.errors import CheckpointError, DataError
from metagen.meta import build_learner

SHAPE = (1, 28, 28)


def _drawing(path, box=(20, 20, 60, 90)):
    img = Image.new("L", (105, 105), 255)
    ImageDraw.Draw(img).rectangle(box, outline=0, width=5)
    img.save(path)
    return path


def test_load_support_takes_the_models_preprocessing(tmp_path):
    path = _drawing(tmp_path / "a.png")
    omniglot, glyphs = load_config("omniglot"), load_config("glyphs")
    assert preprocessing(omniglot) == (28, "resize") and preprocessing(glyphs) == (28, "fit")
    resized = load_support([path], like=omniglot)
    fitted = load_support([path], like=glyphs)
    assert torch.equal(resized, load_support([path], 28, "resize"))
    assert torch.equal(fitted, load_support([path], 28, "fit"))
    assert not torch.equal(resized, fitted)  # the two layouts really differ on this drawing
    with pytest.raises(DataError, match="layout='resize'"):
        load_support([path], layout="fit", like=omniglot)
    with pytest.raises(DataError, match="32x32|28x28"):
        load_support([path], size=32, like=omniglot)
    with pytest.raises(DataError, match="like=checkpoint"):
        load_support([path])
    with pytest.raises(DataError, match="Checkpoint or Config"):
        load_support([path], like="omniglot")


def _learner(name: str, **learner):
    cfg = tiny_config(learner={"name": name, **learner})
    torch.manual_seed(0)
    return build_learner(cfg, SHAPE)


def test_log_prob_is_reproducible_with_a_generator_and_leaves_the_global_rng_alone():
    learner = _learner("context")
    x = torch.bernoulli(torch.full((3, *SHAPE), 0.2))
    adapted = learner.adapt(x[:2])
    state = torch.get_rng_state()
    a = adapted.log_prob(x, iw_samples=3, generator=torch.Generator().manual_seed(1))
    b = adapted.log_prob(x, iw_samples=3, generator=torch.Generator().manual_seed(1))
    c = adapted.log_prob(x, iw_samples=3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_marginal_log_prob_of_a_context_model_averages_over_prior_concepts():
    learner = _learner("context")
    x = torch.bernoulli(torch.full((2, *SHAPE), 0.2))
    with torch.no_grad():
        got = learner.marginal_log_prob(x, iw_samples=4, concepts=3, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)  # the reference: draw 3 concepts, then score under each
        models = [learner.prior(g) for _ in range(3)]
        lp = torch.stack([m.log_prob(x, 4, generator=g) for m in models])
    assert got.shape == (2,)
    assert torch.allclose(got, torch.logsumexp(lp, 0) - math.log(3), atol=1e-5)
    # log-mean-exp lies between the mean and the max of the per-concept scores
    assert (got >= lp.mean(0) - 1e-4).all() and (got <= lp.max(0).values + 1e-4).all()


def test_marginal_log_prob_of_an_unconditional_model_is_its_log_prob():
    learner = _learner("unconditional")
    x = torch.bernoulli(torch.full((2, *SHAPE), 0.2))
    with torch.no_grad():
        got = learner.marginal_log_prob(x, iw_samples=4, generator=torch.Generator().manual_seed(0))
        want = learner.adapt(x).log_prob(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, want)


@pytest.mark.parametrize("name", ["spatial", "copy", "scratch"])
def test_learners_without_a_prior_over_concepts_refuse_a_marginal(name):
    learner = _learner(name)
    with pytest.raises(DataError, match="without|support set"):
        learner.marginal_log_prob(torch.zeros(1, *SHAPE))


def test_load_learner_says_which_checkpoint_of_a_run_it_loaded(tmp_path, capsys):
    cfg = tiny_config()
    learner = build_learner(cfg, SHAPE)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, cfg, 10, learner)
    _, ckpt = load_learner(tmp_path)
    assert ckpt.step == 10 and capsys.readouterr().err == ""  # only one file: nothing to say
    with pytest.raises(CheckpointError, match="best"):
        load_learner(tmp_path, which="best")
    save_checkpoint(tmp_path / BEST_NAME, cfg, 5, learner)
    _, ckpt = load_learner(tmp_path)
    err = capsys.readouterr().err
    assert ckpt.step == 5 and "best" in err and "step 10" in err
    assert load_learner(tmp_path, which="latest")[1].step == 10
    assert load_learner(tmp_path / CHECKPOINT_NAME)[1].step == 10
    with pytest.raises(CheckpointError, match="which"):
        load_learner(tmp_path, which="newest")
    save_checkpoint(tmp_path / BEST_NAME, cfg, 10, learner)  # the best is the latest: nothing to choose
    assert load_learner(tmp_path)[1].step == 10 and capsys.readouterr().err == ""
