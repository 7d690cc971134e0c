"""Turn any image (file, PIL image, array) into the binary ink maps the models see: 1 = ink, 0 = paper.

Two layouts, chosen by the dataset a model was trained on:
- "resize": the whole canvas is resized (Omniglot: characters drawn on a square canvas with a margin);
- "fit": the ink's bounding box is scaled to fill `FIT_FRACTION` of the canvas, keeping its aspect
  ratio, and centred (glyphs, MNIST-style), so that any crop of a character lands like the training data.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from metagen.errors import DataError

Layout = Literal["resize", "fit"]
FIT_FRACTION = 20 / 28  # MNIST's 20x20 box in a 28x28 canvas
SUPERSAMPLE = 4  # "fit" works at 4x the target size, then box-filters down
THRESHOLD = 0.5  # ink coverage above which a pixel is ink


def ink(img: Image.Image) -> np.ndarray:
    """Ink coverage in [0, 1] as float32 [H, W]; alpha is composited on white, light-on-dark is inverted."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # [H, W], 1 = white
    coverage = 1.0 - gray
    # Paper is the majority: if most of the border is dark, the image is light ink on dark paper.
    border = np.concatenate([coverage[0], coverage[-1], coverage[:, 0], coverage[:, -1]])
    if np.median(border) > 0.5:
        coverage = 1.0 - coverage
    return coverage


def fit_box(coverage: np.ndarray, size: int, fraction: float = FIT_FRACTION) -> np.ndarray:
    """Scale the ink's bounding box into a centred `fraction * size` box; float32 [size, size] coverage."""
    ys, xs = np.nonzero(coverage > 0.1)
    if len(ys) == 0:
        return np.zeros((size, size), np.float32)
    crop = coverage[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    big = size * SUPERSAMPLE
    h, w = crop.shape
    scale = fraction * big / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray(crop).resize((nw, nh), Image.Resampling.BILINEAR)
    canvas = np.zeros((big, big), np.float32)
    top, left = (big - nh) // 2, (big - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(resized)
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BOX))


def binarize(img: Image.Image, size: int, layout: Layout) -> np.ndarray:
    """PIL image -> uint8 [size, size] in {0, 1}."""
    coverage = ink(img)
    if layout == "fit":
        small = fit_box(coverage, size)
    else:
        small = np.asarray(Image.fromarray(coverage).resize((size, size), Image.Resampling.BOX))
    return (small > THRESHOLD).astype(np.uint8)


MAX_PIXELS = 6000 * 6000  # larger images are refused before decoding (decompression bombs)


def load_image(source: str | Path | bytes, size: int, layout: Layout, name: str | None = None) -> torch.Tensor:
    """Read one image (a file, or its bytes as uploaded) of any size and format -> float32 [1, size, size] in {0, 1}.

    `name` labels bytes in error messages. Anything that does not decode to an image with ink is a `DataError`.
    """
    label = name or ("upload" if isinstance(source, bytes) else str(source))
    arr = _decode(source, name, lambda im: binarize(im, size, layout))
    if arr.sum() == 0:
        raise DataError(f"image '{label}' has no ink after binarization; use dark strokes on a light background")
    return torch.from_numpy(arr).float().unsqueeze(0)


def read_coverage(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Ink coverage float32 [H, W] in [0, 1] of one image file or its bytes, at its own size; one-line errors."""
    return _decode(source, name, ink)


def _decode(source: str | Path | bytes, name: str | None, convert: Any) -> np.ndarray:
    """Open an image safely and apply `convert` (PIL image -> array) to it."""
    if isinstance(source, bytes):
        label, fp = name or "upload", io.BytesIO(source)
    else:
        label = fp = str(source)
        if not Path(source).is_file():
            raise DataError(f"image '{label}' not found")
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: MAX_PIXELS below is the limit that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise DataError(f"image '{label}' is {w}x{h} pixels, more than this reader takes "
                                f"({MAX_PIXELS // 1_000_000} megapixels); scale it down first")
            im.load()
            arr = convert(ImageOps.exif_transpose(im))
    except DataError:
        raise
    except Image.DecompressionBombError:  # Pillow's own, far larger limit
        raise DataError(f"image '{label}' has more pixels than this reader takes ({MAX_PIXELS // 1_000_000} "
                        "megapixels); scale it down first") from None
    except Exception as e:  # Pillow's decoders raise many types on damaged files
        raise DataError(f"cannot read image '{label}' ({e.__class__.__name__}); give a PNG, JPEG, BMP or GIF") from None
    return arr


def load_support(paths: list[str | Path], size: int | None = None, layout: Layout | None = None, *,
                 like: Any = None) -> torch.Tensor:
    """Read a support set of image files -> float32 [K, 1, size, size].

    `like` (a `Checkpoint` or `Config`) supplies the preprocessing the model was trained with: its image size
    and layout. Giving `size`/`layout` as well is allowed only if they agree; a model scored on images
    preprocessed another way (e.g. "fit" for an Omniglot model trained on "resize") loses tens of nats per image.
    """
    if like is not None:
        want_size, want_layout = preprocessing(like)
        if size is not None and size != want_size:
            raise DataError(f"this model was trained on {want_size}x{want_size} images, not {size}; drop size=")
        if layout is not None and layout != want_layout:
            raise DataError(f"this model was trained on layout='{want_layout}' images, not '{layout}'; drop layout=")
        size, layout = want_size, want_layout
    if size is None or layout is None:
        raise DataError("give like=checkpoint (the model's own preprocessing) or both size= and layout=")
    if not paths:
        raise DataError("the support set is empty; give at least one image with --support")
    return torch.stack([load_image(p, size, layout) for p in paths])


def preprocessing(like: Any) -> tuple[int, Layout]:
    """(image size, layout) a `Checkpoint` or `Config` was trained with."""
    from metagen.data import LAYOUTS

    config = getattr(like, "config", like)
    data = getattr(config, "data", None)
    if data is None or not hasattr(data, "image_size"):
        raise DataError(f"like= must be a metagen Checkpoint or Config, not {type(like).__name__}")
    return data.image_size, LAYOUTS[data.source]
