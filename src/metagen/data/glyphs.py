"""Glyphs: an embedded few-shot dataset rendered from the fonts bundled with matplotlib.

A concept is one character; its examples are that character drawn in every bundled typeface that has
it (DejaVu Sans / Sans Mono / Serif in four styles each, STIX General in four, six Computer Modern
faces), cycled to `examples_per_concept` images. Groups are scripts (latin, digits, greek, cyrillic,
armenian, georgian), so whole scripts can be held out.

Each example is lightly augmented, with the parameters drawn from a fixed seed:
rotation uniform in [-8, 8] degrees, shear in [-0.15, 0.15], scale of the fitted box in [0.85, 1.0],
shift of up to 1 pixel, and with probability 1/3 a thicker stroke (3x3 max filter at 4x resolution;
thinning is left out because it breaks the hairlines of Computer Modern). Layout is "fit": the ink's
bounding box fills 20/28 of the canvas.

Characters whose clean renders coincide with an earlier character's (Cyrillic "А" and Latin "A",
lower and upper case "o"/"O" once fitted to the box) are dropped, so no held-out concept is a copy of
a training one. Results are cached as .npz in `$METAGEN_CACHE_DIR` (default ~/.cache/metagen).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from metagen.data.concepts import ConceptSet
from metagen.data.images import SUPERSAMPLE, THRESHOLD, fit_box

RENDER_VERSION = 1
FACES = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmmi10.ttf", "cmss10.ttf", "cmtt10.ttf",
]  # cmex10/cmsy10 map letters to symbols, LastResort maps everything to placeholders: left out
SCRIPTS: dict[str, list[int]] = {
    "latin": [*range(0x41, 0x5B), *range(0x61, 0x7B)],
    "digits": list(range(0x30, 0x3A)),
    "greek": [*range(0x391, 0x3A2), *range(0x3A3, 0x3AA), *range(0x3B1, 0x3CA)],
    "cyrillic": list(range(0x410, 0x450)),
    "armenian": [*range(0x531, 0x557), *range(0x561, 0x587)],
    "georgian": list(range(0x10D0, 0x10F1)),
}
MIN_FACES = 8  # a character needs this many faces to be a concept
DUPLICATE_PIXELS = 0.04  # clean renders differing in fewer pixels than this fraction are the same glyph


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def cache_dir() -> Path:
    return Path(os.environ.get("METAGEN_CACHE_DIR", Path.home() / ".cache" / "metagen")).expanduser()


def _coverage(char: str, font: ImageFont.FreeTypeFont, canvas: int) -> np.ndarray:
    img = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(img).text((canvas / 2, canvas / 2), char, font=font, fill=255, anchor="mm")
    box = img.getbbox()
    if box is None:
        return np.zeros((1, 1), np.float32)
    # Crop to the ink with a 25% margin on every side, room for the augmentation's rotation and shear.
    pad = max(box[2] - box[0], box[3] - box[1]) // 4 + 2
    img = img.crop((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    return np.asarray(img, np.float32) / 255.0


def _augment(cov: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Random rotation, shear and stroke width at high resolution; returns (coverage, scale, shift)."""
    img = Image.fromarray((cov * 255).astype(np.uint8))
    if rng.random() < 1 / 3:
        img = img.filter(ImageFilter.MaxFilter(3))
    angle = math.radians(rng.uniform(-8, 8))
    shear = rng.uniform(-0.15, 0.15)
    c, s = math.cos(angle), math.sin(angle)
    w, h = img.size
    # Inverse affine map (output -> input) about the centre: rotation composed with a horizontal shear.
    a, b, d, e = c, s + shear * c, -s, c - shear * s
    cx, cy = w / 2, h / 2
    img = img.transform((w, h), Image.Transform.AFFINE, (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy),
                        resample=Image.Resampling.BILINEAR)
    scale = rng.uniform(0.85, 1.0)
    shift = (rng.uniform(-1, 1), rng.uniform(-1, 1))
    return np.asarray(img, np.float32) / 255.0, scale, shift


def _place(cov: np.ndarray, size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Fit into the box at `scale`, shift by whole pixels, binarize: uint8 [size, size]."""
    small = fit_box(cov, size, fraction=20 / 28 * scale)
    small = np.roll(small, (round(shift[0]), round(shift[1])), axis=(0, 1))
    return (small > THRESHOLD).astype(np.uint8)


def render_glyphs(size: int = 28, examples_per_concept: int = 20, seed: int = 0) -> ConceptSet:
    """Render the glyph dataset (no cache; see `load_glyphs`)."""
    from fontTools.ttLib import TTFont

    canvas = size * SUPERSAMPLE * 2
    fonts = []
    for name in FACES:
        path = font_dir() / name
        if path.is_file():
            fonts.append((ImageFont.truetype(str(path), size=int(canvas * 0.55)), set(TTFont(path).getBestCmap())))
    rng = np.random.default_rng(seed)
    examples, names, groups = [], [], []
    # Clean renders of the kept concepts, for de-duplication: [M, F, size*size] and which faces exist [M, F].
    kept, kept_mask = np.zeros((0, len(fonts), size * size), bool), np.zeros((0, len(fonts)), bool)
    for script, codes in SCRIPTS.items():
        for code in codes:
            char = chr(code)
            faces = [i for i, (_, cmap) in enumerate(fonts) if code in cmap]
            if len(faces) < MIN_FACES:
                continue
            covs = {i: _coverage(char, fonts[i][0], canvas) for i in faces}
            render, mask = np.zeros((len(fonts), size * size), bool), np.zeros(len(fonts), bool)
            for i, c in covs.items():
                render[i], mask[i] = _place(c, size).reshape(-1), True
            if render[mask].sum(1).min() == 0 or _is_duplicate(render, mask, kept, kept_mask):
                continue
            kept, kept_mask = np.concatenate([kept, render[None]]), np.concatenate([kept_mask, mask[None]])
            order = rng.permutation(len(faces))
            imgs = []
            for i in range(examples_per_concept):
                cov, scale, shift = _augment(covs[faces[order[i % len(faces)]]], rng)
                imgs.append(_place(cov, size, scale, shift))
            examples.append(torch.from_numpy(np.stack(imgs))[:, None])  # [N, 1, size, size] uint8
            names.append(f"{script}/U+{code:04X} {char}")
            groups.append(script)
    return ConceptSet(examples, names, groups, {g: "background" for g in SCRIPTS})


def _is_duplicate(render: np.ndarray, mask: np.ndarray, kept: np.ndarray, kept_mask: np.ndarray) -> bool:
    """Does `render` [F, P] match a kept concept [M, F, P] on the faces both have, on average?"""
    common = kept_mask & mask  # [M, F]
    differ = (kept != render).mean(-1)  # [M, F] fraction of pixels that differ per face
    mean_differ = (differ * common).sum(1) / np.maximum(common.sum(1), 1)  # [M]
    return bool(np.any(common.any(1) & (mean_differ < DUPLICATE_PIXELS)))


def _cache_key(size: int, examples_per_concept: int, seed: int) -> str:
    import matplotlib

    faces = [(f, (font_dir() / f).stat().st_size) for f in FACES if (font_dir() / f).is_file()]
    blob = json.dumps([RENDER_VERSION, size, examples_per_concept, seed, matplotlib.__version__, faces])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_glyphs(size: int = 28, examples_per_concept: int = 20, seed: int = 0) -> ConceptSet:
    """The glyph dataset, rendered once and then read from the .npz cache."""
    path = cache_dir() / f"glyphs-{_cache_key(size, examples_per_concept, seed)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                images, names, groups = z["images"], z["names"].tolist(), z["groups"].tolist()
            return ConceptSet([torch.from_numpy(a) for a in images], names, groups,
                              {g: "background" for g in SCRIPTS})
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is re-rendered below
    concepts = render_glyphs(size, examples_per_concept, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez_compressed(f, images=np.stack([e.numpy() for e in concepts.examples]),
                            names=np.array(concepts.names), groups=np.array(concepts.groups))
    os.replace(f.name, path)
    return concepts
