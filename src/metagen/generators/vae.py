"""Convolutional VAE for binary images, optionally conditioned on a per-task context vector or map.

With a context c (cond_dim > 0) every distribution sees it: prior p(z|c), encoder q(z|x,c), decoder p(x|z,c)
(Bernoulli pixels), as in the Neural Statistician's conditional VAE. Without one the prior is N(0, I).
With a context map (cond_map > 0: features of the support set laid out over the image's area)
the encoder reads the image and the map stacked as channels, so z describes how this example departs from
the support; the prior reads the map's spatial mean; the decoder takes the map at every scale (MapDecoder).
With a memory of support embeddings (memory_dim > 0) the encoder attends over it with the image's features
and the decoder with the latent z (Generative Matching Networks, Bartunov & Vetrov 2018): what the model
draws is read from the support examples that z points at.
`log_prob` is the importance-weighted bound of Burda et al. (2016):
    log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x),
which tightens as k grows and equals the ELBO at k = 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from metagen.config import GeneratorConfig
from metagen.generators.base import Generator
from metagen.nets import (
    ConvDecoder,
    ConvEncoder,
    CrossAttention,
    MapDecoder,
    gaussian_kl,
    gaussian_log_prob,
    mlp,
    resample,
)
from metagen.registry import GENERATORS


class VAEConfig(GeneratorConfig):
    name: Literal["vae"] = "vae"
    latent_dim: int = Field(32, ge=1)
    channels: int = Field(32, ge=1)  # width of the first conv layer; the second has twice as many
    hidden: int = Field(256, ge=1)
    depth: int = Field(0, ge=0, le=8)  # extra convolutions at H/4 in the encoder and in the decoder
    kernel: int = Field(3, ge=1, le=9)  # the encoder's and those extra convolutions' size (odd)
    iw_chunk: int = Field(4096, ge=1)  # images decoded at once when estimating log_prob
    attn_dim: int = Field(64, ge=1)  # width of the attention readouts (with a memory only)
    attn_heads: int = Field(4, ge=1)
    # Where the attention over a memory sits: the encoder q(z|x, memory), the decoder p(x|z, memory), or both.
    attend: Literal["both", "encoder", "decoder"] = "both"
    # Weight of KL(q(z|x) || p(z)) in the training loss (beta-VAE); log_prob is always the true bound. Above 1
    # it squeezes what z carries, so what a conditioned VAE draws comes from its context instead.
    kl_weight: float = Field(1.0, ge=0)

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (3, 5, 7) so that a convolution keeps the image centred")
        return v


@GENERATORS.register("vae")
class ConvVAE(Generator):
    Config = VAEConfig
    supports_memory = True
    supports_cond_map = True
    task_params = r"^decoder\."

    def __init__(self, cfg: VAEConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0, cond_map: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim, cond_map)
        channels, size = example_shape[0], example_shape[-1]
        self.latent_dim, self.iw_chunk, self.kl_weight = cfg.latent_dim, cfg.iw_chunk, cfg.kl_weight
        # width of an attention readout in the encoder / the decoder
        enc_read = cfg.attn_dim if memory_dim and cfg.attend in ("both", "encoder") else 0
        read = cfg.attn_dim if memory_dim and cfg.attend in ("both", "decoder") else 0
        self.features = ConvEncoder(channels + cond_map, size, cfg.channels, cfg.hidden, cfg.depth, cfg.kernel)
        self.q_head = mlp(cfg.hidden + cond_dim + enc_read, cfg.hidden, 2 * cfg.latent_dim)
        prior_in = cond_dim or cond_map
        self.prior_head = mlp(prior_in, cfg.hidden, 2 * cfg.latent_dim) if prior_in else None
        if cond_map:
            self.decoder: ConvDecoder | MapDecoder = MapDecoder(cfg.latent_dim + read, channels, size, cfg.channels,
                                                                cond_map, cfg.depth, cfg.kernel)
        else:
            self.decoder = ConvDecoder(cfg.latent_dim + cond_dim + read, channels, size, cfg.channels, cfg.depth,
                                       cfg.kernel)
        self.enc_attn = CrossAttention(cfg.hidden, memory_dim, cfg.attn_dim, cfg.attn_heads) if enc_read else None
        self.dec_attn = CrossAttention(cfg.latent_dim, memory_dim, cfg.attn_dim, cfg.attn_heads) if read else None

    # -- the three distributions -------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, cond: torch.Tensor | None,
                  memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cond_map:  # the image and the support's map, stacked as channels
            h = self.features(torch.cat([x, resample(cond, x.shape[-2:])], 1))  # [B, hidden]
            parts = [h]
        else:
            h = self.features(x)  # [B, hidden]
            parts = [h] if cond is None else [h, cond]
        if memory is not None and self.enc_attn is not None:
            parts.append(self.enc_attn(h, memory))  # [B, attn_dim]
        mu, logvar = self.q_head(torch.cat(parts, -1)).chunk(2, -1)  # [B, D] each
        return mu, logvar.clamp(-12, 8)

    def prior(self, cond: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.prior_head is None or cond is None:
            return None, None
        mu, logvar = self.prior_head(cond.mean((-2, -1)) if self.cond_map else cond).chunk(2, -1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None, memory: torch.Tensor | None = None) -> torch.Tensor:
        parts = [z]
        if cond is not None and not self.cond_map:
            parts.append(cond)
        if memory is not None and self.dec_attn is not None:
            parts.append(self.dec_attn(z, memory))  # [B, attn_dim]
        if self.cond_map:
            return self.decoder(torch.cat(parts, -1), cond)  # [B, C, H, W] Bernoulli logits
        return self.decoder(torch.cat(parts, -1))

    # -- the generator surface ---------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO in nats per example (with the KL term weighted by `kl_weight`), averaged over the batch."""
        self.check_input(x)
        cond, memory = self.expand_cond(cond, x.shape[0]), self.expand_memory(memory, x.shape[0])
        mu, logvar = self.posterior(x, cond, memory)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # [B, D]
        logits = self.decode(z, cond, memory)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        kl = gaussian_kl(mu, logvar, *self.prior(cond))  # [B]
        return (rec + self.kl_weight * kl).mean()

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x | cond, memory) in nats, [B]."""
        self.check_input(x)
        B = x.shape[0]
        cond, memory = self.expand_cond(cond, B), self.expand_memory(memory, B)
        mu, logvar = self.posterior(x, cond, memory)  # [B, D]
        p_mu, p_logvar = self.prior(cond)
        if p_mu is None:
            p_mu, p_logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
        chunk = max(1, self.iw_chunk // B)
        log_w = []
        for start in range(0, iw_samples, chunk):
            k = min(chunk, iw_samples - start)
            z = mu + torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device) * (0.5 * logvar).exp()  # [k, B, D]
            c = None if cond is None else cond.expand(k, *cond.shape).reshape(k * B, *cond.shape[1:])
            m = None if memory is None else memory.expand(k, -1, -1, -1).reshape(k * B, *memory.shape[1:])
            logits = self.decode(z.reshape(k * B, -1), c, m).view(k, B, *x.shape[1:])
            log_px = -F.binary_cross_entropy_with_logits(logits, x.expand(k, *x.shape), reduction="none")
            log_w.append(log_px.flatten(2).sum(-1) + gaussian_log_prob(z, p_mu, p_logvar)
                         - gaussian_log_prob(z, mu, logvar))  # [k, B]
        return torch.logsumexp(torch.cat(log_w), 0) - math.log(iw_samples)

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None, binary: bool = False) -> torch.Tensor:
        """`n` images: pixel probabilities in [0, 1] (the decoder's mean), or Bernoulli draws if `binary`."""
        cond, memory = self.expand_cond(cond, n), self.expand_memory(memory, n)
        p_mu, p_logvar = self.prior(cond)
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=dtype)
        z = eps if p_mu is None else p_mu + eps * (0.5 * p_logvar).exp()
        probs = torch.sigmoid(self.decode(z, cond, memory))
        return torch.bernoulli(probs, generator=generator) if binary else probs
