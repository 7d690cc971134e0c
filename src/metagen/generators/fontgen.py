"""Content/style glyph translator (FUNIT, Liu et al. 2019, at glyph size): a character in a typeface.

An example is a glyph pair `x: [B, 2, H, W]`: channel 0 the glyph in the typeface, channel 1 the same
character in the reference face (see metagen.data.fonts); learners may add content channels after it
(`refine`: the character in the most similar training faces, `[B, 2 + m, H, W]`), which then also reach the
last layer at full resolution. A content encoder maps the content channels to a
spatial content code `[B, 4ch, H/4, W/4]`; a decoder of AdaIN residual blocks (Huang & Belongie 2017) turns
it into the glyph, with the AdaIN scales and shifts computed from the style code `cond` (the set encoder
of the k support glyphs, under the `context` learner). Without a style code (fine-tune, MAML, Reptile,
scratch) the scales and shifts are parameters of their own, so adapting them adapts the style.

The output is a Bernoulli image over the glyph's pixels given its content and style:
    loss = -log p(glyph | reference, style) = BCE summed over pixels (nats per glyph)
      [+ adv_weight * (hinge loss of a discriminator of (glyph, reference) pairs + the generator's term)],
so `log_prob` is exact for the model; the adversarial term (off by default) follows gan.py: one scalar
whose two terms reach only their own player's weights. Built with a memory (`memory_dim` > 0), every
position of the content code (with its coordinates) also attends over the memory's tokens before the
decoder: with `refine`'s `parts`, the parts of the support glyphs, so a character can borrow the support's
strokes where its parts look alike; with the `attention` learner, one token per support glyph.
`sample(n, cond, content=ref)` draws the pixel probabilities (the mean glyph) for the reference glyphs
`ref: [n, 1, H, W]`; the pair is returned.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import functional_call

from metagen.config import GeneratorConfig
from metagen.errors import ConfigError, DataError
from metagen.generators.base import Generator
from metagen.nets import CrossAttention
from metagen.registry import GENERATORS


class FontGenConfig(GeneratorConfig):
    name: Literal["fontgen"] = "fontgen"
    channels: int = Field(32, ge=4)  # first conv width; the content code has 4x this many channels
    blocks: int = Field(2, ge=1)  # AdaIN residual blocks in the decoder (and plain ones in the content encoder)
    style_hidden: int = Field(128, ge=1)  # MLP from the style code to the AdaIN parameters
    adv_weight: float = Field(0.0, ge=0)  # 0: reconstruction only; > 0 adds a conditional hinge GAN term
    # Where the style enters: the residual blocks at H/4 only (FUNIT), or also both upsampling layers (H/2, H),
    # where stroke weight and serifs are drawn.
    modulate: Literal["blocks", "all"] = "blocks"


def _adain(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Instance-normalise h [B, C, h, w], then scale and shift per example and channel (gamma, beta [B, C])."""
    return F.instance_norm(h) * (1 + gamma[..., None, None]) + beta[..., None, None]


class ResBlock(nn.Module):
    """h + conv(relu(norm(conv(relu(norm(h)))))) with instance norm, or AdaIN given (gamma, beta) [B, 2, C] each."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, h: torch.Tensor, gamma: torch.Tensor | None = None,
                beta: torch.Tensor | None = None) -> torch.Tensor:
        if gamma is None or beta is None:
            y = self.conv1(F.relu(F.instance_norm(h)))
            return h + self.conv2(F.relu(F.instance_norm(y)))
        y = self.conv1(F.relu(_adain(h, gamma[:, 0], beta[:, 0])))
        return h + self.conv2(F.relu(_adain(y, gamma[:, 1], beta[:, 1])))


class ContentEncoder(nn.Module):
    """Content images [B, c, H, W] (the reference glyph, then any retrieved glyphs) -> content codes
    [B, 4ch, H/4, W/4]."""

    def __init__(self, ch: int, blocks: int, in_channels: int = 1) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(in_channels, ch, 3, padding=1), nn.ReLU(),
            nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.ReLU(),  # H/2
            nn.Conv2d(2 * ch, 4 * ch, 4, stride=2, padding=1), nn.ReLU(),  # H/4
        )
        self.blocks = nn.ModuleList(ResBlock(4 * ch) for _ in range(blocks))

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        h = self.down(ref)
        for b in self.blocks:
            h = b(h)
        return h


class Decoder(nn.Module):
    """Content codes [B, 4ch, H/4, W/4] + AdaIN parameters -> glyph logits [B, 1, H, W].

    The style is a flat vector [B, style_size]: per residual block two AdaIN layers' (gamma, beta) of 4ch
    channels, then, with `modulate_up`, (gamma, beta) of the two upsampling layers' 2ch and ch channels.
    With `skip` > 0 the last layer also sees the content images [B, skip, H, W] at full resolution (a glyph
    retrieved from a similar face is mostly right, and its edges should not pass through H/4)."""

    def __init__(self, ch: int, blocks: int, modulate_up: bool = False, skip: int = 0) -> None:
        super().__init__()
        self.ch, self.modulate_up, self.skip = ch, modulate_up, skip
        self.blocks = nn.ModuleList(ResBlock(4 * ch) for _ in range(blocks))
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(4 * ch, 2 * ch, 5, padding=2), nn.ReLU(),  # H/2
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * ch, ch, 5, padding=2), nn.ReLU(),  # H
            nn.Conv2d(ch + skip, 1, 7, padding=3),
        )
        self.style_size = blocks * 2 * 2 * 4 * ch + (2 * (2 * ch + ch) if modulate_up else 0)

    def forward(self, content: torch.Tensor, style: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """content codes, style [B, style_size], and with `skip` the content images [B, skip, H, W]."""
        B, n, c4 = style.shape[0], len(self.blocks), 4 * self.ch
        blocks = style[:, : n * 4 * c4].view(B, n, 2, 2, c4)  # [B, block, layer, (gamma, beta), C]
        h = content
        for i, b in enumerate(self.blocks):
            h = b(h, blocks[:, i, :, 0], blocks[:, i, :, 1])
        ups = style[:, n * 4 * c4 :]
        for upsample, conv in ((self.up[0], self.up[1]), (self.up[3], self.up[4])):
            h = conv(upsample(h))
            if self.modulate_up:
                C = h.shape[1]
                h = _adain(h, ups[:, :C], ups[:, C : 2 * C])
                ups = ups[:, 2 * C :]
            h = F.relu(h)
        if self.skip:
            h = torch.cat([h, images], 1)
        return self.up[6](h)


def coordinates(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """[1, 2, h, w]: each position's (y, x) in [-1, 1]."""
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]


class PairDiscriminator(nn.Module):
    """(glyph, content channels) [B, C, H, W] -> scores [B]."""

    def __init__(self, ch: int, size: int, channels: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * ch * (size // 4) ** 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


@GENERATORS.register("fontgen")
class FontGen(Generator):
    Config = FontGenConfig
    modality = "glyph pairs"
    supports_memory = True
    task_params = r"^(decoder|style)\."  # a hypernetwork emits the decoder and the style mapping

    def __init__(self, cfg: FontGenConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim)
        C, H, W = example_shape
        if C < 2 or H != W or H % 4:
            raise ConfigError(f"generator 'fontgen' needs glyph pairs [2, H, H] with H divisible by 4, got "
                              f"{list(example_shape)}; use data.source = 'fonts' with an image_size divisible by 4")
        self.cfg = cfg
        ch, n = cfg.channels, cfg.blocks
        skip = C - 1 if C > 2 else 0  # retrieved glyphs (and the reference) reach the last layer
        self.decoder = Decoder(ch, n, modulate_up=cfg.modulate == "all", skip=skip)
        out = self.decoder.style_size
        if cond_dim:
            self.style = nn.Sequential(nn.Linear(cond_dim, cfg.style_hidden), nn.ReLU(),
                                       nn.Linear(cfg.style_hidden, out))
        else:  # one style of its own, adapted by gradient learners
            self.style_code = nn.Parameter(torch.zeros(out))
        self.content = ContentEncoder(ch, n, C - 1)
        self.disc = PairDiscriminator(ch, H, C) if cfg.adv_weight > 0 else None
        self.attn = None
        if memory_dim:  # content code positions (+ their coordinates) attend over the memory tokens
            self.attn = CrossAttention(4 * ch + 2, memory_dim, 4 * ch, heads=4)
            nn.init.zeros_(self.attn.out.weight)  # it starts as the model without a memory
            nn.init.zeros_(self.attn.out.bias)

    def _style(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor:
        cond = self.expand_cond(cond, batch)
        return self.style_code.expand(batch, -1) if cond is None else self.style(cond)  # [B, style_size]

    def logits(self, ref: torch.Tensor, cond: torch.Tensor | None,
               memory: torch.Tensor | None = None) -> torch.Tensor:
        """Content images [B, C - 1, H, W] (the reference glyph first) -> glyph logits [B, 1, H, W] in the
        style `cond`, reading the memory [B, M, memory_dim] when built with one."""
        h = self.content(ref)  # [B, 4ch, H/4, W/4]
        memory = self.expand_memory(memory, ref.shape[0])
        if self.attn is not None:
            B, C4, h4, w4 = h.shape
            q = torch.cat([h, coordinates(h4, w4, h).expand(B, -1, -1, -1)], 1).flatten(2).transpose(1, 2)
            h = h + self.attn(q, memory).transpose(1, 2).reshape(B, C4, h4, w4)
        return self.decoder(h, self._style(cond, ref.shape[0]), ref)

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """log p(glyph | reference, style) per pair, [B] nats (exact: pixels are independent given both)."""
        self.check_input(x)
        return pixel_log_prob(self.logits(x[:, 1:], cond, memory), x[:, :1])[:, 0]

    def candidate_log_prob(self, glyphs: torch.Tensor, content: torch.Tensor, cond: torch.Tensor | None = None,
                           memory: torch.Tensor | None = None) -> torch.Tensor:
        """log p(candidate glyph | content, style) for glyphs [B, M, H, W] and content [B, C - 1, H, W], [B, M]
        nats: `log_prob` of each candidate with its content, the decoder run once per content image."""
        return pixel_log_prob(self.logits(content, cond, memory), glyphs)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        logits = self.logits(x[:, 1:], cond, memory)
        nll = -pixel_log_prob(logits, x[:, :1]).mean()
        if self.disc is None:
            return nll
        fake = torch.cat([torch.sigmoid(logits), x[:, 1:]], 1)
        d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(fake.detach())).mean()
        frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        g_loss = -functional_call(self.disc, frozen, (fake,)).mean()
        return nll + self.cfg.adv_weight * (d_loss + g_loss)

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None, content: torch.Tensor | None = None) -> torch.Tensor:
        """Glyph pairs [n, C, H, W] for the content images `content` [n, C - 1, H, W] (the reference glyphs
        [n, 1, H, W] for pairs): the glyph's pixel probabilities, and the content."""
        if content is None:
            raise DataError("the font generator draws given characters: pass content= reference glyphs "
                            "[n, 1, H, W] (metagen font / metagen stylize do)")
        if content.dim() == 3:
            content = content[:, None]
        c = self.example_shape[0] - 1
        if content.shape[0] != n or tuple(content.shape[1:]) != (c, *self.example_shape[1:]):
            raise DataError(f"content must be [{n}, {c}, {self.example_shape[1]}, {self.example_shape[2]}], got "
                            f"{list(content.shape)}")
        content = content.float()
        return torch.cat([torch.sigmoid(self.logits(content, cond, memory)), content], 1)


def pixel_log_prob(logits: torch.Tensor, glyphs: torch.Tensor) -> torch.Tensor:
    """Binary glyphs [B, M, H, W] under independent pixels with logits [B, 1, H, W], [B, M] nats."""
    bce = F.binary_cross_entropy_with_logits(logits.expand_as(glyphs), glyphs.float(), reduction="none")
    return -bce.flatten(2).sum(2)
