"""Attention over the support set (Generative Matching Networks, Bartunov & Vetrov 2018, style).

Each support example is embedded once, m_k = embed(s_k); the base generator is built with a memory and
cross-attends over {m_k} while it encodes and generates (for the VAE: the encoder with the image's features,
the decoder with the latent z). Nothing is pooled into one vector, so the generator can copy detail from the
one support example it is closest to. Attention without positions is invariant to the order of the support
set. The loss is the generator's, per query example, given the task's memory.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.generators.base import Generator, build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.nets import ConvEncoder
from metagen.registry import LEARNERS


class AttentionConfig(LearnerConfig):
    name: Literal["attention"] = "attention"
    memory_dim: int = Field(64, ge=1)  # size of a support example's embedding
    channels: int = Field(32, ge=1)  # embedding network's first conv width


@LEARNERS.register("attention")
class SupportAttention(MetaLearner):
    Config = AttentionConfig

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        if not generator.supports_memory:
            return (f"generator '{generator.registry_name}' cannot attend over a support set; "
                    "use generator.name = 'vae' or 'pixelcnn' with learner 'attention'")
        return None

    def __init__(self, cfg: AttentionConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.embed = ConvEncoder(self.example_shape[0], self.example_shape[-1], cfg.channels, cfg.memory_dim)
        self.generator = build_generator(generator_cfg, self.example_shape, memory_dim=cfg.memory_dim)

    def memory(self, support: torch.Tensor) -> torch.Tensor:
        """support [T, K, *example_shape] -> memories [T, K, memory_dim]."""
        T, K = support.shape[:2]
        return self.embed(support.flatten(0, 1)).view(T, K, -1)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        memory = self.memory(tasks.support)  # [T, K, E]
        Q = tasks.query.shape[1]
        return self.generator.loss(tasks.query.flatten(0, 1), memory=memory.repeat_interleave(Q, 0))

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        return GeneratorAdapted(self.generator, memory=self.memory(support[None])[0])
