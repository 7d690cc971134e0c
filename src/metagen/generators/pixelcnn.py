"""Gated PixelCNN (van den Oord et al. 2016) for binary images: exact log-likelihood, pixel-by-pixel sampling.

    log p(x | c) = sum_i log Bernoulli(x_i; sigmoid(f_i(x_<i, c)))     (raster order)
(with several channels, those of one pixel are independent given the pixels before it).

Two stacks remove the blind spot of masked convolutions: a vertical stack that sees every row above, and
a horizontal stack that sees the pixels to the left in the current row and reads the vertical stack one
row up. Each layer is a gated unit tanh(a) * sigmoid(b). Conditioning, all optional: a context vector
c (cond_dim > 0) adds a learned bias to every gate (conditional PixelCNN); a context map (cond_map > 0,
features of the support set over the image, upsampled to it) adds a learned bias to every gate at every
pixel (the spatial conditioning of van den Oord et al.; it is computed from the support, not from x, so
causality is kept); a memory of support embeddings
(memory_dim > 0) is read at every pixel by cross-attention from the horizontal stack's causal features
(the attention PixelCNN of Reed et al. 2018's few-shot density estimation), so causality is kept.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from metagen.config import GeneratorConfig
from metagen.errors import ConfigError
from metagen.generators.base import Generator
from metagen.nets import CrossAttention, resample
from metagen.registry import GENERATORS


class PixelCNNConfig(GeneratorConfig):
    name: Literal["pixelcnn"] = "pixelcnn"
    channels: int = Field(32, ge=1)  # width of both stacks
    layers: int = Field(6, ge=1)  # gated layers after the first (masked) one
    kernel: int = Field(5, ge=3)  # odd
    attn_dim: int = Field(32, ge=1)  # width of the attention readout (with a memory only)
    attn_heads: int = Field(4, ge=1)
    attn_every: int = Field(2, ge=1)  # attend over the memory in every this-many layers


class GatedLayer(nn.Module):
    """One layer of both stacks. `first`: the horizontal stack must not see the current pixel (mask A)."""

    def __init__(self, in_ch: int, ch: int, k: int, cond_dim: int, first: bool, read_dim: int,
                 cond_map: int = 0) -> None:
        super().__init__()
        self.k, self.first = k, first
        self.v_conv = nn.Conv2d(in_ch, 2 * ch, (k // 2 + 1, k))  # rows i - k//2 .. i, after top padding
        self.h_conv = nn.Conv2d(in_ch, 2 * ch, (1, k // 2 + 1))  # columns j - k//2 .. j, after left padding
        self.v_to_h = nn.Conv2d(2 * ch, 2 * ch, 1)
        self.h_out = nn.Conv2d(ch, ch, 1)
        self.cond = nn.Linear(cond_dim, 2 * ch) if cond_dim else None
        self.cond_map = nn.Conv2d(cond_map, 2 * ch, 1) if cond_map else None
        self.read = nn.Linear(read_dim, 2 * ch) if read_dim else None

    @staticmethod
    def gate(a: torch.Tensor) -> torch.Tensor:
        x, y = a.chunk(2, 1)
        return torch.tanh(x) * torch.sigmoid(y)

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None,
                read: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """v, h: [B, in, H, W]; cond [B, cond_dim] or a map [B, cond_map, H, W] (the rows of v and h);
        read [B, read_dim, H, W] (attention over the memory)."""
        v_pre = self.vertical(v)  # [B, 2ch, H, W], rows <= i
        v_down = F.pad(v_pre, (0, 0, 1, 0))[..., :-1, :]  # shift down: the horizontal stack reads rows < i
        return self.v_out(v_pre, cond), self.horizontal(h, v_down, cond, read)

    def vertical(self, v: torch.Tensor) -> torch.Tensor:
        """The vertical stack's pre-activation [B, 2ch, H, W]: row i sees rows <= i of v."""
        k = self.k
        return self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))

    def v_out(self, v_pre: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.gate(v_pre + self._bias(cond))

    def horizontal(self, h: torch.Tensor, v_down: torch.Tensor, cond: torch.Tensor | None,
                   read: torch.Tensor | None) -> torch.Tensor:
        """The horizontal stack's output [B, ch, R, W] from its input h [B, in, R, W] and the vertical stack's
        pre-activation of the row above each row, v_down [B, 2ch, R, W]: every op is within a row."""
        h_pre = self.h_conv(F.pad(h, (self.k // 2, 0, 0, 0)))  # columns <= j
        if self.first:  # shift right: columns < j only
            h_pre = F.pad(h_pre, (1, 0))[..., :-1]
        h_pre = h_pre + self.v_to_h(v_down) + self._bias(cond)
        if self.read is not None and read is not None:
            h_pre = h_pre + self.read(read.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h_new = self.h_out(self.gate(h_pre))
        return h_new if self.first else h + h_new

    def _bias(self, cond: torch.Tensor | None) -> torch.Tensor | float:
        """[B, 2ch, 1, 1] from a context vector, [B, 2ch, R, W] from a context map's rows, or 0."""
        if cond is None:
            return 0.0
        if self.cond_map is not None:
            return self.cond_map(cond)
        return self.cond(cond)[:, :, None, None] if self.cond is not None else 0.0


@GENERATORS.register("pixelcnn")
class PixelCNN(Generator):
    Config = PixelCNNConfig
    supports_memory = True
    supports_cond_map = True
    task_params = r"^head\."

    def __init__(self, cfg: PixelCNNConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0, cond_map: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim, cond_map)
        if cfg.kernel % 2 == 0:
            raise ConfigError(f"generator.kernel must be odd, got {cfg.kernel}")
        self.cfg = cfg
        C, ch = example_shape[0], cfg.channels
        self.attends = [memory_dim > 0 and i > 0 and i % cfg.attn_every == 0 for i in range(cfg.layers + 1)]
        read = cfg.attn_dim if memory_dim else 0
        self.layers = nn.ModuleList(
            GatedLayer(C if i == 0 else ch, ch, cfg.kernel, cond_dim, i == 0, read if self.attends[i] else 0,
                       cond_map)
            for i in range(cfg.layers + 1))
        self.attn = nn.ModuleDict({str(i): CrossAttention(ch, memory_dim, cfg.attn_dim, cfg.attn_heads)
                                   for i, a in enumerate(self.attends) if a})
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 1), nn.ReLU(), nn.Conv2d(ch, C, 1))

    def logits(self, x: torch.Tensor, cond: torch.Tensor | None, memory: torch.Tensor | None) -> torch.Tensor:
        """Bernoulli logits [B, C, H, W]; pixel (i, j) depends only on pixels before it in raster order."""
        v = h = x * 2 - 1
        for i, layer in enumerate(self.layers):
            v, h = layer(v, h, cond, self._read(i, h, memory))
        return self.head(h)

    def _read(self, i: int, h: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor | None:
        """Layer i's attention readout [B, attn_dim, R, W] over the memory, queried by every pixel's h."""
        if not self.attends[i] or memory is None:
            return None
        B, ch, R, W = h.shape
        q = h.permute(0, 2, 3, 1).reshape(B, R * W, ch)  # causal features of every pixel
        return self.attn[str(i)](q, memory).view(B, R, W, -1).permute(0, 3, 1, 2)

    def _rows_above(self, x_above: torch.Tensor, cond: torch.Tensor | None) -> list[torch.Tensor]:
        """Per layer, the vertical stack's pre-activation of the last row of x_above [B, C, i, W]: what row i's
        horizontal stack reads ([B, 2ch, 1, W]; zeros for the first row)."""
        B, _, i, W = x_above.shape
        if i == 0:
            return [x_above.new_zeros(B, 2 * self.cfg.channels, 1, W) for _ in self.layers]
        v, rows = x_above * 2 - 1, []
        for layer in self.layers:
            v_pre = layer.vertical(v)
            rows.append(v_pre[:, :, -1:])
            v = layer.v_out(v_pre, cond)
        return rows

    def _row_logits(self, x_row: torch.Tensor, rows_above: list[torch.Tensor], cond: torch.Tensor | None,
                    memory: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, C, 1, W] of one row x_row [B, C, 1, W], given `_rows_above` for it."""
        h = x_row * 2 - 1
        for i, layer in enumerate(self.layers):
            h = layer.horizontal(h, rows_above[i], cond, self._read(i, h, memory))
        return self.head(h)

    def _full_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The context for `batch` images; a context map is resampled to the image's size [B, D, H, W]."""
        cond = self.expand_cond(cond, batch)
        return resample(cond, self.example_shape[1:]) if self.cond_map else cond

    def _rows(self, cond: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
        """A context map's `rows` (what the layers add to those rows' gates); a vector context as it is."""
        return cond[:, :, rows] if self.cond_map and cond is not None else cond

    # -- the generator surface -----------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        """Exact negative log-likelihood in nats per example, averaged over the batch."""
        return -self.log_prob(x, cond, memory).mean()

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """Exact log p(x | cond, memory) in nats, [B]; `iw_samples` is unused."""
        self.check_input(x)
        B = x.shape[0]
        logits = self.logits(x, self._full_cond(cond, B), self.expand_memory(memory, B))
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` binary images {0, 1} (as floats), drawn one pixel at a time in raster order."""
        cond, memory = self._full_cond(cond, n), self.expand_memory(memory, n)
        p = next(self.parameters())
        C, H, W = self.example_shape
        x = torch.zeros(n, C, H, W, device=p.device, dtype=p.dtype)
        for i in range(H):
            # The vertical stack reads rows < i only: once per row. Per pixel, only row i's horizontal stack runs.
            above = self._rows_above(x[:, :, :i], self._rows(cond, slice(0, i)))
            row_cond = self._rows(cond, slice(i, i + 1))
            for j in range(W):  # a pixel's channels see only earlier pixels, so one pass draws them all
                probs = torch.sigmoid(self._row_logits(x[:, :, i : i + 1], above, row_cond, memory)[:, :, 0, j])
                x[:, :, i, j] = torch.bernoulli(probs, generator=generator)
        return x
