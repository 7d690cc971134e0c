"""Convolutional VAE for binary images, optionally conditioned on a per-task context vector.

With a context c (cond_dim > 0) every distribution sees it: prior p(z|c), encoder q(z|x,c), decoder p(x|z,c)
(Bernoulli pixels), as in the Neural Statistician's conditional VAE. Without one the prior is N(0, I).
`log_prob` is the importance-weighted bound of Burda et al. (2016):
    log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x),
which tightens as k grows and equals the ELBO at k = 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from metagen.config import GeneratorConfig
from metagen.generators.base import Generator
from metagen.nets import ConvDecoder, ConvEncoder, gaussian_kl, gaussian_log_prob, mlp
from metagen.registry import GENERATORS


class VAEConfig(GeneratorConfig):
    name: Literal["vae"] = "vae"
    latent_dim: int = Field(32, ge=1)
    channels: int = Field(32, ge=1)  # width of the first conv layer; the second has twice as many
    hidden: int = Field(256, ge=1)
    iw_chunk: int = Field(4096, ge=1)  # images decoded at once when estimating log_prob


@GENERATORS.register("vae")
class ConvVAE(Generator):
    Config = VAEConfig

    def __init__(self, cfg: VAEConfig, example_shape: tuple[int, ...], cond_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim)
        channels, size = example_shape[0], example_shape[-1]
        self.latent_dim, self.iw_chunk = cfg.latent_dim, cfg.iw_chunk
        self.features = ConvEncoder(channels, size, cfg.channels, cfg.hidden)
        self.q_head = mlp(cfg.hidden + cond_dim, cfg.hidden, 2 * cfg.latent_dim)
        self.prior_head = mlp(cond_dim, cfg.hidden, 2 * cfg.latent_dim) if cond_dim else None
        self.decoder = ConvDecoder(cfg.latent_dim + cond_dim, channels, size, cfg.channels)

    # -- the three distributions -------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)  # [B, hidden]
        if cond is not None:
            h = torch.cat([h, cond], -1)
        mu, logvar = self.q_head(h).chunk(2, -1)  # [B, D] each
        return mu, logvar.clamp(-12, 8)

    def prior(self, cond: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.prior_head is None or cond is None:
            return None, None
        mu, logvar = self.prior_head(cond).chunk(2, -1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is not None:
            z = torch.cat([z, cond], -1)
        return self.decoder(z)  # [B, C, H, W] Bernoulli logits

    # -- the generator surface ---------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO in nats per example, averaged over the batch."""
        self.check_input(x)
        cond = self.expand_cond(cond, x.shape[0])
        mu, logvar = self.posterior(x, cond)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # [B, D]
        rec = F.binary_cross_entropy_with_logits(self.decode(z, cond), x, reduction="none").flatten(1).sum(-1)
        kl = gaussian_kl(mu, logvar, *self.prior(cond))  # [B]
        return (rec + kl).mean()

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, iw_samples: int = 1000) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x | cond) in nats, [B]."""
        self.check_input(x)
        B = x.shape[0]
        cond = self.expand_cond(cond, B)
        mu, logvar = self.posterior(x, cond)  # [B, D]
        p_mu, p_logvar = self.prior(cond)
        if p_mu is None:
            p_mu, p_logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
        chunk = max(1, self.iw_chunk // B)
        log_w = []
        for start in range(0, iw_samples, chunk):
            k = min(chunk, iw_samples - start)
            z = mu + torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device) * (0.5 * logvar).exp()  # [k, B, D]
            c = None if cond is None else cond.expand(k, -1, -1).reshape(k * B, -1)
            logits = self.decode(z.reshape(k * B, -1), c).view(k, B, *x.shape[1:])
            log_px = -F.binary_cross_entropy_with_logits(logits, x.expand(k, *x.shape), reduction="none")
            log_w.append(log_px.flatten(2).sum(-1) + gaussian_log_prob(z, p_mu, p_logvar)
                         - gaussian_log_prob(z, mu, logvar))  # [k, B]
        return torch.logsumexp(torch.cat(log_w), 0) - math.log(iw_samples)

    def sample(self, n: int, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               binary: bool = False) -> torch.Tensor:
        """`n` images: pixel probabilities in [0, 1] (the decoder's mean), or Bernoulli draws if `binary`."""
        cond = self.expand_cond(cond, n)
        p_mu, p_logvar = self.prior(cond)
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)
        z = eps if p_mu is None else p_mu + eps * (0.5 * p_logvar).exp()
        probs = torch.sigmoid(self.decode(z, cond))
        return torch.bernoulli(probs, generator=generator) if binary else probs
