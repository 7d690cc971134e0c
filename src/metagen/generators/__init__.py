"""Base generators, one file per family; importing this package registers them all."""

from metagen.generators import diffusion, flow, gan, pixelcnn, vae
from metagen.generators.base import Generator, build_generator
from metagen.generators.diffusion import Diffusion
from metagen.generators.flow import Flow
from metagen.generators.gan import GAN
from metagen.generators.pixelcnn import PixelCNN
from metagen.generators.vae import ConvVAE

__all__ = [
    "GAN", "ConvVAE", "Diffusion", "Flow", "Generator", "PixelCNN", "build_generator", "diffusion", "flow", "gan",
    "pixelcnn", "vae",
]
