"""Text concepts from Debian's fortune packages, and the character vocabulary that encodes them.

- `fortunes` (apt-get install fortunes): about 40 English category files (literature, science,
  songs-poems, ...) in /usr/share/games/fortunes, entries separated by lines holding only "%". A concept
  is a category; its examples are its entries.
- `fortunes-zh` (apt-get install fortunes-zh): `tang300` (Three Hundred Tang Poems) and `song100` (One
  Hundred Song Poems). Each entry is a poem: a title line, an author line ("作者：杜甫", Song poets with
  their dates), then the verses. A concept is a poet; its examples are the poet's poems as title + verses
  (the author line is dropped: it names the concept).

Terminal colour codes (the Chinese files colour titles and authors) and backspace overstriking (old
underlining in the English files) are removed. The vocabulary is character-level, so English and
Chinese are handled alike.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from metagen.data.concepts import ConceptSet
from metagen.errors import DataError

FORTUNE_DIR = Path("/usr/share/games/fortunes")
POEM_FILES = {"tang300": "tang", "song100": "song"}  # fortunes-zh files of poems -> their collection
NOT_CATEGORIES = {"chinese", "ascii-art", "translate-me", "pratchett"}  # no single voice, art, or a stub
ANSI = re.compile(r"\x1b\[[0-9;]*m")
OVERSTRIKE = re.compile(r"_+\x08+|.\x08")  # "_\bA" and the .u8 files' "___\b\b\bONE" both underline
AUTHOR = re.compile(r"^作者[:：]\s*(.+?)\s*$")
SAME_GROUP = {"linuxcookie": "linux", "debian": "linux"}  # near-duplicate categories are held out together
DATES = re.compile(r"[（(][^）)]*[）)]$")


@dataclass
class TextConcept:
    name: str  # "literature", "杜甫"
    group: str  # "english", "tang", "song"
    texts: list[str]


def clean(text: str) -> str:
    """Strip colour codes, overstriking and surrounding blank space."""
    return OVERSTRIKE.sub("", ANSI.sub("", text)).strip()


def read_entries(path: Path) -> list[str]:
    """The non-empty entries of a fortune file, cleaned."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot read fortune file '{path}': {e.strerror}") from None
    return split_entries(raw)


def split_entries(raw: str) -> list[str]:
    """Texts separated by lines holding only %, cleaned; empty ones dropped."""
    return [e for e in (clean(part) for part in re.split(r"^%$", raw, flags=re.M)) if e]


def encode_support(texts: list[str], vocab: str, max_len: int) -> tuple[torch.Tensor, str]:
    """A text support set -> (token ids [K, max_len], the characters the vocabulary lacks); DataError if unusable."""
    if not texts:
        raise DataError("the support holds no text; give at least one non-empty text")
    longest = max(texts, key=len)
    if len(longest) > max_len - 2:
        raise DataError(f"a support text has {len(longest)} characters; this model reads at most {max_len - 2}: "
                        "split it into entries separated by lines holding only %")
    chars = CharVocab(vocab)
    unknown = "".join(sorted({c for t in texts for c in t if c not in chars.index}))
    return chars.encode(texts, max_len), unknown


def parse_poem(entry: str) -> tuple[str, str] | None:
    """(poet, title + verses) of a fortunes-zh poem entry, or None if it has no author line."""
    lines = entry.split("\n")
    for i, line in enumerate(lines[:3]):
        m = AUTHOR.match(line.strip())
        if m:
            poet = DATES.sub("", m.group(1)).strip()
            title = "\n".join(lines[:i]).strip().removeprefix("题目:").removeprefix("题目：")
            return poet, "\n".join([title, *lines[i + 1 :]]).strip()
    return None


def require_fortunes(root: Path, files: list[str], package: str) -> None:
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DataError(f"'{root / missing[0]}' not found: install the text data with "
                        f"`apt-get install -y {package}` (or point data.data_dir at a copy of {root})")


def english_categories(root: Path = FORTUNE_DIR) -> list[TextConcept]:
    """One concept per English category file (the UTF-8 `.u8` variant where the package ships one)."""
    require_fortunes(root, ["literature"], "fortunes")
    concepts = []
    for path in sorted(root.iterdir()):
        if path.suffix or path.name in NOT_CATEGORIES or path.name in POEM_FILES or not path.is_file():
            continue
        u8 = path.with_name(path.name + ".u8")
        concepts.append(TextConcept(path.name, "english", read_entries(u8 if u8.is_file() else path)))
    return concepts


def chinese_poets(root: Path = FORTUNE_DIR) -> list[TextConcept]:
    """One concept per poet of tang300 and song100, in order of first appearance."""
    require_fortunes(root, list(POEM_FILES), "fortunes-zh")
    concepts: dict[str, TextConcept] = {}
    for file, collection in POEM_FILES.items():
        for entry in read_entries(root / file):
            parsed = parse_poem(entry)
            if parsed is None:
                continue
            poet, poem = parsed
            concepts.setdefault(poet, TextConcept(poet, collection, [])).texts.append(poem)
    return list(concepts.values())


def fortune_concepts(root: Path = FORTUNE_DIR, min_entries: int = 1, max_chars: int | None = None) -> list[TextConcept]:
    """English categories and Chinese poets with at least `min_entries` entries of at most `max_chars`."""
    out = []
    for c in _parsed(root, _stamp(root)):
        texts = [t for t in c.texts if max_chars is None or len(t) <= max_chars]
        if len(texts) >= min_entries:
            out.append(TextConcept(c.name, c.group, texts))
    return out


def _stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """The folder's files with size and modification time: a changed file is parsed again."""
    if not root.is_dir():
        return ()
    stats = [(p.name, p.stat()) for p in sorted(root.iterdir())]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


@lru_cache(maxsize=4)
def _parsed(root: Path, stamp: tuple[tuple[str, int, int], ...]) -> tuple[TextConcept, ...]:
    """Every category and poet of `root`, parsed once per version of its files (a split reads them thrice)."""
    return tuple(english_categories(root) + chinese_poets(root))


class CharVocab:
    """Characters <-> ids. 0 pads, 1 begins and ends a text, 2 stands for any character not in the vocabulary."""

    PAD, BOUNDARY, UNK = 0, 1, 2
    RESERVED = 3

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars = chars
        self.index = {c: i + self.RESERVED for i, c in enumerate(chars)}

    @classmethod
    def build(cls, texts: list[str], min_count: int = 1) -> CharVocab:
        """Every character seen at least `min_count` times, most frequent first (ties in code-point order)."""
        counts = Counter(c for t in texts for c in t)
        return cls("".join(sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))))

    def __len__(self) -> int:
        return len(self.chars) + self.RESERVED

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        """[N, length] int64: boundary, the characters, boundary, then padding; longer texts are an error."""
        out = torch.full((len(texts), length), self.PAD, dtype=torch.long)
        for i, t in enumerate(texts):
            if len(t) + 2 > length:
                raise DataError(f"text {i} has {len(t)} characters; the sequence length {length} holds "
                                f"{length - 2}: raise data.max_len or drop longer texts")
            ids = [self.BOUNDARY, *(self.index.get(c, self.UNK) for c in t), self.BOUNDARY]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """[N, L] ids -> texts: what lies between the opening and the closing boundary ("\ufffd" for unknown)."""
        texts = []
        for row in ids.tolist():
            body = row[1:] if row and row[0] == self.BOUNDARY else row
            chars = []
            for i in body:
                if i in (self.BOUNDARY, self.PAD):
                    break
                chars.append("\ufffd" if i == self.UNK else self.chars[i - self.RESERVED])
            texts.append("".join(chars))
        return texts


def load_fortunes(root: Path, max_len: int, min_entries: int, vocab: CharVocab) -> ConceptSet:
    """Fortune concepts encoded with `vocab`: examples [N_i, max_len] int64. Each concept is its own group
    (so split.test_groups names held-out categories and poets), except that near-duplicate categories share
    one: linuxcookie and debian with linux."""
    concepts = fortune_concepts(root, min_entries, max_len - 2)
    if not concepts:
        raise DataError(f"no fortune category or poet has {min_entries} entries of at most {max_len - 2} characters; "
                        "lower data.min_entries or raise data.max_len")
    return ConceptSet([vocab.encode(c.texts, max_len) for c in concepts], [c.name for c in concepts],
                      [SAME_GROUP.get(c.name, c.name) for c in concepts])


def all_characters(root: Path, max_len: int, min_entries: int) -> CharVocab:
    """A provisional vocabulary of every character of every concept (what `load_concepts` encodes with
    before the split says which characters the model may know)."""
    return CharVocab.build([t for c in fortune_concepts(root, min_entries, max_len - 2) for t in c.texts])


def background_vocab(root: Path, max_len: int, held_out_groups: list[str]) -> CharVocab:
    """The characters of every entry (of at most max_len - 2) outside the held-out groups, most frequent
    first; concepts too small to train on still count, so poets with a few poems widen the vocabulary."""
    concepts = fortune_concepts(root, 1, max_len - 2)
    held = set(held_out_groups)
    return CharVocab.build([t for c in concepts if SAME_GROUP.get(c.name, c.name) not in held for t in c.texts])


def lookup_table(old: CharVocab, new: CharVocab) -> torch.Tensor:
    """[len(old)] old id -> new id; characters `new` lacks become UNK."""
    table = torch.full((len(old),), CharVocab.UNK, dtype=torch.long)
    table[: CharVocab.RESERVED] = torch.arange(CharVocab.RESERVED)
    for i, c in enumerate(old.chars):
        table[i + CharVocab.RESERVED] = new.index.get(c, CharVocab.UNK)
    return table
