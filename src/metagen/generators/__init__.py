"""Base generators, one file per family; importing this package registers them all."""

from metagen.generators import diffusion, flow, fontgen, gan, lstm, pixelcnn, transformer, vae
from metagen.generators.base import Generator, build_generator
from metagen.generators.diffusion import Diffusion
from metagen.generators.flow import Flow
from metagen.generators.fontgen import FontGen
from metagen.generators.gan import GAN
from metagen.generators.lstm import CharLSTM
from metagen.generators.pixelcnn import PixelCNN
from metagen.generators.transformer import CharTransformer
from metagen.generators.vae import ConvVAE

__all__ = [
    "GAN",
    "CharLSTM",
    "CharTransformer",
    "ConvVAE",
    "Diffusion",
    "Flow",
    "FontGen",
    "Generator",
    "PixelCNN",
    "build_generator",
    "diffusion",
    "flow",
    "fontgen",
    "gan",
    "lstm",
    "pixelcnn",
    "transformer",
    "vae",
]
