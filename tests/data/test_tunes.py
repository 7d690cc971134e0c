"""Tunes: the tokenizer round trip, ABC parsing and writing, splits by style, malformed input, music measures."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("music21", reason="the tunes data needs music21: pip install 'metagen[music]'")

from metagen.compose import read_tunes, to_abc
from metagen.data import tunes
from metagen.data.tunes import DURATIONS, Note, Tune, decode_tokens, encode_tune
from metagen.errors import DataError
from metagen.metrics import music

REEL = """X:1
T:Test Reel
M:4/4
L:1/8
R:reel
K:D
A|:dAFA dAFA|d2fd egfe|dAFA dAFA|B2AF E2DE:|
"""
JIG = """X:2
T:Test Jig
M:6/8
L:1/8
R:jig
K:G
D|G2B dBG|c2A B2G|(3ABc d e2d|^c3 =c3|
"""


def _parse(abc: str) -> tuple[Tune, str | None]:
    from music21 import abcFormat

    handler = abcFormat.ABCHandler()
    handler.process(abc)
    return tunes.parse_abc_tune(handler)


def test_tokens_round_trip_keeps_pitches_and_durations():
    rng = np.random.default_rng(0)
    for _ in range(50):
        bars = [[Note(None if rng.random() < 0.1 else int(rng.integers(tunes.LOW, tunes.HIGH + 1)),
                      float(DURATIONS[rng.integers(len(DURATIONS))])) for _ in range(rng.integers(1, 8))]
                for _ in range(rng.integers(1, 6))]
        tune = Tune(str(rng.choice(["2/4", "6/8", "3/4", "other"])), str(rng.choice(["major", "minor", "dorian"])),
                    bars)
        back = decode_tokens(encode_tune(tune, 10_000))
        assert (back.metre, back.mode) == (tune.metre, tune.mode)
        assert [[(n.pitch, n.quarters) for n in b] for b in back.bars] == \
            [[(n.pitch, n.quarters) for n in b] for b in bars]
    assert len(tunes.alphabet()) == len(set(tunes.alphabet()))  # one character per token


def test_abc_is_transposed_to_no_key_signature_and_survives_writing():
    reel, rhythm = _parse(REEL)
    assert rhythm == "reel" and reel.metre == "4/4" and reel.mode == "major"
    first = [n.pitch for n in reel.bars[0]]  # "A" pickup in D major, moved down 2 semitones to C major
    assert first == [67]
    assert [n.pitch for n in reel.bars[1][:4]] == [72, 67, 64, 67]  # d A F# A -> c G E G
    jig, _ = _parse(JIG)
    assert jig.metre == "6/8"
    triplet = [n.quarters for n in jig.bars[3][:3]]
    assert triplet == pytest.approx([1 / 3] * 3)
    assert [n.pitch for n in jig.bars[4]] == [73 + 5, 72 + 5]  # ^c =c in G, up a fourth with the tune
    for tune in (reel, jig):
        tokens = encode_tune(tune, 1000)
        written = to_abc(tokens)
        again, _ = _parse(written)  # our ABC writer, read back by music21
        assert encode_tune(again, 1000) == tokens


def test_accidentals_within_a_bar_are_written_and_read_back():
    tune = Tune("4/4", "major", [[Note(61, 1.0), Note(60, 1.0), Note(61, 1.0), Note(60, 1.0)]])
    tokens = encode_tune(tune, 100)
    abc = to_abc(tokens)
    assert "^C4 =C4 ^C4 =C4" in abc
    assert encode_tune(_parse(abc)[0], 100) == tokens


def test_cut_at_a_bar_line_that_fits():
    tune = Tune("2/4", "major", [[Note(60, 1.0), Note(62, 1.0)]] * 10)
    text = encode_tune(tune, 20)  # 2 context tokens + 5 per bar
    assert text.endswith(tunes.BAR) and len(text) <= 20 and len(decode_tokens(text).bars) == 3


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """A corpus of three small books: fiddle tunes of two types, and two Essen collections, one malformed tune."""
    fiddle = tmp_path / "ryansMammoth"
    essen = tmp_path / "essenFolksong"
    fiddle.mkdir()
    essen.mkdir()
    reels = "\n".join(REEL.replace("X:1", f"X:{i}").replace("dAFA dAFA|d2fd", f"dAFA dAF{'ABcdefg'[i % 7]}|d2fd")
                      .replace("B2AF E2DE", f"B2A{'FGABcde'[i // 7]} E2DE") for i in range(30))
    jigs = "\n".join(JIG.replace("X:2", f"X:{i}").replace("c2A B2G", f"c2A B2{'ABcdefg'[i % 7]}")
                     .replace("^c3 =c3", f"^c3 ={'ABcdefg'[i // 7]}3") for i in range(30))
    (fiddle / "reels.abc").write_text(reels)
    (fiddle / "jigs.abc").write_text(jigs + "\nX:99\nT:broken\nM:4/4\nK:Zzz\n|]\n")
    for name, metre in (("han1", "2/4"), ("lux0", "3/4")):
        songs = "\n".join(f"X:{i}\nT:s{i}\nM:{metre}\nL:1/8\nK:C\n{'CDEG'[i % 4]}DEG|A{'cdeg'[i // 4 % 4]}GE|"
                          f"{'CDEGA'[i % 5]}2D2|\n" for i in range(30))
        (essen / f"{name}.abc").write_text(songs + "\n" + songs.split("\n\n")[0].replace("X:0", "X:100"))
    files = sorted(fiddle.glob("*.abc")) + sorted(essen.glob("*.abc"))
    monkeypatch.setattr(tunes, "corpus_files", lambda: files)
    return files


def test_concepts_duplicates_and_malformed_tunes(small_corpus):
    parsed = tunes.parse_corpus(160, progress=False)
    assert set(parsed.concepts) == {"reel", "jig", "essen:han", "essen:lux"}
    assert parsed.skipped >= 1  # the broken tune is counted, not fatal
    assert parsed.duplicates > 0  # each Essen book repeats its first song
    assert all(len(set(v)) == len(v) for v in parsed.concepts.values())


def test_held_out_styles_are_disjoint_from_training(small_corpus):
    from metagen.config import load_config
    from metagen.data import load_splits

    cfg = load_config("tunes", ["data.min_entries=3", "split.test_groups=['jig', 'essen:lux']",
                                "split.val_fraction=0.0"])
    splits = load_splits(cfg.data, cfg.split)
    assert set(splits.held_out.names) == {"jig", "essen:lux"}
    assert set(splits.background.names) == {"reel", "essen:han"}
    assert splits.vocab.chars == tunes.alphabet()


def test_malformed_tune_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    with pytest.raises(DataError, match="cannot read tune file"):
        read_tunes(bad)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a tune file"):
        read_tunes(tmp_path / "notes.txt")
    (tmp_path / "empty.abc").write_text("X:1\nT:nothing\nK:C\n")
    with pytest.raises(DataError, match="holds no notes"):
        read_tunes(tmp_path / "empty.abc")
    with pytest.raises(DataError, match="not found"):
        read_tunes(tmp_path / "missing.abc")


def test_midi_and_musicxml_support_files_read_like_abc(tmp_path):
    from music21 import converter

    src = tmp_path / "reel.abc"
    src.write_text(REEL)
    score = converter.parse(str(src))
    score.write("midi", fp=str(tmp_path / "reel.mid"))
    score.write("musicxml", fp=str(tmp_path / "reel.musicxml"))
    abc = [n.pitch for b in read_tunes(src)[0].bars for n in b]
    for other in ("reel.mid", "reel.musicxml"):
        got = [n.pitch for b in read_tunes(tmp_path / other)[0].bars for n in b]
        assert got[: len(abc)] == abc, other  # same melody, same transposition (MIDI plays the repeat out)


def test_lcs_matches_a_reference_loop():
    rng = np.random.default_rng(1)

    def reference(a, b):
        t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                t[i + 1][j + 1] = t[i][j] + 1 if a[i] == b[j] else max(t[i][j + 1], t[i + 1][j])
        return t[-1][-1]

    for _ in range(100):
        a = list(rng.integers(0, 4, rng.integers(0, 15)))
        b = list(rng.integers(0, 4, rng.integers(0, 15)))
        assert music.lcs_length(a, b) == reference(a, b)


def test_music_measures_on_hand_built_tunes():
    c_major = encode_tune(Tune("4/4", "major", [[Note(p, 1.0) for p in (60, 62, 64, 65)]] * 4), 200)
    pentatonic = encode_tune(Tune("2/4", "major", [[Note(p, 0.5) for p in (61, 63, 66, 68)]] * 4), 200)
    assert music.histogram_distance([c_major], [c_major])["mean"] == 0
    assert music.histogram_distance([c_major], [pentatonic])["pitch_class"] == 1.0  # disjoint pitch classes
    assert music.metre_consistency([c_major]) == 1.0
    bad_bars = encode_tune(Tune("3/4", "major", [[Note(60, 1.0)]] * 5), 200)
    assert music.metre_consistency([bad_bars]) == 0.0
    assert music.lcs_share(c_major, [c_major, pentatonic]) == 1.0
    assert music.lcs_share(pentatonic, [c_major]) == 0.0
    clf = music.StyleClassifier([c_major, pentatonic] * 5, [0, 1] * 5, 2)
    assert list(clf.predict([pentatonic, c_major])) == [1, 0]


def test_train_compose_end_to_end_and_bad_files(small_corpus, tmp_path, capsys):
    from music21 import converter

    from metagen.cli import main

    run = str(tmp_path / "run")
    tiny = ["--set", "generator.embed_dim=8", "--set", "generator.hidden=16", "--set", "learner.context_dim=4",
            "--set", "learner.channels=8", "--set", "data.min_entries=3", "--set", "split.val_fraction=0.0",
            "--set", "split.test_groups=['jig', 'essen:lux']", "--set", "train.meta_batch=2",
            "--set", "train.val_every=0", "--set", "train.patience=0", "--quiet"]
    assert main(["train", "--config", "tunes", "--out", run, "--steps", "3", *tiny]) == 0
    assert main(["eval", "--checkpoint", run, "--out", str(tmp_path / "eval"), "--shots", "0", "2",
                 "--episodes", "1", "--quiet"]) == 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "NLL in bits/token" in report and "| method | essen:lux | jig |" in report
    support = tmp_path / "jig.abc"
    support.write_text(JIG)
    converter.parse(str(support)).write("midi", fp=str(tmp_path / "jig.mid"))
    out = tmp_path / "out"
    assert main(["compose", "--checkpoint", run, "--support", str(support), str(tmp_path / "jig.mid"), "--n", "3",
                 "--out", str(out), "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pianoroll.png", *[f"sample_{i:03d}.{ext}" for i in range(3) for ext in ("abc", "mid",
                                                                                               "musicxml")],
                     "samples.abc", "support_pianoroll.png"]
    for i in range(3):  # every written file reads back as music
        converter.parse(str(out / f"sample_{i:03d}.musicxml"))
        converter.parse(str(out / f"sample_{i:03d}.mid"))
    capsys.readouterr()
    bad = tmp_path / "bad.abc"
    bad.write_text("X:1\nT:no notes\nK:C\n")
    assert main(["compose", "--checkpoint", run, "--support", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no notes" in err[0]
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    assert main(["compose", "--checkpoint", run, "--support", str(tmp_path / "x.wav"), "--quiet"]) == 2
    assert "not a tune file" in capsys.readouterr().err


def test_every_tune_preset_reads_tunes_with_its_learner():
    from metagen.config import load_config, presets

    names = [n for n in presets() if n.startswith("tunes")]
    assert len(names) >= 8
    for name in names:
        cfg = load_config(name)
        assert cfg.data.source == "tunes" and cfg.generator.name in ("lstm", "transformer"), name
        expected = name.removeprefix("tunes").removeprefix("-") or "context"
        assert cfg.learner.name == {"transformer": "context", "fomaml": "maml"}.get(expected, expected), name
        if cfg.learner.name in ("maml", "metasgd"):  # the gradient family adapts the output layer only
            assert cfg.learner.adapt_params == r"^head\." and cfg.learner.inner_lr == 0.1, name
            assert cfg.learner.first_order == (name != "tunes-maml"), name
