"""Small causal Transformer language model over characters (nanoGPT-sized down), optionally conditioned.

Token + position embeddings, `layers` pre-norm blocks of causal self-attention and an MLP, a linear head.
The context vector c (cond_dim > 0) is added to every position's embedding. Sampling keeps each block's
keys and values of the prefix (a key/value cache), so a step costs one position, not the whole prefix.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from metagen.generators.text import TextGenerator, TextGeneratorConfig
from metagen.registry import GENERATORS


class TransformerConfig(TextGeneratorConfig):
    name: Literal["transformer"] = "transformer"
    dim: int = Field(128, ge=1)
    heads: int = Field(4, ge=1)
    layers: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads(self) -> TransformerConfig:
        if self.dim % self.heads:
            raise ValueError(f"generator.dim = {self.dim} must be a multiple of generator.heads = {self.heads}")
        return self


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cached(x, None)[0]

    def forward_cached(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: [B, T, D] new positions after the cached prefix's keys/values ([B, heads, P, D / heads] each)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        P = k.shape[2] - T
        # Written out rather than F.scaled_dot_product_attention: MAML differentiates through the inner
        # step's gradient, and the fused CPU kernel has no double backward.
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)  # [B, heads, T, T]
        causal = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(P)  # [T, P + T]
        weights = F.dropout(scores.masked_fill(~causal, -torch.inf).softmax(-1), self.dropout, self.training)
        a = weights @ v  # [B, heads, T, D / heads]
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))  # [B, T, D]
        return x + self.mlp(self.norm2(x)), (k, v)


@GENERATORS.register("transformer")
class CharTransformer(TextGenerator):
    Config = TransformerConfig
    task_params = r"^head\."

    def __init__(self, cfg: TransformerConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(cfg, example_shape, cond_dim, memory_dim)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position = nn.Embedding(self.length, cfg.dim)
        self.cond_in = nn.Linear(cond_dim, cfg.dim) if cond_dim else None
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)

    def logits(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self._run(x, cond, None)[0]

    def _run(self, x: torch.Tensor, cond: torch.Tensor | None, cache: list | None) -> tuple[torch.Tensor, list]:
        """Logits [B, T, V] of tokens x: [B, T] that follow a cached prefix (None: none), and the new cache."""
        P = 0 if cache is None else cache[0][0].shape[2]
        T = x.shape[1]
        h = self.embed(x) + self.position(torch.arange(P, P + T, device=x.device))  # [B, T, D]
        if self.cond_in is not None and cond is not None:
            h = h + self.cond_in(cond)[:, None]
        new_cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block.forward_cached(h, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.norm(h)), new_cache

    def step(self, token: torch.Tensor, state: Any, cond: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        logits, cache = self._run(token[:, None], cond, state)  # state: per block (keys, values) of the prefix
        return logits[:, -1], cache
