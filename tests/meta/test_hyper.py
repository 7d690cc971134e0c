import pytest
import torch
from toy import toy_tasks

from metagen.config import from_dict
from metagen.errors import ConfigError
from metagen.meta import build_learner
from metagen.meta.functional import call

T, K, Q = 3, 4, 2


def _hyper(**learner):
    cfg = from_dict({"data": {"image_size": 8},
                     "generator": {"name": "vae", "latent_dim": 3, "channels": 4, "hidden": 16},
                     "learner": {"name": "hyper", "code_dim": 5, "hidden": 16, "channels": 4, "vectorize": "vmap",
                                 **learner}})
    torch.manual_seed(0)
    learner = build_learner(cfg, (1, 8, 8)).double()
    with torch.no_grad():  # trained-looking heads: the zero init would emit the same weights for every set
        for p in learner.heads.parameters():
            p.normal_(0, 0.1)
    return learner


def _tasks():
    return toy_tasks(T, K, Q)


@pytest.mark.parametrize("rank", [0, 2])
def test_weights_depend_on_the_set_not_its_order(rank):
    learner = _hyper(rank=rank)
    support = _tasks().support[0]
    a = learner.adapt(support).params
    b = learner.adapt(support[torch.tensor([2, 0, 3, 1])]).params
    c = learner.adapt(_tasks().support[1]).params
    assert set(a) == {n for n, _ in learner.generator.named_parameters() if n.startswith("decoder.")}
    assert all(torch.allclose(a[k], b[k], rtol=1e-12, atol=1e-12) for k in a)
    assert any(not torch.allclose(a[k], c[k]) for k in a)


def test_low_rank_deltas_have_the_rank():
    learner = _hyper(rank=2)
    base = dict(learner.generator.named_parameters())
    params = learner.adapt(_tasks().support[0]).params
    delta = params["decoder.deconv.0.weight"] - base["decoder.deconv.0.weight"]  # [in, out, 4, 4]
    assert torch.linalg.matrix_rank(delta.flatten(1)).item() == 2


def test_meta_loss_equals_running_each_tasks_generator():
    learner = _hyper()
    learner.randomness = "same"  # vmap gives every task the draws a single unbatched call would get
    tasks = _tasks()
    torch.manual_seed(3)
    mu, logvar = learner.encoder(tasks.support)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    params = learner.weights(z)
    state = torch.get_rng_state()
    nll = []
    for t in range(T):
        torch.set_rng_state(state)
        nll.append(call(learner.generator, {k: v[t] for k, v in params.items()}, "loss", tasks.query[t]))
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)).mean()
    expected = torch.stack(nll).mean() + learner.cfg.kl_weight * kl / Q
    torch.manual_seed(3)
    assert torch.allclose(learner.meta_loss(tasks), expected, rtol=1e-12)


def test_training_signal_reaches_encoder_and_heads():
    learner = _hyper()
    learner.meta_loss(_tasks()).backward()
    assert learner.encoder.embed.conv[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in learner.heads.parameters())


def test_prior_emits_a_new_generator_and_bad_pattern_is_a_config_error():
    learner = _hyper()
    a = learner.prior(torch.Generator().manual_seed(0)).params
    b = learner.prior(torch.Generator().manual_seed(1)).params
    assert any(not torch.allclose(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="matches no generator parameter"):
        _hyper(hyper_params="^nothing$")
