"""DCGAN-sized GAN for 28x28-class images with the hinge loss (Lim & Ye 2017; Miyato et al. 2018).

    D step:  relu(1 - D(x)) + relu(1 + D(G(z)))        G step:  -D(G(z))

Why hinge and not WGAN-GP: no gradient penalty, so no double backward inside every inner step of the
meta-learners (Reptile's, fine-tuning's), and it is the loss spectral-normalised GANs were tuned with.
`loss` returns both players' losses in one scalar, each reaching only its own player's weights: the
discriminator term sees G(z) detached, and the generator term calls the discriminator with detached
weights. One gradient step on it is therefore one simultaneous step of both players, which is what lets
a GAN sit behind the same surface as the likelihood models (FIGR's Reptile adapts both networks this way).
A context vector c (cond_dim > 0) is concatenated to z and enters the discriminator as a projection
term <W c, phi(x)> (Miyato & Koyama 2018); the discriminator sees c detached, so a set encoder upstream
is shaped by the generator's use of it, not by the discriminator. No likelihood: `log_prob` raises, and
GANs are judged by the sample metrics.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from metagen.config import GeneratorConfig
from metagen.errors import ConfigError
from metagen.generators.base import Generator
from metagen.registry import GENERATORS


class GANConfig(GeneratorConfig):
    name: Literal["gan"] = "gan"
    latent_dim: int = Field(64, ge=1)
    channels: int = Field(64, ge=1)  # generator's last / discriminator's first conv width; the other is 2x
    spectral_norm: bool = False  # spectral normalisation of the discriminator (not under vmap: it keeps state)
    # Weight of the discriminator's term in `loss`: its step size relative to the generator's in SGD inner
    # loops (Reptile, MAML-style adaptation). Adam normalises gradient scale away, so under the outer Adam it
    # changes little: give the players separate learning rates with train.lr_scale instead (TTUR).
    d_weight: float = Field(1.0, gt=0)
    # Std of Gaussian noise added to every image the discriminator sees (Sonderby et al. 2016). Without it
    # the discriminator wins at once on binary data: real pixels are exactly 0 or 1, generated ones never.
    instance_noise: float = Field(0.5, ge=0)


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


class Discriminator(nn.Module):
    """Images [B, C, H, W] (+ context [B, cond_dim]) -> scores [B]."""

    def __init__(self, in_ch: int, size: int, ch: int, cond_dim: int, sn: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _sn(nn.Conv2d(in_ch, ch, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),  # H/2
            _sn(nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),  # H/4
        )
        feat = 2 * ch * (size // 4) ** 2
        self.fc = nn.Sequential(nn.Flatten(), _sn(nn.Linear(feat, 256), sn), nn.LeakyReLU(0.2))
        self.score = _sn(nn.Linear(256, 1), sn)
        self.project = nn.Linear(cond_dim, 256, bias=False) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        phi = self.fc(self.conv(x))  # [B, 256]
        out = self.score(phi)[:, 0]
        if self.project is not None and cond is not None:
            out = out + (self.project(cond) * phi).sum(-1)
        return out


class GeneratorNet(nn.Module):
    """Codes [B, latent (+ cond)] -> images in [0, 1], [B, C, H, W]."""

    def __init__(self, in_dim: int, out_ch: int, size: int, ch: int) -> None:
        super().__init__()
        self.shape = (2 * ch, size // 4, size // 4)
        self.fc = nn.Sequential(nn.Linear(in_dim, 2 * ch * (size // 4) ** 2), nn.ReLU())
        # Nearest upsampling then a 3x3 conv, not a stride-2 transposed conv: the latter's uneven overlap draws
        # a checkerboard (Odena et al. 2016), which on Omniglot came out as dotted strokes.
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * ch, ch, 3, padding=1), nn.ReLU(),  # H/2
            nn.Upsample(scale_factor=2), nn.Conv2d(ch, out_ch, 3, padding=1), nn.Sigmoid(),  # H
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, *self.shape))


@GENERATORS.register("gan")
class GAN(Generator):
    Config = GANConfig
    has_log_prob = False
    adversarial = True
    task_params = r"^gen\."

    def __init__(self, cfg: GANConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim)
        C, H, W = example_shape
        if H != W or H % 4:
            raise ConfigError(f"the GAN needs square images with a side divisible by 4, got {H}x{W}")
        self.cfg = cfg
        self.gen = GeneratorNet(cfg.latent_dim + cond_dim, C, H, cfg.channels)
        self.disc = Discriminator(C, H, cfg.channels, cond_dim, cfg.spectral_norm)

    def generate(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.gen(z if cond is None else torch.cat([z, cond], -1))

    def _frozen_disc(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The discriminator with its current weights detached: gradients reach x only."""
        params = {k: v.detach() for k, v in self.disc.named_parameters()}
        return functional_call(self.disc, params, (x, cond))

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cfg.instance_noise * torch.randn_like(x) if self.cfg.instance_noise else x

    def losses(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(discriminator hinge loss, generator loss), scalars, on real images x [B, ...]."""
        z = torch.randn(x.shape[0], self.cfg.latent_dim, device=x.device, dtype=x.dtype)
        fake = self.generate(z, cond)
        c = None if cond is None else cond.detach()
        x, fake = self._noisy(x), self._noisy(fake)
        d_loss = F.relu(1 - self.disc(x, c)).mean() + F.relu(1 + self.disc(fake.detach(), c)).mean()
        g_loss = -self._frozen_disc(fake, c).mean()
        return d_loss, g_loss

    # -- the generator surface -----------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        """d_weight * discriminator loss + generator loss; each player's gradient comes from its own term."""
        self.check_input(x)
        self.expand_memory(memory, x.shape[0])
        d_loss, g_loss = self.losses(x, self.expand_cond(cond, x.shape[0]))
        return self.cfg.d_weight * d_loss + g_loss

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` images with pixel intensities in [0, 1]."""
        cond = self.expand_cond(cond, n)
        self.expand_memory(memory, n)
        p = next(self.parameters())
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.generate(z, cond)
