import torch

from metagen.config import from_dict
from metagen.meta import build_learner


def _learner():
    cfg = from_dict({"generator": {"name": "vae", "latent_dim": 4, "channels": 4, "hidden": 16},
                     "learner": {"name": "context", "context_dim": 5, "hidden": 16, "channels": 4}})
    torch.manual_seed(0)
    return build_learner(cfg, (1, 28, 28))


def test_set_encoder_is_permutation_invariant():
    learner = _learner()
    s = torch.bernoulli(torch.full((3, 6, 1, 28, 28), 0.2))
    perm = torch.randperm(6)
    mu, logvar = learner.encoder(s)
    mu_p, logvar_p = learner.encoder(s[:, perm])
    assert mu.shape == (3, 5)
    assert torch.allclose(mu, mu_p, atol=1e-6) and torch.allclose(logvar, logvar_p, atol=1e-6)


def test_adapt_uses_the_posterior_mean_and_depends_on_the_support():
    learner = _learner()
    a = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2))
    b = torch.zeros(4, 1, 28, 28)
    b[:, :, 10:18, 5:20] = 1
    ca, cb = learner.adapt(a).cond, learner.adapt(b).cond
    assert torch.allclose(ca, learner.encoder(a[None])[0][0])
    assert not torch.allclose(ca, cb)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.2))
    torch.manual_seed(0)
    lp_a = learner.adapt(a).log_prob(x, iw_samples=5)
    torch.manual_seed(0)
    lp_b = learner.adapt(b).log_prob(x, iw_samples=5)
    assert not torch.allclose(lp_a, lp_b)


def test_prior_draws_new_concepts():
    learner = _learner()
    g = torch.Generator().manual_seed(0)
    c1, c2 = learner.prior(generator=g).cond, learner.prior(generator=g).cond
    assert c1.shape == (5,) and not torch.allclose(c1, c2)
