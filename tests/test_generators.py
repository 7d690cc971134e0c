"""The generator zoo: likelihoods checked against exact answers, training, sampling and conditioning."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from metagen.errors import ConfigError
from metagen.generators.base import build_generator
from metagen.generators.diffusion import Diffusion, DiffusionConfig
from metagen.generators.flow import Flow, FlowConfig
from metagen.generators.gan import GAN, GANConfig
from metagen.generators.pixelcnn import PixelCNN, PixelCNNConfig
from metagen.generators.vae import VAEConfig

SHAPE = (1, 8, 8)
TINY = {
    "vae": VAEConfig(latent_dim=4, channels=4, hidden=32),
    "flow": FlowConfig(hidden=16, checkerboard=2, levels=2, depth=2),
    "pixelcnn": PixelCNNConfig(channels=16, layers=3, kernel=3),
    "diffusion": DiffusionConfig(channels=8, timesteps=20, sample_steps=5, eval_steps=10),
    "gan": GANConfig(latent_dim=8, channels=8),
}


def _jitter(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Move every weight off its initialisation (zero-initialised output layers would hide bugs)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def toy_images(concept: int, n: int, seed: int = 0) -> torch.Tensor:
    """Two toy concepts on 8x8: a horizontal (0) or vertical (1) bar at a random position, 5% pixel flips."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, *SHAPE)
    pos = torch.randint(1, 7, (n,), generator=g)
    for i in range(n):
        if concept == 0:
            x[i, 0, pos[i], 1:7] = 1
        else:
            x[i, 0, 1:7, pos[i]] = 1
    flips = torch.rand(x.shape, generator=g) < 0.05
    return torch.where(flips, 1 - x, x)


# -- likelihoods against exact answers ---------------------------------------------------------------------
@pytest.mark.parametrize(("memory_dim", "cond_map"), [(0, 0), (6, 0), (0, 5)])
def test_pixelcnn_probabilities_of_all_2x2_images_sum_to_one(memory_dim, cond_map):
    torch.manual_seed(0)
    cfg = PixelCNNConfig(channels=8, layers=3, kernel=3, attn_dim=8, attn_heads=2, attn_every=1)
    model = PixelCNN(cfg, (1, 2, 2), cond_dim=0 if cond_map else 3, memory_dim=memory_dim, cond_map=cond_map)
    model = model.double()
    _jitter(model)
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 2, 2)
    cond = torch.randn(cond_map, 2, 2, dtype=torch.float64) if cond_map else torch.randn(3, dtype=torch.float64)
    memory = torch.randn(4, memory_dim, dtype=torch.float64) if memory_dim else None
    total = model.log_prob(xs, cond, memory).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-10)


def test_pixelcnn_is_causal_in_raster_order_without_blind_spot():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(channels=8, layers=4, kernel=5, attn_dim=8, attn_heads=2), (1, 6, 6),
                     memory_dim=5, cond_map=2).double()
    _jitter(model)
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(1, 3, 5, dtype=torch.float64)
    cond_map = torch.randn(1, 2, 6, 6, dtype=torch.float64)  # from the support, so every pixel may read all of it
    for i, j in itertools.product(range(6), range(6)):
        (g,) = torch.autograd.grad(model.logits(x, cond_map, memory)[0, 0, i, j], x)
        seen = g[0, 0].abs().flatten() > 0
        before = torch.arange(36) < i * 6 + j
        assert not (seen & ~before).any(), f"pixel {(i, j)} sees itself or a later pixel"
        if i >= 2 and 1 <= j <= 4:  # deep enough: every earlier pixel within reach is seen (no blind spot)
            assert seen[(i - 1) * 6 + j + 1] and seen[i * 6 + j - 1]


def test_pixelcnn_sampler_matches_a_full_image_reference_loop():
    """The sampler runs the vertical stack once per row and the horizontal stack on one row per pixel; a loop
    over the full image must draw the same pixels from the same random numbers."""
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(channels=8, layers=3, kernel=3, attn_dim=8, attn_heads=2), (1, 6, 5),
                     cond_dim=3, memory_dim=4).double()
    _jitter(model)
    cond, memory = torch.randn(3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    fast = model.sample(4, cond, memory, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    x = torch.zeros(4, 1, 6, 5, dtype=torch.float64)
    for i, j in itertools.product(range(6), range(5)):
        probs = torch.sigmoid(model.logits(x, cond.expand(4, 3), memory.expand(4, 3, 4))[:, :, i, j])
        x[:, :, i, j] = torch.bernoulli(probs, generator=g)
    assert torch.equal(fast, x) and 0 < x.mean() < 1


def test_pixelcnn_sampler_reads_a_context_map_row_by_row_as_the_full_image_does():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(channels=8, layers=3, kernel=3), (1, 6, 6), cond_map=3).double()
    _jitter(model)
    cond = torch.randn(3, 3, 3, dtype=torch.float64)  # half resolution: upsampled to the image inside
    fast = model.sample(4, cond, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    x = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    full = model._full_cond(cond, 4)
    assert full.shape == (4, 3, 6, 6)
    for i, j in itertools.product(range(6), range(6)):
        x[:, :, i, j] = torch.bernoulli(torch.sigmoid(model.logits(x, full, None)[:, :, i, j]), generator=g)
    assert torch.equal(fast, x) and 0 < x.mean() < 1
    other = model.sample(4, -cond, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(fast, other)  # the map is read


def test_flow_log_determinant_equals_the_numerical_jacobian():
    torch.manual_seed(0)
    model = Flow(FlowConfig(hidden=8, checkerboard=2, levels=2, depth=2), (1, 4, 4), cond_dim=3).double()
    _jitter(model)
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    cond = torch.randn(2, 3, dtype=torch.float64)
    z, logdet = model.transform(y, cond)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v, b=b: model.transform(v.view(1, 1, 4, 4), cond[b:b + 1])[0].flatten(), y[b].flatten())
        assert torch.linalg.slogdet(jac)[1].item() == pytest.approx(logdet[b].item(), abs=1e-8)
    assert torch.allclose(model.inverse(z, cond), y, atol=1e-10)


def test_flow_bound_never_exceeds_log_one_and_tightens_with_more_draws():
    torch.manual_seed(0)
    model = Flow(TINY["flow"], SHAPE).double()
    x = toy_images(0, 4).double()
    one, many = model.log_prob(x, iw_samples=1).mean(), model.log_prob(x, iw_samples=64).mean()
    assert one.item() < 0 and many.item() < 0
    assert many.item() >= one.item() - 1.0  # the k-draw bound is tighter in expectation


def test_diffusion_bound_is_near_zero_for_an_oracle_denoiser_of_a_single_image():
    """Data = one image x*: the optimal noise predictor is (x_t - sqrt(abar) x0*) / sqrt(1 - abar); every KL
    term of the bound then vanishes and the rest has a closed form."""
    cfg = DiffusionConfig(channels=8, timesteps=50, eval_steps=20)
    model = Diffusion(cfg, SHAPE).double()
    x = toy_images(0, 1).double()
    x0 = 2 * x - 1
    abar = model.abar.double()

    class Oracle(torch.nn.Module):
        def forward(self, xt, t, cond):
            ab = abar[t].view(-1, 1, 1, 1)
            return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()

    model.net = Oracle()
    D = x.numel()
    sched = model.schedule(cfg.eval_steps)
    ab_T, beta1 = abar[-1], sched["beta"][0]
    prior_kl = 0.5 * D * (ab_T + (1 - ab_T) - 1 - torch.log(1 - ab_T))  # x0^2 = 1 everywhere
    decoder = -D * torch.special.log_ndtr(1 / beta1.sqrt())
    expected = -(prior_kl + decoder)
    assert model.log_prob(x).item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6)
    # a wrong image under the same oracle is far less likely
    assert model.log_prob(toy_images(1, 1).double()).item() < expected.item() - 10


def test_diffusion_bound_clips_the_predicted_image_to_the_data_range():
    """A denoiser that points the right way but overshoots (x0_hat = 3 x0) gives the oracle's bound: the reverse
    mean uses x0_hat clipped to [-1, 1], so no term divides an overshoot by sqrt(abar_T) ~ 1e-4."""
    cfg = DiffusionConfig(channels=8, timesteps=50, eval_steps=20)
    x = toy_images(0, 1).double()
    x0 = 2 * x - 1
    abar = Diffusion(cfg, SHAPE).abar.double()
    bounds = []
    for scale in (1.0, 3.0):
        model = Diffusion(cfg, SHAPE).double()

        class Overshoot(torch.nn.Module):
            def forward(self, xt, t, cond, scale=scale):
                ab = abar[t].view(-1, 1, 1, 1)
                return (xt - ab.sqrt() * scale * x0) / (1 - ab).sqrt()

        model.net = Overshoot()
        bounds.append(model.log_prob(x).item())
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-9, abs=1e-9)


# -- training, sampling, conditioning ----------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(TINY))
def test_family_trains_on_a_toy_distribution(family):
    torch.manual_seed(0)
    model = build_generator(TINY[family], SHAPE)
    data = toy_images(0, 256)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, gaps = [], []
    for step in range(80):
        x = data[torch.randint(0, 256, (32,))]
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if family == "gan" and step % 20 == 0:
            with torch.no_grad():
                gaps.append((model.sample(256).mean(0) - data.mean(0)).abs().mean().item())
    if family == "gan":  # no likelihood to fall: the samples' mean image moves toward the data's
        with torch.no_grad():
            gaps.append((model.sample(256).mean(0) - data.mean(0)).abs().mean().item())
        assert gaps[-1] < 0.6 * gaps[0], gaps
    else:
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        assert last < 0.8 * first if first > 0 else last < first, (first, last)


@pytest.mark.parametrize("family", sorted(TINY))
def test_samples_have_shape_dtype_range_and_follow_the_seed(family):
    torch.manual_seed(0)
    model = build_generator(TINY[family], SHAPE, cond_dim=3)
    cond = torch.randn(3)
    a = model.sample(4, cond, generator=torch.Generator().manual_seed(5))
    b = model.sample(4, cond, generator=torch.Generator().manual_seed(5))
    c = model.sample(4, cond, generator=torch.Generator().manual_seed(6))
    assert a.shape == (4, *SHAPE) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    if family != "vae":  # the VAE returns means, which two seeds can share only by accident
        assert not torch.equal(a, c)


def orientation(x: torch.Tensor) -> torch.Tensor:
    """Mean over images [N, 1, 8, 8] of (largest row sum - largest column sum): > 0 for horizontal bars."""
    return (x[:, 0].sum(-1).amax(-1) - x[:, 0].sum(-2).amax(-1)).mean()


@pytest.mark.parametrize("family", sorted(TINY))
def test_conditioning_matters_after_training(family):
    """Trained on two concepts told apart only by a one-hot context, samples follow the context: horizontal
    bars for one, vertical for the other. The GAN, which does not learn that in a few seconds, must show it
    in its discriminator, which scores real bars higher under their own context."""
    torch.manual_seed(0)
    model = build_generator(TINY[family], SHAPE, cond_dim=2)
    data = [toy_images(0, 256, seed=1), toy_images(1, 256, seed=2)]
    assert orientation(data[0]) > 3 and orientation(data[1]) < -3
    onehot = torch.eye(2)
    vae = family == "vae"  # the VAE's conditional prior is learned slowest
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if vae else 3e-3)
    for _ in range(300 if vae else 150):
        idx = torch.randint(0, 256, (16,))
        x = torch.cat([data[0][idx], data[1][idx]])
        loss = model.loss(x, onehot.repeat_interleave(16, 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        kw = {"binary": True} if vae else {}  # the VAE's means are blurs of every bar position
        samples = [model.sample(64, onehot[c], generator=torch.Generator().manual_seed(0), **kw) for c in (0, 1)]
        assert not torch.equal(samples[0], samples[1])
        if family == "gan":
            own = sum(model.disc(data[c], onehot[c].expand(256, -1)).mean() for c in (0, 1))
            swapped = sum(model.disc(data[c], onehot[1 - c].expand(256, -1)).mean() for c in (0, 1))
            assert own > swapped, (own.item(), swapped.item())
            return
        assert orientation(samples[0]) > 0.5 and orientation(samples[1]) < -0.5, \
            (orientation(samples[0]).item(), orientation(samples[1]).item())


def test_pixelcnn_and_flow_losses_are_nats_per_image():
    torch.manual_seed(0)
    x = toy_images(0, 8)
    model = build_generator(TINY["pixelcnn"], SHAPE)
    assert model.loss(x).item() == pytest.approx(-model.log_prob(x).mean().item(), rel=1e-6)
    # an untrained PixelCNN is near uniform: about D log 2 nats
    assert abs(model.loss(x).item() - x[0].numel() * math.log(2)) < 0.5 * x[0].numel() * math.log(2)


def test_bad_family_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="odd"):
        PixelCNN(PixelCNNConfig(kernel=4), SHAPE)
    with pytest.raises(ConfigError, match="divisible by 4"):
        Diffusion(DiffusionConfig(), (1, 6, 6))
    with pytest.raises(ConfigError, match="levels"):
        Flow(FlowConfig(levels=4), SHAPE)
    with pytest.raises(ConfigError, match="divisible by 4"):
        GAN(GANConfig(), (1, 6, 6))
    with pytest.raises(NotImplementedError, match="no likelihood"):
        GAN(GANConfig(latent_dim=4, channels=4), SHAPE).log_prob(toy_images(0, 2))
