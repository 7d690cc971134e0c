import itertools

import pytest
import torch
import torch.nn.functional as F

from metagen.errors import DataError
from metagen.generators import ConvVAE, build_generator
from metagen.generators.vae import VAEConfig

CFG = VAEConfig(latent_dim=4, channels=4, hidden=16)


def _vae(cond_dim=0, seed=0, size=28):
    torch.manual_seed(seed)
    return ConvVAE(CFG, (1, size, size), cond_dim)


@pytest.fixture
def small_batch():
    """8x8 images: the statistical tests below need many repeated estimates, so keep each one cheap."""
    return torch.bernoulli(torch.full((2, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))


def test_iwae_is_exact_when_the_posterior_is_the_prior_and_the_decoder_ignores_z(binary_batch):
    vae = _vae()
    with torch.no_grad():
        vae.q_head[-1].weight.zero_()
        vae.q_head[-1].bias.zero_()  # q(z|x) = N(0, I) = p(z)
        vae.decoder.fc[0].weight.zero_()  # p(x|z) no longer depends on z
        logits = vae.decode(torch.zeros(1, 4), None)  # [1, 1, 28, 28]
        exact = -F.binary_cross_entropy_with_logits(logits.expand_as(binary_batch), binary_batch,
                                                    reduction="none").flatten(1).sum(1)
        for k in (1, 7, 100):
            assert torch.allclose(vae.log_prob(binary_batch, iw_samples=k), exact, atol=1e-3)
        vae.iw_chunk = 7  # one sample per decode batch of 6 images: 100 chunks must still count as k = 100
        assert torch.allclose(vae.log_prob(binary_batch, iw_samples=100), exact, atol=1e-3)


def test_iwae_bound_does_not_decrease_with_k(small_batch):
    vae = _vae(size=8)
    with torch.no_grad():
        vae.q_head[-1].bias[4:] = -4.0  # a posterior much narrower than it should be: a real gap to close
    x = small_batch
    torch.manual_seed(0)
    with torch.no_grad():
        # Average repeated estimates so that each k's expected bound is measured to well under its gap.
        bounds = [torch.stack([vae.log_prob(x, iw_samples=k) for _ in range(reps)]).mean(0)
                  for k, reps in ((1, 400), (10, 100), (100, 20), (1000, 4))]
    for lo, hi in itertools.pairwise(bounds):
        assert (hi >= lo - 0.05).all(), (lo, hi)
    assert (bounds[-1] > bounds[0] + 1.0).all()  # an untrained posterior leaves a real gap


def test_k1_bound_matches_the_elbo_in_expectation(small_batch):
    vae = _vae(size=8)
    torch.manual_seed(1)
    x = small_batch.repeat(200, 1, 1, 1)  # 400 draws of the ELBO of the same two images, in one batch
    with torch.no_grad():
        elbo = -vae.loss(x)
        k1 = vae.log_prob(x, iw_samples=1).mean()
    assert abs(elbo - k1) < 0.3


def test_sample_shape_range_and_determinism():
    vae = _vae(cond_dim=3)
    c = torch.randn(3)
    x1 = vae.sample(5, cond=c, generator=torch.Generator().manual_seed(0))
    x2 = vae.sample(5, cond=c, generator=torch.Generator().manual_seed(0))
    assert x1.shape == (5, 1, 28, 28) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and x1.min() >= 0 and x1.max() <= 1
    xb = vae.sample(5, cond=c, generator=torch.Generator().manual_seed(0), binary=True)
    assert set(xb.unique().tolist()) <= {0.0, 1.0}


def test_conditioning_changes_the_distribution(binary_batch):
    vae = _vae(cond_dim=3)
    g = torch.Generator().manual_seed(0)
    a = vae.sample(4, cond=torch.full((3,), 3.0), generator=g)
    g = torch.Generator().manual_seed(0)
    b = vae.sample(4, cond=torch.full((3,), -3.0), generator=g)
    assert not torch.allclose(a, b)


def test_bad_inputs():
    vae = _vae(cond_dim=3)
    with pytest.raises(DataError, match=r"expects a batch of shape \[B, 1, 28, 28\], got \[2, 28, 28\]"):
        vae.loss(torch.zeros(2, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match="needs a context vector"):
        vae.loss(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="context must be"):
        vae.loss(torch.zeros(2, 1, 28, 28), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unconditional"):
        _vae().loss(torch.zeros(2, 1, 28, 28), torch.zeros(3))


def test_loss_falls_on_a_toy_distribution():
    torch.manual_seed(0)
    vae = build_generator(CFG, (1, 28, 28))
    protos = torch.zeros(2, 1, 28, 28)
    protos[0, :, 5:20, 10:13] = 1
    protos[1, :, 12:15, 4:24] = 1
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _step in range(150):
        x = protos[torch.randint(0, 2, (16,))]
        loss = vae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
