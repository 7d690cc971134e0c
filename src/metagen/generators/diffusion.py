"""Small DDPM (Ho et al. 2020) for binary images, with a variational bound in nats and a DDIM sampler.

Pixels map to x0 = 2x - 1 in {-1, 1}; q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the cosine
schedule (Nichol & Dhariwal 2021) over `timesteps` steps; a U-Net predicts the noise eps(x_t, t, c).
Reverse steps plug the predicted image, clipped to the data range as the sampler does, into the posterior:
p(x_{t-1} | x_t) = q(x_{t-1} | x_t, x0 = clip(x0_hat)) = N(mu_theta, beta~_t I), with
x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t). Each KL term of the bound is then closed form, and the
last step is a binary decoder, P(x0 = 1 | x_1) = Phi(mu_theta / sigma_1):
    -log P(x0) <= KL(q(x_T|x0) || N(0, I)) + sum_{t>=2} KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t)) - log p(x0|x_1).
`log_prob` evaluates every term (one noise draw per step) of the chain respaced to `eval_steps` of the
trained steps (Nichol & Dhariwal's respacing: a valid bound on that shorter model, at `eval_steps` network
calls). `loss` is Ho et al.'s simple objective, the squared error of the predicted noise at a random t
(not in nats; a one-t estimate of the bound has far higher variance). `sample` runs `sample_steps`
deterministic DDIM steps (Song et al. 2021) and returns the binary image x0 > 0.
A context vector c (cond_dim > 0) is added to the time embedding of every block.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from metagen.config import GeneratorConfig
from metagen.errors import ConfigError
from metagen.generators.base import Generator
from metagen.registry import GENERATORS


class DiffusionConfig(GeneratorConfig):
    name: Literal["diffusion"] = "diffusion"
    channels: int = Field(32, ge=4)  # U-Net width at full resolution; twice that below (multiple of 4)
    timesteps: int = Field(200, ge=2)
    sample_steps: int = Field(50, ge=1)  # DDIM steps of `sample` (at most `timesteps`)
    eval_steps: int = Field(50, ge=1)  # steps of the respaced chain whose bound `log_prob` reports


def cosine_alpha_bar(T: int, s: float = 0.008) -> torch.Tensor:
    """abar_t for t = 0..T (abar_0 = 1), from the cosine schedule with betas clipped at 0.999."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps t [B] -> [B, dim]."""
    freqs = torch.exp(-math.log(10000) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], -1)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, in_ch // 4) or 1, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(min(8, out_ch // 4) or 1, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """eps(x_t, t, c): [B, C, H, W] -> [B, C, H, W]; two downsamplings (H divisible by 4)."""

    def __init__(self, in_ch: int, ch: int, cond_dim: int) -> None:
        super().__init__()
        self.emb_dim = 4 * ch
        self.time = nn.Sequential(nn.Linear(ch, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim))
        self.cond = nn.Linear(cond_dim, self.emb_dim) if cond_dim else None
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down1 = ResBlock(ch, ch, self.emb_dim)  # H
        self.pool1 = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * ch, 2 * ch, self.emb_dim)  # H/2
        self.pool2 = nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * ch, 2 * ch, self.emb_dim)  # H/4
        self.up2 = ResBlock(4 * ch, 2 * ch, self.emb_dim)  # H/2, with the skip
        self.up1 = ResBlock(3 * ch, ch, self.emb_dim)  # H, with the skip
        self.out = nn.Sequential(nn.GroupNorm(min(8, ch // 4) or 1, ch), nn.SiLU(), nn.Conv2d(ch, in_ch, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.ch = ch

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = self.time(time_embedding(t, self.ch))
        if self.cond is not None and cond is not None:
            emb = emb + self.cond(cond)
        h1 = self.down1(self.inp(x), emb)  # [B, ch, H, W]
        h2 = self.down2(self.pool1(h1), emb)  # [B, 2ch, H/2, W/2]
        h = self.mid(self.pool2(h2), emb)  # [B, 2ch, H/4, W/4]
        h = self.up2(torch.cat([F.interpolate(h, size=h2.shape[-2:]), h2], 1), emb)
        h = self.up1(torch.cat([F.interpolate(h, size=h1.shape[-2:]), h1], 1), emb)
        return self.out(h)


@GENERATORS.register("diffusion")
class Diffusion(Generator):
    Config = DiffusionConfig
    task_params = r"^net\.(up1|out)\."

    def __init__(self, cfg: DiffusionConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim)
        if example_shape[-1] % 4 or example_shape[-2] % 4:
            raise ConfigError(f"diffusion's U-Net needs image sides divisible by 4, got {list(example_shape)}")
        self.cfg = cfg
        self.T = cfg.timesteps
        self.net = UNet(example_shape[0], cfg.channels, cond_dim)
        abar = cosine_alpha_bar(cfg.timesteps)  # [T + 1], float64
        self.register_buffer("abar", abar.float(), persistent=False)

    def _gather(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return v[t].view(-1, *([1] * len(self.example_shape)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._gather(self.abar, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def schedule(self, steps: int) -> dict[str, torch.Tensor]:
        """The chain respaced to `steps` of the trained steps (all of them when steps >= timesteps):
        t [S] (network step numbers, 1 .. T), abar [S + 1], beta [S], var [S] (posterior variances; beta_1 first)."""
        S = min(steps, self.T)
        t = torch.linspace(1, self.T, S, device=self.abar.device).round().long()  # distinct for S <= T
        abar = torch.cat([self.abar[:1], self.abar[t]])
        beta = 1 - abar[1:] / abar[:-1]
        var = torch.cat([beta[:1], beta[1:] * (1 - abar[1:-1]) / (1 - abar[2:])])
        return {"t": t, "abar": abar, "beta": beta, "var": var}

    def _term(self, x0: torch.Tensor, i: int, cond: torch.Tensor | None,
              sched: dict[str, torch.Tensor]) -> torch.Tensor:
        """Term i (1-based) of the bound on chain `sched`, [B] nats: the decoder -log p(x0 | x_1) at i = 1, else
        KL(q(x_{i-1} | x_i, x0) || p(x_{i-1} | x_i))."""
        ab, ab_prev, beta = sched["abar"][i], sched["abar"][i - 1], sched["beta"][i - 1]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)
        eps = self.net(xt, sched["t"][i - 1].expand(x0.shape[0]), cond)
        mu = self._posterior_mean(self._predict_x0(xt, eps, ab), xt, ab, ab_prev, beta)  # mean of p(x_{i-1} | x_i)
        if i == 1:
            return -torch.special.log_ndtr(x0 * mu / beta.sqrt()).flatten(1).sum(-1)  # x0 in {-1, 1}
        mu_q = self._posterior_mean(x0, xt, ab, ab_prev, beta)
        return ((mu_q - mu).pow(2) / (2 * sched["var"][i - 1])).flatten(1).sum(-1)

    @staticmethod
    def _predict_x0(xt: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """The image the predicted noise implies, clipped to the data range [-1, 1] (bound and sampler alike)."""
        return ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)

    @staticmethod
    def _posterior_mean(x0: torch.Tensor, xt: torch.Tensor, ab: torch.Tensor, ab_prev: torch.Tensor,
                        beta: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{i-1} | x_i, x0)."""
        return (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * xt) / (1 - ab)

    def _prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x0) || N(0, I)) [B]."""
        ab = self.abar[-1]
        mean2, var = ab * x0.pow(2), 1 - ab
        return 0.5 * (mean2 + var - 1 - torch.log(var)).flatten(1).sum(-1)

    # -- the generator surface -----------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        """The simple objective: squared error of the predicted noise, summed over pixels, at a random t."""
        self.check_input(x)
        B = x.shape[0]
        cond = self.expand_cond(cond, B)
        self.expand_memory(memory, B)
        x0 = 2 * x - 1
        t = torch.randint(1, self.T + 1, (B,), device=x.device)
        noise = torch.randn_like(x0)
        return (self.net(self.q_sample(x0, t, noise), t, cond) - noise).pow(2).flatten(1).sum(-1).mean()

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """Variational lower bound on log P(x | cond) in nats, [B], of the chain respaced to `eval_steps` steps
        (one noise draw per step; `iw_samples` unused)."""
        self.check_input(x)
        B = x.shape[0]
        cond = self.expand_cond(cond, B)
        self.expand_memory(memory, B)
        x0 = 2 * x - 1
        sched = self.schedule(self.cfg.eval_steps)
        total = self._prior_kl(x0)
        for i in range(1, len(sched["t"]) + 1):
            total = total + self._term(x0, i, cond, sched)
        return -total

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` binary images {0, 1} (as floats) from `sample_steps` DDIM steps (eta = 0)."""
        cond = self.expand_cond(cond, n)
        self.expand_memory(memory, n)
        p = next(self.parameters())
        x = torch.randn(n, *self.example_shape, generator=generator, device=p.device, dtype=p.dtype)
        steps = torch.linspace(self.T, 0, min(self.cfg.sample_steps, self.T) + 1).round().long().tolist()
        for t, t_next in itertools.pairwise(steps):
            eps = self.net(x, torch.full((n,), t, device=p.device), cond)
            ab, ab_next = self.abar[t], self.abar[t_next]
            x0 = self._predict_x0(x, eps, ab)
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return (x > 0).to(p.dtype)
