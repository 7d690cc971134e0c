"""Fonts: few-shot font generation data rendered from the typefaces Debian's font packages install.

A concept is one typeface (one font file's face: "Noto Serif Bold Italic"); its examples are its glyphs
of a fixed character set, and its group is its family ("Noto Serif"), so whole families are held out and
no weight or slant of a held-out family is seen in training. Each example is two channels `[2, H, W]`:
the glyph in the typeface and the same character in the *reference* face (DejaVu Sans, shipped inside
matplotlib), which tells a content/style model which character to draw.

Rendering keeps what makes a typeface a style: every face is scaled so that its capital H is the same
height (0.42 of the canvas), glyphs sit on a common baseline (0.70 from the top) and are centred by their
ink, so x-heights, ascenders, descenders, widths and weights differ between faces as they do in print.
Glyphs are drawn at 4x and box-filtered down, then binarised at coverage 0.5.

A face is kept if it has every Latin letter and digit; Greek and Cyrillic glyphs are added where the face
has the whole script. Faces with an empty or clipped-to-nothing glyph, symbol faces (fewer than 30
distinct Latin renders) and exact duplicates by rendering (the same font packaged twice, or a face
identical to the reference) are dropped and counted. The result is cached as .npz under
$METAGEN_CACHE_DIR, keyed by the font files found (path, size, mtime) and the render settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from metagen.data.concepts import ConceptSet
from metagen.data.images import SUPERSAMPLE, THRESHOLD
from metagen.errors import DataError

RENDER_VERSION = 1
SCRIPTS: dict[str, str] = {
    "latin": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "digits": "0123456789",
    "greek": "".join(map(chr, [*range(0x391, 0x3A2), *range(0x3A3, 0x3AA), *range(0x3B1, 0x3CA)])),
    "cyrillic": "".join(map(chr, range(0x410, 0x450))),
}
REQUIRED = ("latin", "digits")  # a face must have every one of these; the other scripts are added where whole
DEFAULT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf")
CAP_HEIGHT, BASELINE = 0.42, 0.70  # fractions of the canvas
DUPLICATE_PIXELS = 0.002  # faces whose renders differ in fewer pixels than this fraction are one face
MIN_DISTINCT = 30  # a face with fewer distinct Latin/digit renders is a symbol face
MIN_FACES = 8
FEW_FACES = 300  # with the default folders, fewer than this means the font packages are not installed

# `make setup-fonts` apt-installs these (docs/results.md lists the faces each contributes).
PACKAGES = (
    "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation", "fonts-liberation2", "fonts-noto-core",
    "fonts-noto-mono", "fonts-urw-base35", "fonts-freefont-ttf", "fonts-croscore",
    "fonts-crosextra-carlito", "fonts-crosextra-caladea", "fonts-open-sans", "fonts-lato", "fonts-cantarell",
    "fonts-linuxlibertine", "fonts-ebgaramond", "fonts-paratype", "fonts-cmu", "fonts-inter",
    "fonts-firacode", "fonts-hack", "fonts-comic-neue", "fonts-league-spartan", "fonts-junicode", "fonts-stix",
    "fonts-adf-accanthis", "fonts-adf-gillius", "fonts-adf-universalis", "fonts-adf-berenis", "fonts-adf-ikarius",
    "fonts-adf-oldania", "fonts-adf-romande", "fonts-adf-switzera", "fonts-adf-tribun", "fonts-adf-verana",
    "fonts-adf-baskervald", "fonts-adf-irianis", "fonts-adf-libris", "fonts-adf-mekanus", "fonts-go",
    "fonts-jetbrains-mono", "fonts-sil-gentium", "fonts-sil-charis", "fonts-sil-doulos", "fonts-sil-andika",
    "fonts-yanone-kaffeesatz", "fonts-vollkorn", "fonts-quicksand", "fonts-oldstandard", "fonts-lobster",
    "fonts-femkeklaver", "fonts-dustin", "fonts-breip", "fonts-mplus", "fonts-anonymous-pro", "fonts-averia-gwf",
    "fonts-averia-sans-gwf", "fonts-averia-serif-gwf", "fonts-fantasque-sans", "fonts-isabella", "fonts-blankenburg",
    "fonts-beteckna", "fonts-dkg-handwriting", "fonts-humor-sans", "fonts-kristi", "fonts-radisnoir",
    "fonts-rufscript", "fonts-cabin", "fonts-arkpandora", "fonts-oflb-euterpe", "fonts-gfs-didot",
    "fonts-gfs-neohellenic", "fonts-gfs-bodoni-classic", "fonts-gfs-baskerville", "fonts-gfs-porson",
    "fonts-gfs-complutum", "fonts-gfs-olga", "fonts-gfs-solomos", "fonts-gfs-theokritos", "fonts-gfs-gazis",
    "fonts-gfs-didot-classic", "fonts-gfs-artemisia",
)


def charset(scripts: list[str] | tuple[str, ...]) -> str:
    """The characters of `scripts`, in SCRIPTS order."""
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        raise DataError(f"data.scripts names unknown scripts {unknown}; choose from {', '.join(SCRIPTS)}")
    missing = [s for s in REQUIRED if s not in scripts]
    if missing:
        raise DataError(f"data.scripts must include {', '.join(REQUIRED)} (every face has them); add {missing}")
    return "".join(SCRIPTS[s] for s in SCRIPTS if s in scripts)


def reference_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def font_files(dirs: list[str] | tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        root = Path(d).expanduser()
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()]
    return sorted(set(files))


@dataclass
class Face:
    path: Path
    name: str  # "Noto Serif Bold Italic"
    family: str  # "Noto Serif"
    chars: str  # the characters of the charset this face has (whole scripts only)


def read_face(path: Path, chars: str) -> Face | None:
    """Name, family and covered characters of a font file, or None if it lacks a required script."""
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(path, lazy=True, fontNumber=0)
        cmap = set(font.getBestCmap() or {})
        names = font["name"]
        family = names.getDebugName(16) or names.getDebugName(1) or path.stem
        style = names.getDebugName(17) or names.getDebugName(2) or ""
    except Exception:  # not a font fontTools can read
        return None
    have = ""
    for script, letters in SCRIPTS.items():
        whole = all(ord(c) in cmap for c in letters)
        if script in REQUIRED and not whole:
            return None
        if whole:
            have += "".join(c for c in letters if c in chars)
    name = family if style.lower() in ("", "regular", "book", "roman", "normal") else f"{family} {style}"
    return Face(path, name.strip(), family.strip(), have)


def _scaled_font(path: Path, big: int) -> ImageFont.FreeTypeFont:
    """The face at the pixel size that makes its capital H CAP_HEIGHT of a `big`-pixel canvas tall."""
    probe = ImageFont.truetype(str(path), size=200)
    top, bottom = probe.getbbox("H", anchor="ls")[1::2]
    height = max(bottom - top, 1)
    return ImageFont.truetype(str(path), size=max(4, round(200 * CAP_HEIGHT * big / height)))


def render_face(path: Path, chars: str, size: int) -> np.ndarray:
    """uint8 [len(chars), size, size] in {0, 1}: the glyphs on a common baseline, centred by their ink."""
    big = size * SUPERSAMPLE
    font = _scaled_font(path, big)
    out = np.zeros((len(chars), size, size), np.uint8)
    for i, ch in enumerate(chars):
        img = Image.new("L", (2 * big, 2 * big), 0)
        ImageDraw.Draw(img).text((big, round(big * (0.5 + BASELINE))), ch, font=font, fill=255, anchor="ms")
        box = img.getbbox()
        if box is None:
            continue
        shift = big - (box[0] + box[2]) // 2  # centre the ink horizontally
        crop = img.crop((big // 2 - shift, big // 2, big // 2 - shift + big, big // 2 + big))
        small = np.asarray(crop.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0
        out[i] = small > THRESHOLD
    return out


@dataclass
class FontData:
    """The typefaces as concepts, plus what the generic ConceptSet does not carry: each face's characters."""

    concepts: ConceptSet  # examples [N_i, 2, H, W]: glyph, reference glyph
    chars: list[str]  # chars[i][j]: the character of concepts.examples[i][j]
    charset: str
    reference: torch.Tensor  # [len(charset), H, W] uint8: the reference face's glyphs
    counts: dict[str, int] = field(default_factory=dict)  # files, no_required_script, broken, symbol, duplicates
    paths: list[str] = field(default_factory=list)


def render_fonts(dirs: list[str] | tuple[str, ...], scripts: list[str] | tuple[str, ...], size: int,
                 progress: bool = True) -> FontData:
    """Render every face under `dirs` (no cache; see `load_fonts`)."""
    from tqdm.auto import tqdm

    chars = charset(scripts)
    files = font_files(dirs)
    reference = render_face(reference_path(), chars, size)
    counts = {"files": len(files), "no_required_script": 0, "broken": 0, "symbol": 0, "duplicates": 0}
    required = len("".join(SCRIPTS[s] for s in REQUIRED))  # the first `required` chars: on every face
    kept_renders = [reference[:required].reshape(-1).astype(bool)]
    faces: list[Face] = []
    glyphs: list[np.ndarray] = []
    for path in tqdm(files, desc="rendering fonts (once, then cached)", unit="face",
                     disable=None if progress else True):
        face = read_face(path, chars)
        if face is None:
            counts["no_required_script"] += 1
            continue
        try:
            g = render_face(path, face.chars, size)
        except OSError:  # FreeType cannot rasterise it
            counts["broken"] += 1
            continue
        if g.reshape(len(g), -1).sum(1).min() == 0:
            counts["broken"] += 1
            continue
        core = g[:required].reshape(required, -1)
        if len(np.unique(core, axis=0)) < MIN_DISTINCT:
            counts["symbol"] += 1
            continue
        flat = core.reshape(-1).astype(bool)
        if any(np.mean(flat != k) < DUPLICATE_PIXELS for k in kept_renders):
            counts["duplicates"] += 1
            continue
        kept_renders.append(flat)
        faces.append(face)
        glyphs.append(g)
    names = _unique([f.name for f in faces])
    ref = torch.from_numpy(reference)
    index = {c: i for i, c in enumerate(chars)}
    examples = []
    for f, g in zip(faces, glyphs, strict=True):
        refs = ref[[index[c] for c in f.chars]]
        examples.append(torch.stack([torch.from_numpy(g), refs], 1))  # [N, 2, H, W]
    concepts = ConceptSet(examples, names, [f.family for f in faces], {f.family: "background" for f in faces})
    return FontData(concepts, [f.chars for f in faces], chars, ref, counts, [str(f.path) for f in faces])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _cache_key(files: list[Path], scripts: list[str] | tuple[str, ...], size: int) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    ref = reference_path()
    blob = json.dumps([RENDER_VERSION, size, list(scripts), stats, str(ref), ref.stat().st_size])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_fonts(dirs: list[str] | tuple[str, ...] | None = None, scripts: list[str] | tuple[str, ...] = tuple(SCRIPTS),
               size: int = 28, progress: bool = True) -> FontData:
    """The typefaces under `dirs` (default: the system font folders), rendered once and then cached."""
    from metagen.data.glyphs import cache_dir

    dirs = tuple(dirs or DEFAULT_DIRS)
    chars = charset(scripts)
    files = font_files(dirs)
    path = cache_dir() / f"fonts-{_cache_key(files, scripts, size)}.npz"
    data = None
    if path.is_file():
        try:
            data = _read_cache(path, chars)
        except (OSError, ValueError, KeyError):
            data = None  # a damaged cache is rendered again
    if data is None:
        data = render_fonts(dirs, scripts, size, progress)
        _write_cache(path, data)
    if len(data.concepts) < MIN_FACES:
        raise DataError(f"found {len(data.concepts)} usable typefaces under {', '.join(dirs)} (need {MIN_FACES}); "
                        "run `make setup-fonts` to install the font packages")
    if dirs == DEFAULT_DIRS and len(data.concepts) < FEW_FACES:
        print(f"metagen: only {len(data.concepts)} typefaces under {', '.join(dirs)}; `make setup-fonts` installs "
              "the ~600 the presets are made for", file=sys.stderr)
    return data


def _write_cache(path: Path, data: FontData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    glyphs = np.concatenate([e[:, 0].numpy() for e in data.concepts.examples]) if data.concepts.examples else \
        np.zeros((0, *data.reference.shape[1:]), np.uint8)
    meta = {"names": data.concepts.names, "groups": data.concepts.groups, "chars": data.chars,
            "counts": data.counts, "paths": data.paths, "charset": data.charset}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez_compressed(f, glyphs=np.packbits(glyphs, axis=-1), reference=data.reference.numpy(),
                            shape=np.array(glyphs.shape), meta=np.array(json.dumps(meta)))
    os.replace(f.name, path)


def _read_cache(path: Path, chars: str) -> FontData:
    with np.load(path) as z:
        shape = tuple(z["shape"].tolist())
        glyphs = np.unpackbits(z["glyphs"], axis=-1, count=shape[-1])
        reference = torch.from_numpy(z["reference"])
        meta = json.loads(str(z["meta"]))
    if meta["charset"] != chars:
        raise ValueError("cache of another character set")
    index = {c: i for i, c in enumerate(chars)}
    examples, start = [], 0
    for face_chars in meta["chars"]:
        g = torch.from_numpy(glyphs[start : start + len(face_chars)])
        start += len(face_chars)
        examples.append(torch.stack([g, reference[[index[c] for c in face_chars]]], 1))
    concepts = ConceptSet(examples, meta["names"], meta["groups"], {g: "background" for g in meta["groups"]})
    return FontData(concepts, meta["chars"], chars, reference, meta["counts"], meta["paths"])


def held_out_characters(count: int, seed: int) -> str:
    """`count` Latin letters and digits (every face has them) that no training typeface shows, drawn by `seed`."""
    pool = "".join(SCRIPTS[s] for s in REQUIRED)
    if count >= len(pool):
        raise DataError(f"data.held_out_chars = {count} leaves no Latin letter or digit to train on; "
                        f"choose fewer than {len(pool)}")
    rng = np.random.default_rng(seed)
    return "".join(sorted(rng.choice(list(pool), size=count, replace=False).tolist(), key=pool.index))


def with_homoglyphs(chars: str, data: FontData) -> str:
    """`chars` and every character the reference face draws the same way (Latin B, Greek Β, Cyrillic В), so
    that holding out a character holds out its shape."""
    refs = {c: data.reference[i] for i, c in enumerate(data.charset)}
    return "".join(c for c in data.charset if any(torch.equal(refs[c], refs[h]) for h in chars if h in refs))


def without_characters(concepts: ConceptSet, data: FontData, chars: str) -> ConceptSet:
    """`concepts` (typefaces of `data`) with the glyphs of `chars` removed."""
    if not chars:
        return concepts
    face_chars = dict(zip(data.concepts.names, data.chars, strict=True))
    examples = []
    for name, e in zip(concepts.names, concepts.examples, strict=True):
        keep = [i for i, c in enumerate(face_chars[name]) if c not in chars]
        examples.append(e[keep])
    return ConceptSet(examples, list(concepts.names), list(concepts.groups), dict(concepts.group_origin))
