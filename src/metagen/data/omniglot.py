"""Omniglot (Lake et al. 2015) in its official layout, zipped or unzipped.

Reads every `images_background*` and `images_evaluation*` archive or folder found in the data dir
(or its `omniglot/` subfolder): `<source>/<Alphabet>/<characterNN>/<id>_<drawer>.png`. A concept is one
character (its examples: the 20 drawers), a group is an alphabet. The "background small" splits repeat
Greek and Latin; a character seen twice is kept once. Images are resized whole to `size` x `size` and
thresholded at 50% ink (strokes = 1).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metagen.data.concepts import ConceptSet
from metagen.data.images import binarize
from metagen.errors import DataError

PREFIXES = ("images_background", "images_evaluation")


def find_sources(data_dir: Path) -> list[Path]:
    """Omniglot archives and folders in `data_dir` or `data_dir/omniglot`, folders before zips."""
    found: list[Path] = []
    for root in (data_dir, data_dir / "omniglot"):
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir(), key=lambda p: (p.suffix == ".zip", p.name)):
            if p.name.startswith(PREFIXES) and (p.is_dir() or p.suffix == ".zip"):
                found.append(p)
    return found


def zip_members(path: Path, suffix: str = ".png") -> Iterator[tuple[list[str], bytes]]:
    """(path parts, bytes) of every `<source>/<Alphabet>/<character>/<file><suffix>` in an Omniglot zip, in name
    order."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"'{path}' is not a readable zip archive; re-download it or unzip it by hand") from None
    with zf:
        for name in sorted(zf.namelist()):
            parts = name.split("/")
            if name.endswith(suffix) and len(parts) >= 4:
                yield parts, zf.read(name)


def _zip_files(path: Path) -> Iterator[tuple[tuple[str, str, str], bytes]]:
    for parts, data in zip_members(path, ".png"):
        yield (parts[-3], parts[-2], parts[-1]), data


def _dir_files(path: Path) -> Iterator[tuple[tuple[str, str, str], bytes]]:
    for png in sorted(path.glob("*/*/*.png")):
        yield (png.parent.parent.name, png.parent.name, png.name), png.read_bytes()


def load_omniglot(data_dir: str | os.PathLike, size: int = 28) -> ConceptSet:
    data_dir = Path(data_dir).expanduser()
    sources = find_sources(data_dir)
    if not sources:
        raise DataError(f"no Omniglot data in '{data_dir}': expected images_background*.zip or "
                        "images_evaluation*.zip (or their unzipped folders) there or in its omniglot/ "
                        "subfolder; pass --data-dir or set METAGEN_DATA_DIR")
    chars: dict[tuple[str, str], list[np.ndarray]] = {}
    origin: dict[str, str] = {}
    for src in sources:
        kind = "evaluation" if src.name.startswith("images_evaluation") else "background"
        files = _zip_files(src) if src.suffix == ".zip" else _dir_files(src)
        seen_here: dict[tuple[str, str], list[np.ndarray]] = {}
        for (alphabet, character, fname), data in files:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    arr = binarize(im, size, "resize")
            except OSError:
                raise DataError(f"corrupt image {src.name}/{alphabet}/{character}/{fname}; "
                                "re-download the Omniglot archive") from None
            seen_here.setdefault((alphabet, character), []).append(arr)
        for key, imgs in seen_here.items():
            if key not in chars:  # de-duplicate characters shared by several archives
                chars[key] = imgs
                origin.setdefault(key[0], kind)
    if not chars:
        raise DataError(f"the Omniglot sources in '{data_dir}' hold no PNG images; check the archives")
    keys = sorted(chars)
    examples = [torch.from_numpy(np.stack(chars[k]))[:, None] for k in keys]  # [20, 1, size, size] uint8
    return ConceptSet(examples, [f"{a}/{c}" for a, c in keys], [a for a, _ in keys], origin)
