"""Set-conditioned with a spatial context: the support set becomes a map aligned with the image.

A vector context (`context`) must squeeze a character's shape through a few dozen numbers learnt from a few
hundred training characters, and on Omniglot it ends up carrying style (stroke width, size) more than
identity. Here each support image is encoded by a small U-Net to a feature map [D, H/2, W/2] that keeps *where*
its strokes are, the maps are averaged over the support set (permutation invariant, any K), and the
generator reads the averaged map at every pixel (`cond_map`): the VAE's decoder at every scale, with a
per-example latent z that describes how one drawing departs from the support. What the model learns is how
drawings of one character vary between drawers, which transfers to characters never seen.

The loss is the generator's, per query example, given its task's map; with the VAE it bounds
-log p(x | support), so `log_prob` is a likelihood given the support set (used for classification).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from metagen.config import GeneratorConfig, LearnerConfig
from metagen.data.episodes import Tasks
from metagen.generators.base import Generator, build_generator
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner
from metagen.nets import MapEncoder
from metagen.registry import LEARNERS


class SpatialConfig(LearnerConfig):
    name: Literal["spatial"] = "spatial"
    map_dim: int = Field(32, ge=1)  # D: channels of the context map
    channels: int = Field(32, ge=1)  # the support encoder's first conv width


@LEARNERS.register("spatial")
class SpatialContext(MetaLearner):
    Config = SpatialConfig

    @classmethod
    def incompatible(cls, generator: type[Generator]) -> str | None:
        if not generator.supports_cond_map:
            return (f"generator '{generator.registry_name}' cannot read a context map; use generator.name = 'vae' "
                    "or 'pixelcnn' with learner 'spatial'")
        return None

    def __init__(self, cfg: SpatialConfig, generator_cfg: GeneratorConfig, example_shape: tuple[int, ...]) -> None:
        super().__init__(cfg, generator_cfg, example_shape)
        self.encoder = MapEncoder(self.example_shape[0], cfg.channels, cfg.map_dim)
        self.generator = build_generator(generator_cfg, self.example_shape, cond_map=cfg.map_dim)

    def context_map(self, support: torch.Tensor) -> torch.Tensor:
        """support [T, K, C, H, W] -> the mean of its examples' maps, [T, D, H/2, W/2]."""
        T, K = support.shape[:2]
        maps = self.encoder(support.flatten(0, 1))  # [T*K, D, H/2, W/2]
        return maps.view(T, K, *maps.shape[1:]).mean(1)

    def meta_loss(self, tasks: Tasks) -> torch.Tensor:
        maps = self.context_map(tasks.support)  # [T, D, H, W]
        Q = tasks.query.shape[1]
        return self.generator.loss(tasks.query.flatten(0, 1), maps.repeat_interleave(Q, 0))

    def adapt(self, support: torch.Tensor) -> Adapted:
        self.check_support(support)
        return GeneratorAdapted(self.generator, cond=self.context_map(support[None])[0])
