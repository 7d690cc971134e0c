"""RealNVP / Glow-style normalizing flow for binary images, optionally conditioned on a context vector.

Binary pixels x in {0, 1}^D are dequantized, y = (x + u) / 2 with u ~ U[0, 1)^D (so y lies in the half of
[0, 1) that x names), mapped to logit space, s = logit(a + (1 - 2a) y), and an invertible network takes s
to z ~ N(0, I):
    checkerboard affine couplings at full resolution, then per level: squeeze (C, H, W) -> (4C, H/2, W/2)
    and `depth` x [invertible 1x1 convolution (Glow), channel-split affine coupling].
Dequantization gives a bound on the discrete likelihood (Theis et al. 2016):
    log P(x) = log E_u p_y((x + u) / 2) - D log 2  >=  log (1/k) sum_i p_y((x + u_i) / 2) - D log 2,
so `loss` (k = 1) and `log_prob` (k = min(iw_samples, iw_cap)) are in nats per image, comparable with the
VAE's Bernoulli likelihood. With a context c (cond_dim > 0) every coupling network gets a per-channel
shift computed from c. Sampling inverts the flow and returns the binary x that the drawn y falls in.
"""

from __future__ import annotations

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

ALPHA = 0.05  # logit(a + (1 - 2a) y) keeps s finite at y = 0


class FlowConfig(GeneratorConfig):
    name: Literal["flow"] = "flow"
    hidden: int = Field(64, ge=1)  # width of each coupling network
    checkerboard: int = Field(4, ge=0)  # checkerboard couplings at full resolution
    levels: int = Field(2, ge=1)  # squeezes; the image side must be divisible by 2**levels
    depth: int = Field(4, ge=1)  # [1x1 conv, channel coupling] steps per level
    iw_cap: int = Field(64, ge=1)  # most dequantization draws `log_prob` averages (importance-weighted bound)


class CouplingNet(nn.Module):
    """[B, in, H, W] (+ context [B, cond_dim]) -> (log-scale, shift), each [B, out, H, W]; starts at identity."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, cond_dim: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv_mid = nn.Conv2d(hidden, hidden, 1)
        self.conv_out = nn.Conv2d(hidden, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim else None
        self.scale = nn.Parameter(torch.ones(out_channels, 1, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_in(x)
        if self.cond is not None and cond is not None:
            h = h + self.cond(cond)[:, :, None, None]
        h = F.relu(self.conv_mid(F.relu(h)))
        raw_s, t = self.conv_out(F.relu(h)).chunk(2, 1)
        return self.scale * torch.tanh(raw_s), t  # bounded log-scale keeps early training stable


class Checkerboard(nn.Module):
    """Affine coupling that updates the pixels where the checkerboard is 0 given those where it is 1."""

    def __init__(self, channels: int, size: int, hidden: int, cond_dim: int, parity: int) -> None:
        super().__init__()
        ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.register_buffer("mask", ((ii + jj + parity) % 2).float()[None, None], persistent=False)
        self.net = CouplingNet(channels, channels, hidden, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, t = self.net(x * self.mask, cond)
        keep = 1 - self.mask
        log_s, t = log_s * keep, t * keep
        return x * log_s.exp() + t, log_s.flatten(1).sum(-1)

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        log_s, t = self.net(y * self.mask, cond)  # the masked half passes through unchanged
        keep = 1 - self.mask
        return (y - t * keep) * (-log_s * keep).exp()


class ChannelCoupling(nn.Module):
    """Glow step: invertible 1x1 convolution, then an affine coupling of the second channel half on the first."""

    def __init__(self, channels: int, hidden: int, cond_dim: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))  # random rotation; det = +-1 to start
        self.weight = nn.Parameter(q)
        self.half = channels // 2
        self.net = CouplingNet(self.half, channels - self.half, hidden, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = x.shape[-2:]
        x = torch.einsum("ij,bjhw->bihw", self.weight, x)
        logdet = H * W * torch.linalg.slogdet(self.weight)[1]
        a, b = x[:, :self.half], x[:, self.half:]
        log_s, t = self.net(a, cond)
        return torch.cat([a, b * log_s.exp() + t], 1), log_s.flatten(1).sum(-1) + logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        a, b = y[:, :self.half], y[:, self.half:]
        log_s, t = self.net(a, cond)
        x = torch.cat([a, (b - t) * (-log_s).exp()], 1)
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.weight), x)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2], each 2x2 block into channels."""
    B, C, H, W = x.shape
    return x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    return x.view(B, C // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, C // 4, 2 * H, 2 * W)


@GENERATORS.register("flow")
class Flow(Generator):
    Config = FlowConfig
    task_params = r"\.net\.conv_out\."  # the last layer of every coupling network

    def __init__(self, cfg: FlowConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim)
        channels, height, width = example_shape
        if height != width or height % 2 ** cfg.levels:
            raise ConfigError(f"flow needs square images whose side divides by 2**levels = {2 ** cfg.levels}; "
                              f"got {height}x{width}: lower generator.levels")
        self.cfg = cfg
        self.checkers = nn.ModuleList(Checkerboard(channels, height, cfg.hidden, cond_dim, i % 2)
                                      for i in range(cfg.checkerboard))
        self.steps = nn.ModuleList(
            nn.ModuleList(ChannelCoupling(channels * 4 ** (lv + 1), cfg.hidden, cond_dim) for _ in range(cfg.depth))
            for lv in range(cfg.levels))

    # -- the invertible map --------------------------------------------------------------------------------
    def transform(self, y: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized images y in [0, 1)^D [B, C, H, W] -> (z [B, C 4^L, H/2^L, W/2^L], log|det dz/dy| [B])."""
        p = ALPHA + (1 - 2 * ALPHA) * y
        s = torch.log(p) - torch.log1p(-p)
        logdet = (math.log(1 - 2 * ALPHA) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(-1)
        for layer in self.checkers:
            s, ld = layer(s, cond)
            logdet = logdet + ld
        for level in self.steps:
            s = squeeze(s)
            for layer in level:
                s, ld = layer(s, cond)
                logdet = logdet + ld
        return s, logdet

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The inverse of `transform`: z -> y in (0, 1)."""
        s = z
        for level in reversed(self.steps):
            for layer in reversed(level):
                s = layer.inverse(s, cond)
            s = unsqueeze(s)
        for layer in reversed(self.checkers):
            s = layer.inverse(s, cond)
        return (torch.sigmoid(s) - ALPHA) / (1 - 2 * ALPHA)

    def density(self, y: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """log p_y(y) [B]: the continuous density of dequantized images."""
        z, logdet = self.transform(y, cond)
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(-1) + logdet

    def _discrete(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """One-draw dequantization bound on log P(x) [B]."""
        y = (x + torch.rand_like(x)) / 2
        return self.density(y, cond) - x[0].numel() * math.log(2)

    # -- the generator surface -----------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        """Negative dequantization bound in nats per example, averaged over the batch."""
        self.check_input(x)
        self.expand_memory(memory, x.shape[0])
        return -self._discrete(x, self.expand_cond(cond, x.shape[0])).mean()

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """Importance-weighted dequantization bound on log P(x | cond) in nats, [B] (k = min(iw_samples, iw_cap))."""
        self.check_input(x)
        B = x.shape[0]
        self.expand_memory(memory, B)
        cond = self.expand_cond(cond, B)
        k = min(iw_samples, self.cfg.iw_cap)
        c = None if cond is None else cond.repeat(k, 1)
        log_w = self._discrete(x.repeat(k, 1, 1, 1), c).view(k, B)
        return torch.logsumexp(log_w, 0) - math.log(k)

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` binary images {0, 1} (as floats): the pixel halves the flow's draws of y land in."""
        cond = self.expand_cond(cond, n)
        self.expand_memory(memory, n)
        C, H, W = self.example_shape
        L = self.cfg.levels
        p = next(self.parameters())
        z = torch.randn(n, C * 4 ** L, H // 2 ** L, W // 2 ** L, generator=generator, device=p.device, dtype=p.dtype)
        return (self.inverse(z, cond) >= 0.5).to(p.dtype)
