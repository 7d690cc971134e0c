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
has the whole script.

The CJK track (`scripts = ["hanzi"]`) is the same data for Chinese: the 3755 level-1 hanzi of GB2312, faces
from Debian's CJK font packages (`make setup-fonts-cjk` unpacks them into $METAGEN_CACHE_DIR/fonts-cjk, not
into the system folders, so the Latin data does not change), .ttc collections read member by member, Droid
Sans Fallback as the reference face, every face scaled so that the ink of 国 spans 0.80 of the canvas with its
bottom at 0.90, and a face kept if it has at least 99% of the hanzi (it keeps the ones it has). Regional
copies of a Chinese face (Noto Sans CJK JP/KR/TC/HK beside SC; AR PL UKai TW/HK beside CN) are the same
design drawn to other regional standards, so only the mainland one is kept.

Faces with an empty or clipped-to-nothing glyph, symbol faces (fewer than 30 distinct renders of the
required characters) and exact duplicates by rendering (the same font packaged twice, or a face identical
to the reference) are dropped and counted. The result is cached as .npz under
$METAGEN_CACHE_DIR, keyed by the font files found (path, size, mtime) and the render settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from metagen.data.concepts import ConceptSet
from metagen.data.images import SUPERSAMPLE, THRESHOLD
from metagen.errors import DataError

RENDER_VERSION = 1


def _gb2312_level1() -> str:
    """The 3755 common hanzi of GB2312 level 1 (rows 16-55), in GB2312 (pinyin) order."""
    cells = bytes(b for hi in range(0xB0, 0xD8) for lo in range(0xA1, 0xFF) for b in (hi, lo))
    # the five unassigned cells at the end of row 55 decode to U+FFFD
    return "".join(c for c in cells.decode("gb2312", errors="replace") if c != "\ufffd")


SCRIPTS: dict[str, str] = {
    "latin": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "digits": "0123456789",
    "greek": "".join(map(chr, [*range(0x391, 0x3A2), *range(0x3A3, 0x3AA), *range(0x3B1, 0x3CA)])),
    "cyrillic": "".join(map(chr, range(0x410, 0x450))),
    "hanzi": _gb2312_level1(),
}


@dataclass(frozen=True)
class Track:
    """A family of scripts with its own faces, reference face and framing."""

    scripts: tuple[str, ...]  # the scripts it may draw from
    required: tuple[str, ...]  # a face must have these; the others are added where it has them
    coverage: float  # the fraction of a script's characters a face must have to count as having it
    frame: str  # the character whose ink scales every face
    frame_height: float  # the frame's ink height, a fraction of the canvas
    bottom: float  # Latin: where the baseline is; hanzi: where the frame's ink ends (fractions of the canvas)
    on_baseline: bool  # glyphs sit on the baseline (Latin) or are placed as the frame's ink box is (hanzi)
    suffixes: tuple[str, ...]
    # regional copies of a Chinese face ("Noto Sans CJK JP" beside "... SC"): the same design, so one is kept
    regions: tuple[str, ...]
    setup: str  # the make target that installs its faces
    few_faces: int  # with the default folders, fewer than this means its font packages are not installed


LATIN = Track(("latin", "digits", "greek", "cyrillic"), ("latin", "digits"), 1.0, "H", 0.42, 0.70, True,
              (".ttf", ".otf"), (), "setup-fonts", 300)
HANZI = Track(("hanzi",), ("hanzi",), 0.99, "国", 0.80, 0.90, False, (".ttf", ".otf", ".ttc"),
              ("JP", "KR", "TC", "HK", "TW", "MO"), "setup-fonts-cjk", 20)
DEFAULT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
CJK_REFERENCE = "DroidSansFallbackFull.ttf"  # in fonts-droid-fallback
DUPLICATE_PIXELS = 0.002  # faces whose renders differ in fewer pixels than this fraction are one face
MIN_DISTINCT = 30  # a face with fewer distinct renders of the required characters is a symbol face
MIN_FACES = 8

# `make setup-fonts-cjk` unpacks these into cjk_dir() (docs/results.md lists the faces each contributes;
# fonts-wqy-microhei is left out: its hanzi are Droid Sans Fallback's, the reference face).
CJK_PACKAGES = (
    "fonts-droid-fallback", "fonts-wqy-zenhei", "fonts-arphic-ukai", "fonts-arphic-uming", "fonts-arphic-gbsn00lp",
    "fonts-arphic-gkai00mp", "fonts-noto-cjk", "fonts-noto-cjk-extra", "fonts-lxgw-wenkai", "fonts-hanazono",
    "fonts-babelstone-han",
)

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


def track_of(scripts: list[str] | tuple[str, ...]) -> Track:
    """The track `scripts` belong to: hanzi, or the Latin-led alphabets."""
    return HANZI if "hanzi" in scripts else LATIN


def charset(scripts: list[str] | tuple[str, ...]) -> str:
    """The characters of `scripts`, in SCRIPTS order."""
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        raise DataError(f"data.scripts names unknown scripts {unknown}; choose from {', '.join(SCRIPTS)}")
    track = track_of(scripts)
    if track is HANZI and len(set(scripts)) > 1:
        raise DataError(f"data.scripts = {list(scripts)}: hanzi is a track of its own (other faces, another "
                        "reference face); use ['hanzi'] alone")
    missing = [s for s in track.required if s not in scripts]
    if missing:
        raise DataError(f"data.scripts must include {', '.join(track.required)} (every face has them); add {missing}")
    return "".join(SCRIPTS[s] for s in SCRIPTS if s in scripts)


def cjk_dir() -> Path:
    """Where `make setup-fonts-cjk` unpacks the CJK font packages: the CJK track's default folder."""
    from metagen.data.glyphs import cache_dir

    return cache_dir() / "fonts-cjk"


def default_dirs(track: Track) -> tuple[str, ...]:
    return (str(cjk_dir()),) if track is HANZI else DEFAULT_DIRS


def reference_path(track: Track = LATIN, dirs: list[str] | tuple[str, ...] | None = None) -> Path:
    """The reference face: DejaVu Sans (inside matplotlib) for Latin, Droid Sans Fallback (under `dirs`) for hanzi."""
    if track is LATIN:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for d in dirs or default_dirs(track):
        found = sorted(Path(d).expanduser().rglob(CJK_REFERENCE)) if Path(d).expanduser().is_dir() else []
        if found:
            return found[0]
    raise DataError(f"the CJK reference face {CJK_REFERENCE} is not under {', '.join(dirs or default_dirs(track))}; "
                    f"run `make {track.setup}`")


def font_files(dirs: list[str] | tuple[str, ...], track: Track = LATIN) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        root = Path(d).expanduser()
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix.lower() in track.suffixes and p.is_file()]
    return sorted(set(files))


def members(path: Path) -> int:
    """How many faces a font file holds (a .ttc collection holds several)."""
    if path.suffix.lower() != ".ttc":
        return 1
    from fontTools.ttLib import TTCollection

    try:
        return len(TTCollection(str(path), lazy=True).fonts)
    except Exception:  # not a collection fontTools can read
        return 0


@dataclass
class Face:
    path: Path
    name: str  # "Noto Serif Bold Italic"
    family: str  # "Noto Serif"
    chars: str  # the characters of the charset this face has (scripts it has enough of only)
    index: int = 0  # the face's number inside a .ttc collection

    @property
    def where(self) -> str:
        return str(self.path) if self.index == 0 else f"{self.path}#{self.index}"


def read_face(path: Path, chars: str, track: Track = LATIN, index: int = 0) -> Face | None:
    """Name, family and covered characters of a font file, or None if it lacks a required script."""
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(path, lazy=True, fontNumber=index)
        cmap = set(font.getBestCmap() or {})
        names = font["name"]
        family = names.getDebugName(16) or names.getDebugName(1) or path.stem
        style = names.getDebugName(17) or names.getDebugName(2) or ""
    except Exception:  # not a font fontTools can read
        return None
    if ord(track.frame) not in cmap:
        return None
    have = ""
    for script in track.scripts:
        letters = SCRIPTS[script]
        enough = sum(ord(c) in cmap for c in letters) >= track.coverage * len(letters)
        if script in track.required and not enough:
            return None
        if enough:
            have += "".join(c for c in letters if c in chars and ord(c) in cmap)
    name = family if style.lower() in ("", "regular", "book", "roman", "normal") else f"{family} {style}"
    return Face(path, name.strip(), family.strip(), have, index)


def _scaled_font(path: Path, big: int, track: Track, index: int) -> tuple[ImageFont.FreeTypeFont, int]:
    """The face at the pixel size that makes its frame character's ink `track.frame_height` of a `big`-pixel
    canvas tall, and the y (from the canvas top, anchor "ms") at which every glyph is drawn."""
    probe = ImageFont.truetype(str(path), size=200, index=index)
    top, bottom = probe.getbbox(track.frame, anchor="ls")[1::2]
    height = max(bottom - top, 1)
    font = ImageFont.truetype(str(path), size=max(4, round(200 * track.frame_height * big / height)), index=index)
    y = round(big * (0.5 + track.bottom))
    if not track.on_baseline:  # lift the baseline by how far the frame's ink reaches below it
        y -= font.getbbox(track.frame, anchor="ls")[3]
    return font, y


def render_face(path: Path, chars: str, size: int, track: Track = LATIN, index: int = 0) -> np.ndarray:
    """uint8 [len(chars), size, size] in {0, 1}: the glyphs on a common baseline, centred by their ink."""
    big = size * SUPERSAMPLE
    font, y = _scaled_font(path, big, track, index)
    out = np.zeros((len(chars), size, size), np.uint8)
    for i, ch in enumerate(chars):
        img = Image.new("L", (2 * big, 2 * big), 0)
        ImageDraw.Draw(img).text((big, y), ch, font=font, fill=255, anchor="ms")
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
    counts: dict[str, int] = field(default_factory=dict)  # files, no_required_script, regional, broken, symbol,
    # duplicates
    paths: list[str] = field(default_factory=list)


def render_fonts(dirs: list[str] | tuple[str, ...], scripts: list[str] | tuple[str, ...], size: int,
                 progress: bool = True) -> FontData:
    """Render every face under `dirs` (no cache; see `load_fonts`)."""
    from tqdm.auto import tqdm

    chars = charset(scripts)
    track = track_of(scripts)
    files = font_files(dirs, track)
    reference = render_face(reference_path(track, dirs), chars, size, track)
    counts = {"files": len(files), "no_required_script": 0, "regional": 0, "broken": 0, "symbol": 0, "duplicates": 0}
    required = "".join(SCRIPTS[s] for s in track.required)  # the chars every face has (most of, for hanzi)
    # a face is compared with the faces of the same required characters (a duplicate has the same cmap)
    kept_renders = [(required, reference[: len(required)].reshape(-1).astype(bool))]
    faces: list[Face] = []
    glyphs: list[np.ndarray] = []
    entries = [(path, i) for path in files for i in range(members(path))]
    for path, index in tqdm(entries, desc="rendering fonts (once, then cached)", unit="face",
                            disable=None if progress else True):
        face = read_face(path, chars, track, index)
        if face is None:
            counts["no_required_script"] += 1
            continue
        if face.family.split()[-1] in track.regions:
            counts["regional"] += 1
            continue
        try:
            g = render_face(path, face.chars, size, track, index)
        except OSError:  # FreeType cannot rasterise it
            counts["broken"] += 1
            continue
        if g.reshape(len(g), -1).sum(1).min() == 0:
            counts["broken"] += 1
            continue
        core_chars = "".join(c for c in face.chars if c in required)
        core = g[: len(core_chars)].reshape(len(core_chars), -1)
        if len(np.unique(core, axis=0)) < MIN_DISTINCT:
            counts["symbol"] += 1
            continue
        flat = core.reshape(-1).astype(bool)
        if any(c == core_chars and np.mean(flat != k) < DUPLICATE_PIXELS for c, k in kept_renders):
            counts["duplicates"] += 1
            continue
        kept_renders.append((core_chars, flat))
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
    return FontData(concepts, [f.chars for f in faces], chars, ref, counts, [f.where for f in faces])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _cache_key(files: list[Path], scripts: list[str] | tuple[str, ...], size: int, ref: Path) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    track = track_of(scripts)
    settings = [] if track is LATIN else [list(astuple(track))]  # Latin's key predates tracks: its caches stay
    blob = json.dumps([RENDER_VERSION, size, list(scripts), stats, str(ref), ref.stat().st_size, *settings])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_fonts(dirs: list[str] | tuple[str, ...] | None = None, scripts: list[str] | tuple[str, ...] = LATIN.scripts,
               size: int = 28, progress: bool = True) -> FontData:
    """The typefaces under `dirs` (default: the system font folders; for hanzi, cjk_dir()), rendered once and
    then cached."""
    from metagen.data.glyphs import cache_dir

    track = track_of(scripts)
    dirs = tuple(dirs or default_dirs(track))
    chars = charset(scripts)
    files = font_files(dirs, track)
    if track is HANZI and not files:
        raise DataError(f"no CJK font files under {', '.join(dirs)}; run `make {track.setup}`")
    key = _cache_key(files, scripts, size, reference_path(track, dirs))
    path = cache_dir() / f"fonts-{key}.npz"
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
                        f"run `make {track.setup}` to install the font packages")
    if dirs == default_dirs(track) and len(data.concepts) < track.few_faces:
        print(f"metagen: only {len(data.concepts)} typefaces under {', '.join(dirs)}; `make {track.setup}` installs "
              "the faces the presets are made for", file=sys.stderr)
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


def held_out_characters(count: int, seed: int, track: Track = LATIN) -> str:
    """`count` characters of the required scripts (Latin letters and digits, or hanzi) that no training
    typeface shows, drawn by `seed`."""
    pool = "".join(SCRIPTS[s] for s in track.required)
    if count >= len(pool):
        raise DataError(f"data.held_out_chars = {count} leaves no {' or '.join(track.required)} character to "
                        f"train on; choose fewer than {len(pool)}")
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
