"""Tunes in and out: read support tunes (ABC, MIDI, MusicXML) into tokens, write samples as ABC, MIDI,
MusicXML and a piano-roll PNG. Used by `metagen compose`."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metagen.data.tunes import HIGH, LOW, METRES, Note, Tune, _transpose_shift, decode_tokens, encode_tune
from metagen.errors import DataError

SUFFIXES = {".abc": "abc", ".mid": "midi", ".midi": "midi", ".xml": "musicxml", ".musicxml": "musicxml",
            ".mxl": "musicxml"}
# Key names with no sharps or flats, per mode: where `transpose` puts every tune.
PLAIN_KEYS = {"major": "C", "minor": "Am", "dorian": "Ddor", "mixolydian": "Gmix", "phrygian": "Ephr",
              "lydian": "Flyd", "locrian": "Bloc"}


def read_tunes(path: str | Path, transpose: bool = True) -> list[Tune]:
    """Every tune of an ABC, MIDI or MusicXML file, melody only (top note of chords); DataError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tune file '{path}' not found")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"'{path}' is not a tune file: give .abc, .mid/.midi or .musicxml/.xml/.mxl")
    try:
        tunes = _read_abc(path, transpose) if fmt == "abc" else [_from_score(path, transpose)]
    except DataError:
        raise
    except Exception as e:  # music21 raises many kinds on damaged files
        raise DataError(f"cannot read tune file '{path}' ({type(e).__name__}); is it valid {fmt}?") from None
    tunes = [t for t in tunes if t.bars]
    if not tunes:
        raise DataError(f"'{path}' holds no notes")
    return tunes


def _read_abc(path: Path, transpose: bool) -> list[Tune]:
    from music21 import abcFormat

    from metagen.data.tunes import parse_abc_tune

    handler = abcFormat.ABCHandler()
    handler.process(path.read_text(encoding="utf-8", errors="replace"))
    books = handler.splitByReferenceNumber() or {0: handler}
    out = []
    for book in books.values():
        try:
            out.append(parse_abc_tune(book, transpose)[0])
        except ValueError:
            continue
    return out


def _from_score(path: Path, transpose: bool) -> Tune:
    from music21 import converter, key, meter

    score = converter.parse(str(path))
    parts = list(getattr(score, "parts", [])) or [score]
    part = next((p for p in parts if p.flatten().notes), None)
    if part is None:
        raise DataError(f"'{path}' holds no notes")
    ts = next(iter(part.flatten().getElementsByClass(meter.TimeSignature)), None)
    metre = ts.ratioString if ts is not None else "4/4"
    ks = next(iter(part.flatten().getElementsByClass(key.KeySignature)), None)
    if ks is None or not isinstance(ks, key.Key):
        analysed = score.analyze("key")
        sharps, mode = analysed.sharps, analysed.mode
    else:
        sharps, mode = ks.sharps, ks.mode
    if ks is not None and not isinstance(ks, key.Key):
        sharps = ks.sharps
    measures = list(part.getElementsByClass("Measure")) or [part.makeMeasures()]
    shift = _transpose_shift(sharps) if transpose else 0
    bars = []
    for m in measures:
        bar = []
        for el in m.flatten().notesAndRests:
            if el.duration.quarterLength <= 0 or getattr(el.duration, "isGrace", False):
                continue
            if el.isRest:
                bar.append(Note(None, float(el.quarterLength)))
                continue
            top = max(p.midi for p in el.pitches) + shift
            if not LOW <= top <= HIGH:
                raise DataError(f"'{path}' has a note (MIDI {top - shift}) outside the range the models know")
            bar.append(Note(top, float(el.quarterLength)))
        if bar:
            bars.append(bar)
    return Tune(metre if metre in METRES else "other", (mode or "major").lower(), bars)


def support_tokens(paths: list[str], max_len: int, transpose: bool = True) -> list[str]:
    """Support files -> token strings (every tune in them), each cut to fit `max_len`."""
    if not paths:
        raise DataError("the support set is empty; give at least one tune file with --support")
    return [encode_tune(t, max_len - 2) for p in paths for t in read_tunes(p, transpose)]


# ---- writing -----------------------------------------------------------------------------------------------

def _abc_pitch(midi: int, bar_state: dict[str, str]) -> str:
    """MIDI -> ABC note name in a key without accidentals, tracking accidentals within the bar."""
    names = ["C", "^C", "D", "^D", "E", "F", "^F", "G", "^G", "A", "^A", "B"]
    name = names[midi % 12]
    acc, letter = (name[0], name[1]) if len(name) == 2 else ("", name)
    octave = midi // 12 - 1  # C4 = 60 is "C"
    key = f"{letter}{octave}"
    current = bar_state.get(key, "")
    mark = "" if acc == current else (acc or "=")
    bar_state[key] = acc
    text = letter.lower() + "'" * (octave - 5) if octave >= 5 else letter + "," * (4 - octave)
    return mark + text


def _abc_length(quarters: float) -> str:
    units = Fraction(quarters).limit_denominator(48) * 4  # L:1/16
    if units == 1:
        return ""
    if units.denominator == 1:
        return str(units.numerator)
    return f"{units.numerator}/{units.denominator}" if units.numerator != 1 else f"/{units.denominator}"


def to_abc(text: str, number: int = 1, title: str = "metagen sample") -> str:
    """A token string -> one ABC tune (X: number), in the key with no sharps or flats of its mode."""
    tune = decode_tokens(text)
    lines = [f"X:{number}", f"T:{title}", f"M:{tune.metre if tune.metre != 'other' else 'none'}", "L:1/16",
             f"K:{PLAIN_KEYS.get(tune.mode, 'C')}"]
    body = []
    for bar in tune.bars:
        state: dict[str, str] = {}
        body.append(" ".join((("z" if n.pitch is None else _abc_pitch(n.pitch, state)) + _abc_length(n.quarters))
                             for n in bar))
    rows = [" | ".join(body[i : i + 4]) for i in range(0, len(body), 4)]
    return "\n".join(lines + [r + " |" for r in rows]) + "\n"


def to_stream(text: str):
    """A token string -> a music21 Part (for MIDI and MusicXML)."""
    from music21 import meter, note, stream

    tune = decode_tokens(text)
    part = stream.Part()
    if tune.metre != "other":
        part.append(meter.TimeSignature(tune.metre))
    for bar in tune.bars:
        for n in bar:
            el = note.Rest() if n.pitch is None else note.Note(n.pitch)
            el.quarterLength = Fraction(n.quarters).limit_denominator(48)
            part.append(el)
    return part


def write_midi(text: str, path: Path) -> Path:
    to_stream(text).write("midi", fp=str(path))
    return path


def write_musicxml(text: str, path: Path) -> Path:
    part = to_stream(text)
    part.makeNotation(inPlace=True)
    part.write("musicxml", fp=str(path))
    return path


def piano_roll(texts: list[str], px_per_16th: int = 3, px_per_pitch: int = 3) -> Image.Image:
    """One panel per tune: time left to right (16ths), pitch bottom to top; grey lines at bar lines."""
    tunes = [decode_tokens(t) for t in texts]
    pitches = [n.pitch for t in tunes for b in t.bars for n in b if n.pitch is not None] or [60]
    lo, hi = min(pitches) - 2, max(pitches) + 2
    length = max([sum(n.quarters for b in t.bars for n in b) for t in tunes] + [1.0])
    width = int(np.ceil(length * 4 * px_per_16th)) + 8
    panel = (hi - lo + 1) * px_per_pitch + 6
    img = Image.new("RGB", (width, panel * len(tunes)), "white")
    draw = ImageDraw.Draw(img)
    for i, tune in enumerate(tunes):
        top = i * panel
        draw.line([(0, top + panel - 1), (width, top + panel - 1)], fill=(160, 160, 160))
        t = 0.0
        for bar in tune.bars:
            x = 4 + t * 4 * px_per_16th
            draw.line([(x, top), (x, top + panel - 4)], fill=(225, 225, 225))
            for n in bar:
                x0, x1 = 4 + t * 4 * px_per_16th, 4 + (t + n.quarters) * 4 * px_per_16th - 1
                if n.pitch is not None:
                    y = top + 3 + (hi - n.pitch) * px_per_pitch
                    draw.rectangle([x0, y, max(x0, x1), y + px_per_pitch - 1], fill=(30, 60, 160))
                t += n.quarters
    return img
