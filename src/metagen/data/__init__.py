"""Data sources, group-level splits and episodes. `load_splits(cfg)` is the one entry point."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from metagen.config import DataConfig, SplitConfig
from metagen.data.concepts import ConceptSet, resolve_test_groups, split, split_concepts
from metagen.data.episodes import EpisodeSampler, Tasks, fixed_tasks
from metagen.data.fonts import FontData, held_out_characters, load_fonts, track_of, with_homoglyphs, without_characters
from metagen.data.glyphs import load_glyphs
from metagen.data.images import Layout, load_image, load_support
from metagen.data.omniglot import load_omniglot
from metagen.data.text import FORTUNE_DIR, CharVocab, all_characters, background_vocab, load_fortunes, lookup_table
from metagen.data.tunes import alphabet as tune_alphabet
from metagen.errors import DataError

# How each source lays characters out on the canvas; user images given to `adapt` get the same treatment.
LAYOUTS: dict[str, Layout] = {"omniglot": "resize", "glyphs": "fit", "fortunes": "fit", "tunes": "fit",  # text: unused
                               "fonts": "fit"}


@dataclass
class Splits:
    background: ConceptSet  # meta-training concepts
    held_out: ConceptSet  # evaluation concepts, from groups never seen in meta-training
    test_groups: list[str]
    layout: Layout
    validation: ConceptSet  # background-group concepts kept out of meta-training (may be empty)
    vocab: CharVocab | None = None  # text: the meta-training concepts' characters
    fonts: FontData | None = None  # fonts: every typeface with its characters, and the reference glyphs
    held_out_chars: str = ""  # fonts: characters no meta-training typeface shows (with their homoglyphs)


def resolve_data_dir(configured: str | None, override: str | None = None, env: bool = True) -> Path | None:
    """--data-dir, else the config's data.data_dir, else $METAGEN_DATA_DIR (if `env`)."""
    chosen = override or configured or (os.environ.get("METAGEN_DATA_DIR") if env else None)
    return Path(chosen).expanduser() if chosen else None


def load_concepts(data: DataConfig, data_dir: str | None = None) -> ConceptSet:
    """Every concept of `data`; text is encoded with `data.vocab`, or with every character seen if it is unset."""
    if data.source == "glyphs":
        return load_glyphs(data.image_size, data.examples_per_concept)
    if data.source == "fonts":
        return load_font_data(data).concepts
    if data.source == "tunes":
        from metagen.data.tunes import load_tunes

        return load_tunes(data.max_len, data.min_entries, data.transpose, CharVocab(data.vocab or tune_alphabet()))
    if data.source == "fortunes":
        root = resolve_data_dir(data.data_dir, data_dir, env=False) or FORTUNE_DIR
        vocab = CharVocab(data.vocab) if data.vocab is not None else \
            all_characters(root, data.max_len, data.min_entries)
        return load_fortunes(root, data.max_len, data.min_entries, vocab)
    root = resolve_data_dir(data.data_dir, data_dir)
    if root is None:
        raise DataError("Omniglot needs a data dir: pass --data-dir DIR or set METAGEN_DATA_DIR to the folder "
                        "holding images_background*.zip")
    if not root.is_dir():
        raise DataError(f"data dir '{root}' does not exist; pass --data-dir or set METAGEN_DATA_DIR")
    return load_omniglot(root, data.image_size)


def load_font_data(data: DataConfig) -> FontData:
    return load_fonts(data.font_dirs, data.scripts, data.image_size)


def load_splits(data: DataConfig, split_cfg: SplitConfig, data_dir: str | None = None,
                concepts: ConceptSet | None = None) -> Splits:
    """Background / validation / held-out concepts of `data` (or of `concepts`, already loaded from it)."""
    fonts = load_font_data(data) if data.source == "fonts" else None
    if concepts is None:
        concepts = fonts.concepts if fonts is not None else load_concepts(data, data_dir)
    test_groups = resolve_test_groups(concepts, split_cfg.test_groups, split_cfg.seed)
    background, held_out = split(concepts, test_groups)
    background, validation = split_concepts(background, split_cfg.val_fraction, split_cfg.seed)
    if data.rotations:
        background = background.with_rotations()
    if data.mirrors:
        background = background.with_mirrors()
    vocab = None
    if data.source == "tunes":  # a fixed token alphabet: every pitch, duration, metre and mode
        vocab = CharVocab(data.vocab or tune_alphabet())
    elif data.source == "fortunes" and data.vocab is not None:  # a trained model's vocabulary
        vocab = CharVocab(data.vocab)
    elif data.source == "fortunes":  # the background's characters; those only held-out texts use become UNK
        root = resolve_data_dir(data.data_dir, data_dir, env=False) or FORTUNE_DIR
        vocab = background_vocab(root, data.max_len, test_groups)
        table = lookup_table(all_characters(root, data.max_len, data.min_entries), vocab)
        background, validation, held_out = (s.map_examples(table.__getitem__)
                                            for s in (background, validation, held_out))
    held_out_chars = ""
    if fonts is not None and data.held_out_chars:
        chars = held_out_characters(data.held_out_chars, split_cfg.seed, track_of(data.scripts))
        held_out_chars = with_homoglyphs(chars, fonts)
        background, validation = (without_characters(s, fonts, held_out_chars) for s in (background, validation))
    return Splits(background, held_out, test_groups, LAYOUTS[data.source], validation, vocab, fonts, held_out_chars)


__all__ = [
    "LAYOUTS", "ConceptSet", "EpisodeSampler", "Splits", "Tasks", "fixed_tasks", "load_concepts", "load_image",
    "load_splits", "load_support",
]
