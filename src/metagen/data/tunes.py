"""Tunes: melodies from the corpus that ships inside the `music21` wheel, as token strings.

Sources (all ABC, read with music21's ABC tokenizer, not its slower score builder):
- fiddle tunes of Ryan's Mammoth Collection (1883) and O'Neill's Music of Ireland (1850): a concept is a
  tune type from the tune's `R:` field (reel, jig (double jigs included), hornpipe, strathspey, slip jig,
  air, clog, highland fling);
- the Essen folksong collection: a concept is a collection (`essen:han` Chinese Han songs, `essen:lux`
  Luxembourg, `essen:altdeu` old German songs, `essen:kinder` children's songs, ...; the file name without
  its number).
Each concept is its own group, so whole tune types and whole collections can be held out.

A tune becomes one token per character, so the character models and every text learner apply unchanged:
`<metre><mode>` then, per note, `<pitch><duration>`, and `|` per bar line. Pitches are MIDI numbers 36-96
(one character each, U+0100 + pitch - 36; `z` is a rest); durations are quarter lengths from DURATIONS
(one character each, the nearest in log scale); chords keep their top note, grace notes are dropped, a
tie between equal pitches merges the notes. With `transpose` (the default), each tune is moved by at most
a tritone so that its key signature has no sharps or flats (major tunes in C, minor in A, dorian in D...).
A tune is cut at the last bar line that fits in `max_len - 2` tokens. Duplicates (same tokens) are kept
once. A tune that cannot be read is skipped and counted, never fatal. Parsed tunes are cached as JSON in
`$METAGEN_CACHE_DIR` (default ~/.cache/metagen).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from metagen.data.concepts import ConceptSet
from metagen.errors import DataError

PARSE_VERSION = 3
LOW, HIGH = 36, 96  # MIDI pitch range (C2..C7)
PITCH0 = 0x100  # pitch p is chr(PITCH0 + p - LOW)
REST, BAR = "z", "|"
DURATIONS = [1 / 6, 1 / 4, 1 / 3, 3 / 8, 1 / 2, 2 / 3, 3 / 4, 1, 4 / 3, 3 / 2, 7 / 4, 2, 5 / 2, 3, 4, 6, 8]
DURATION_CHARS = "0123456789ABCDEFG"
METRES = {"2/4": "a", "3/4": "b", "4/4": "c", "6/8": "d", "9/8": "e", "12/8": "f", "2/2": "g", "3/8": "h",
          "6/4": "i", "3/2": "j"}
OTHER_METRE = "k"
MODES = {"major": "M", "minor": "N", "dorian": "Q", "mixolydian": "X", "phrygian": "P", "lydian": "L",
         "locrian": "O"}
TUNE_TYPES = {"reel": "reel", "jig": "jig", "double jig": "jig", "hornpipe": "hornpipe", "strathspey": "strathspey",
              "slip jig": "slip jig", "slipjig": "slip jig", "air": "air", "clog": "clog",
              "highland fling": "highland fling", "fling": "highland fling"}
FIDDLE_BOOKS = ("ryansMammoth", "oneills1850")
ESSEN_SKIP = ("test", "variant")  # test files and a file of variants of other songs


def alphabet() -> str:
    """Every token character, in a fixed order: the vocabulary of a tune model."""
    pitches = "".join(chr(PITCH0 + p - LOW) for p in range(LOW, HIGH + 1))
    return pitches + REST + BAR + DURATION_CHARS + "".join(METRES.values()) + OTHER_METRE + "".join(MODES.values())


@dataclass
class Note:
    pitch: int | None  # MIDI number; None is a rest
    quarters: float


@dataclass
class Tune:
    metre: str  # "6/8", or "other"
    mode: str  # "major", "minor", "dorian", ...
    bars: list[list[Note]]


def duration_char(quarters: float) -> str:
    best = min(range(len(DURATIONS)), key=lambda i: abs(math.log(DURATIONS[i]) - math.log(quarters)))
    return DURATION_CHARS[best]


def encode_tune(tune: Tune, max_tokens: int) -> str:
    """A tune -> its token string, cut at the last bar line that keeps it within `max_tokens`."""
    out = METRES.get(tune.metre, OTHER_METRE) + MODES.get(tune.mode, MODES["major"])
    for bar in tune.bars:
        tokens = "".join((REST if n.pitch is None else chr(PITCH0 + n.pitch - LOW)) + duration_char(n.quarters)
                         for n in bar) + BAR
        if len(out) + len(tokens) > max_tokens:
            break
        out += tokens
    return out


def decode_tokens(text: str) -> Tune:
    """A token string (possibly a model's sample, so malformed pieces are skipped) -> a tune."""
    metres = {v: k for k, v in METRES.items()}
    modes = {v: k for k, v in MODES.items()}
    metre, mode, i = "4/4", "major", 0
    if text[:1] in metres or text[:1] == OTHER_METRE:
        metre, i = metres.get(text[0], "other"), 1
    if text[i : i + 1] in modes:
        mode, i = modes[text[i]], i + 1
    bars: list[list[Note]] = [[]]
    pending: int | str | None = "none"  # a pitch waiting for its duration
    for ch in text[i:]:
        if ch == BAR:
            if bars[-1]:
                bars.append([])
        elif ch == REST or PITCH0 <= ord(ch) <= PITCH0 + HIGH - LOW:
            pending = None if ch == REST else ord(ch) - PITCH0 + LOW
        elif ch in DURATION_CHARS and pending != "none":
            bars[-1].append(Note(pending, DURATIONS[DURATION_CHARS.index(ch)]))
            pending = "none"
    if not bars[-1]:
        bars.pop()
    return Tune(metre, mode, bars)


def notes_of(text: str) -> list[Note]:
    return [n for bar in decode_tokens(text).bars for n in bar]


# ---- reading ABC -------------------------------------------------------------------------------------------

def _metre(meta) -> str:
    try:
        num, den, _ = meta.getTimeSignatureParameters()
    except Exception:  # "none" and other forms music21 cannot read
        return "other"
    return f"{num}/{den}"


def _transpose_shift(sharps: int) -> int:
    """Semitones that take a key signature of `sharps` to none, within [-6, 5]."""
    shift = (-7 * sharps) % 12
    return shift - 12 if shift > 5 else shift


def _quarters(tok) -> float:
    """A note's length in quarters, its tuplet applied (music21's tokenizer leaves that to its score builder)."""
    tuplet = getattr(tok, "activeTuplet", None)
    return tok.quarterLength * (float(tuplet.tupletMultiplier()) if tuplet is not None else 1.0)


def parse_abc_tune(handler, transpose: bool = True) -> tuple[Tune, str | None]:
    """One tune's music21 ABCHandler -> (tune, its R: field); raises ValueError if it holds no melody."""
    from music21 import abcFormat, pitch

    metre, mode, sharps, rhythm = "4/4", "major", 0, None
    bars: list[list[Note]] = [[]]
    last: Note | None = None
    tie_open = False
    in_chord = False
    for tok in handler.tokens:
        if isinstance(tok, abcFormat.ABCMetadata):
            if tok.isMeter():
                metre = _metre(tok)
            elif tok.isKey():
                sharps, mode = tok.getKeySignatureParameters()
                mode = (mode or "major").lower()
            elif tok.tag == "R":
                rhythm = tok.data.strip().lower()
        elif isinstance(tok, abcFormat.ABCBar):
            if bars[-1]:
                bars.append([])
        elif isinstance(tok, abcFormat.ABCChord):
            notes = [t for t in tok.subTokens if isinstance(t, abcFormat.ABCNote) and not t.isRest]
            if notes and _quarters(tok) > 0:
                top = max(pitch.Pitch(n.pitchName).midi for n in notes)
                last = Note(top, _quarters(tok))
                bars[-1].append(last)
        elif isinstance(tok, abcFormat.ABCNote):
            if tok.inGrace or in_chord or _quarters(tok) <= 0:
                continue
            midi = None if tok.isRest else pitch.Pitch(tok.pitchName).midi
            if tie_open and last is not None and last.pitch == midi and midi is not None:
                last.quarters += _quarters(tok)  # a tie between equal pitches: one longer note
            else:
                last = Note(midi, _quarters(tok))
                bars[-1].append(last)
            tie_open = tok.tie == "start"
    if not bars[-1]:
        bars.pop()
    if not bars:
        raise ValueError("no notes")
    shift = _transpose_shift(sharps) if transpose else 0
    for bar in bars:
        for n in bar:
            if n.pitch is not None:
                n.pitch += shift
                if not LOW <= n.pitch <= HIGH:
                    raise ValueError(f"pitch {n.pitch} outside {LOW}-{HIGH}")
    return Tune(metre if metre in METRES else "other", mode, bars), rhythm


def _concept(source: Path, rhythm: str | None) -> str | None:
    book = source.parent.name
    if book in FIDDLE_BOOKS:
        return TUNE_TYPES.get(re.sub(r"\s+", " ", (rhythm or "").strip()))
    if book == "essenFolksong":
        stem = re.sub(r"\d+$", "", source.stem)
        return None if stem.startswith(ESSEN_SKIP) else f"essen:{stem}"
    return None


def corpus_files() -> list[Path]:
    try:
        import music21
    except ImportError:
        raise DataError("the tunes data needs music21: pip install music21 (its wheel holds the corpus)") from None
    root = Path(music21.__file__).parent / "corpus"
    files = [f for book in (*FIDDLE_BOOKS, "essenFolksong") for f in sorted((root / book).glob("*.abc"))]
    if not files:
        raise DataError(f"no ABC files under '{root}': this music21 installation has no corpus; reinstall music21")
    return files


@dataclass
class Parsed:
    concepts: dict[str, list[str]]  # concept -> token strings
    skipped: int  # tunes that could not be read
    duplicates: int
    unlabelled: int  # fiddle tunes with no known tune type


def parse_corpus(max_len: int, transpose: bool = True, progress: bool = True) -> Parsed:
    """Every tune of the corpus as token strings by concept; cached per (corpus files, max_len, transpose)."""
    from metagen.data.glyphs import cache_dir

    files = corpus_files()  # a one-line error without music21
    import music21

    stamp = hashlib.sha1("".join(f"{f.parent.name}/{f.name}:{f.stat().st_size}" for f in files).encode()).hexdigest()
    key = f"tunes-v{PARSE_VERSION}-m21-{music21.__version__}-len{max_len}-t{int(transpose)}-{stamp[:10]}.json"
    path = cache_dir() / key
    if path.is_file():
        raw = json.loads(path.read_text())
        return Parsed(raw["concepts"], raw["skipped"], raw["duplicates"], raw["unlabelled"])
    parsed = _parse_all(files, max_len, transpose, progress)
    from metagen.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(parsed.__dict__, ensure_ascii=False))
    return parsed


def _parse_all(files: list[Path], max_len: int, transpose: bool, progress: bool) -> Parsed:
    from music21 import abcFormat
    from tqdm.auto import tqdm

    concepts: dict[str, list[str]] = {}
    seen: set[str] = set()
    skipped = duplicates = unlabelled = 0
    bar = tqdm(files, desc="parsing tunes (once, then cached)", unit="file",
               disable=None if progress else True)  # None: shown on a terminal only
    for source in bar:
        try:
            handler = abcFormat.ABCHandler()
            handler.process(source.read_text(encoding="utf-8", errors="replace"))
            books = handler.splitByReferenceNumber() or {0: handler}
        except Exception:  # a file music21 cannot tokenize: every tune in it is skipped
            skipped += 1
            continue
        for book in books.values():
            try:
                tune, rhythm = parse_abc_tune(book, transpose)
            except Exception:  # a malformed tune: counted, never fatal
                skipped += 1
                continue
            concept = _concept(source, rhythm)
            if concept is None:
                unlabelled += 1
                continue
            text = encode_tune(tune, max_len - 2)
            if len(text) < 8:  # no complete bar fits, or almost nothing to learn from
                skipped += 1
                continue
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
            concepts.setdefault(concept, []).append(text)
    return Parsed(dict(sorted(concepts.items())), skipped, duplicates, unlabelled)


def load_tunes(max_len: int, min_tunes: int, transpose: bool, vocab) -> ConceptSet:
    """Tune concepts with at least `min_tunes` tunes, encoded with `vocab`: examples [N_i, max_len] int64."""
    parsed = parse_corpus(max_len, transpose)
    kept = {k: v for k, v in parsed.concepts.items() if len(v) >= min_tunes}
    if not kept:
        raise DataError(f"no tune concept has {min_tunes} tunes; lower data.min_entries")
    names = list(kept)
    return ConceptSet([vocab.encode(kept[k], max_len) for k in names], names, names)


def tune_counts(max_len: int, transpose: bool = True) -> dict[str, int]:
    """Tunes per concept (for the docs)."""
    return {k: len(v) for k, v in parse_corpus(max_len, transpose, progress=False).concepts.items()}
