"""What character-level language models share: exact log-likelihood, and sampling with temperature, top-k
and a prompt.

A text is token ids x [B, L]: a boundary mark, the characters, a closing boundary mark, then padding
(metagen.data.text.CharVocab). The model predicts every token after the first from the ones before it:

    log p(x | c) = sum_{t=1}^{T} log p(x_t | x_<t, c)       (T: the position of the closing boundary)

so a text's probability includes where it ends. A family defines `logits(x, cond)` (teacher forcing: [B, L, V],
position t predicting token t+1) and `step(token, state, cond)` (one token at a time, for sampling).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from metagen.config import GeneratorConfig
from metagen.data.text import CharVocab
from metagen.errors import ConfigError, DataError
from metagen.generators.base import Generator


class TextGeneratorConfig(GeneratorConfig):
    vocab_size: int = Field(0, ge=0)  # filled in from the data's vocabulary when a run starts


class TextGenerator(Generator):
    modality: ClassVar[str] = "text"  # examples are token ids [L]

    def __init__(self, cfg: TextGeneratorConfig, example_shape: tuple[int, ...], cond_dim: int = 0,
                 memory_dim: int = 0) -> None:
        super().__init__(example_shape, cond_dim, memory_dim)
        if len(self.example_shape) != 1:
            raise ConfigError(f"generator '{cfg.name}' models text (examples [L] of token ids), not examples of "
                              f"shape {list(example_shape)}; use it with data.source = 'fortunes' or 'tunes'")
        if cfg.vocab_size <= CharVocab.RESERVED:
            raise ConfigError(f"generator.vocab_size = {cfg.vocab_size}: text generators take it from the data's "
                              "vocabulary (metagen.train.prepare sets it); build them through a run or a checkpoint")
        self.cfg, self.vocab_size, self.length = cfg, cfg.vocab_size, self.example_shape[0]

    # Families implement these two.
    def logits(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """x [B, L] -> [B, L, V]: position t scores token t + 1."""
        raise NotImplementedError

    def step(self, token: torch.Tensor, state: Any, cond: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """token [B] (the latest), state (None at the start) -> (logits of the next token [B, V], new state)."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.dtype != torch.long:
            raise DataError(f"{type(self).__name__} expects token ids (int64), got {x.dtype}")

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                 iw_samples: int = 1000) -> torch.Tensor:
        """[B] exact log p(x | c) in nats; padding after the closing boundary is not scored."""
        self.check_input(x)
        self.expand_memory(memory, x.shape[0])
        logp = next_token_log_probs(self.logits(x, self.expand_cond(cond, x.shape[0])))[:, :-1]  # [B, L-1, V]
        target = x[:, 1:]  # [B, L-1]
        per_token = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, L-1]
        return torch.where(scored(x) > 0, per_token, 0.0).sum(-1)  # padding targets have log-probability -inf

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None,
             memory: torch.Tensor | None = None) -> torch.Tensor:
        return -self.log_prob(x, cond, memory).mean()

    def sample(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0, top_k: int | None = None,
               prompt: torch.Tensor | None = None) -> torch.Tensor:
        """[n, L] token ids (see `sample_with_log_prob`)."""
        return self.sample_with_log_prob(n, cond, memory, generator, temperature, top_k, prompt)[0]

    def sample_with_log_prob(self, n: int, cond: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                             generator: torch.Generator | None = None, temperature: float = 1.0,
                             top_k: int | None = None, prompt: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(texts [n, L], the log-probability of each under the distribution it was drawn from [n]).

        Each next token is drawn from softmax(logits / temperature), restricted to the `top_k` likeliest;
        `prompt` (token ids [P], no boundary mark) is forced as the text's first characters. A text that
        has not closed by position L - 1 is cut there (it then has no closing boundary)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cond = self.expand_cond(cond, n)
        self.expand_memory(memory, n)
        device = next(self.parameters()).device
        forced = [] if prompt is None else prompt.tolist()
        if len(forced) + 2 > self.length:
            raise DataError(f"the prompt has {len(forced)} characters; at most {self.length - 2} fit")
        x = torch.full((n, self.length), CharVocab.PAD, dtype=torch.long, device=device)
        x[:, 0] = CharVocab.BOUNDARY
        total = torch.zeros(n, device=device, dtype=torch.promote_types(next(self.parameters()).dtype,
                                                                        torch.float32))
        done = torch.zeros(n, dtype=torch.bool, device=device)
        state = None
        for t in range(1, self.length):
            logits, state = self.step(x[:, t - 1], state, cond)  # [n, V]
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, -1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -torch.inf)
            logp = next_token_log_probs(logits)  # [n, V]
            if t - 1 < len(forced):
                token = torch.full((n,), forced[t - 1], dtype=torch.long, device=device)
            else:
                token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            token = torch.where(done, torch.full_like(token, CharVocab.PAD), token)
            total = total + torch.where(done, torch.zeros_like(total), logp.gather(-1, token[:, None]).squeeze(-1))
            x[:, t] = token
            done = done | (token == CharVocab.BOUNDARY)
            if bool(done.all()):
                break
        return x, total


def next_token_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the vocabulary without the padding id, which is never a next token: [..., V]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).clone()  # at least float32
    logits[..., CharVocab.PAD] = -torch.inf
    return F.log_softmax(logits, -1)


def scored(x: torch.Tensor) -> torch.Tensor:
    """[B, L-1] float mask of the predicted tokens x[:, 1:] up to and including the closing boundary."""
    target = x[:, 1:]
    closing = (target == CharVocab.BOUNDARY).long()
    after = closing.cumsum(-1) - closing  # > 0 after the closing boundary
    return ((after == 0) & (target != CharVocab.PAD)).float()


def characters(x: torch.Tensor) -> torch.Tensor:
    """[B] how many tokens of each text are scored (its characters + the closing boundary), for bits/char."""
    return scored(x).sum(-1)
