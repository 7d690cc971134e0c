"""Base generators, one file per family; importing this package registers them all."""

from metagen.generators import vae
from metagen.generators.base import Generator, build_generator
from metagen.generators.vae import ConvVAE

__all__ = ["ConvVAE", "Generator", "build_generator", "vae"]
