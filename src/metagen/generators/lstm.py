"""Character LSTM language model (the seeds' MAML-trained LSTM), optionally conditioned on a context vector.

    h_t = LSTM(embed(x_t) + W c, h_{t-1}),    p(x_{t+1} | x_<=t, c) = softmax(head(h_t))

The context c (cond_dim > 0) is added to every input embedding and also sets the initial state, so the
style is known before the first character.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from metagen.generators.text import TextGenerator, TextGeneratorConfig
from metagen.registry import GENERATORS


class LSTMConfig(TextGeneratorConfig):
    name: Literal["lstm"] = "lstm"
    embed_dim: int = Field(64, ge=1)
    hidden: int = Field(256, ge=1)
    layers: int = Field(1, ge=1)


@GENERATORS.register("lstm")
class CharLSTM(TextGenerator):
    Config = LSTMConfig
    task_params = r"^head\."  # what a hypernetwork emits by default: the output layer

    def __init__(self, cfg: LSTMConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(cfg, example_shape, cond_dim, memory_dim)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.cond_in = nn.Linear(cond_dim, cfg.embed_dim) if cond_dim else None
        self.cond_h0 = nn.Linear(cond_dim, 2 * cfg.layers * cfg.hidden) if cond_dim else None
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def _inputs(self, tokens: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """tokens [B, T] -> LSTM inputs [B, T, E]."""
        e = self.embed(tokens)
        return e if self.cond_in is None or cond is None else e + self.cond_in(cond)[:, None]

    def _h0(self, cond: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.cond_h0 is None or cond is None:
            return None
        L, H = self.cfg.layers, self.cfg.hidden
        h, c = torch.tanh(self.cond_h0(cond)).view(batch, 2, L, H).permute(1, 2, 0, 3)  # [L, B, H] each
        return h.contiguous(), c.contiguous()

    def logits(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        out, _ = self.lstm(self._inputs(x, cond), self._h0(cond, x.shape[0]))  # [B, L, H]
        return self.head(out)

    def step(self, token: torch.Tensor, state: Any, cond: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        if state is None:
            state = self._h0(cond, token.shape[0])
        out, state = self.lstm(self._inputs(token[:, None], cond), state)  # [B, 1, H]
        return self.head(out[:, 0]), state
