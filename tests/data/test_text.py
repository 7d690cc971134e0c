"""Text concepts from fortune files: parsing, cleaning, poets, the character vocabulary, clear errors."""

import pytest
import torch

from metagen.data.text import (
    FORTUNE_DIR,
    CharVocab,
    chinese_poets,
    english_categories,
    fortune_concepts,
    parse_poem,
    read_entries,
)
from metagen.errors import DataError

GREEN, YELLOW, RESET = "\x1b[32m", "\x1b[33m", "\x1b[m"


@pytest.fixture
def fortune_dir(tmp_path):
    underlined = "".join(f"_\b{c}" for c in "book")  # overstriking: underscore, backspace, letter
    (tmp_path / "literature").write_text(f"A {underlined} is a mirror.\n\t\t-- Lichtenberg\n%\nSecond entry.\n%\n\n%\n")
    (tmp_path / "literature.dat").write_bytes(b"\x00\x01")  # the index files are not categories
    (tmp_path / "science").write_text("latin-1 caf\xe9 version\n%\n", encoding="latin-1")
    (tmp_path / "science.u8").write_text("utf-8 café version\n%\nE = mc^2\n%\n")
    (tmp_path / "literature.u8").write_text("An *___\b\b\bone* of them.\n%\n")  # the .u8 files' underlining
    (tmp_path / "chinese").write_text("不是一个人的声音\n%\n")
    tang = (f"{GREEN}《感遇》{RESET}\n{YELLOW}作者：张九龄{RESET}\n兰叶春葳蕤，\n桂华秋皎洁。\n%\n"
            f"{GREEN}《月夜》{RESET}\n{YELLOW}作者：杜甫{RESET}\n今夜鄜州月，\n%\n"
            f"{GREEN}《春望》{RESET}\n{YELLOW}作者：杜甫{RESET}\n国破山河在，\n%\n")
    song = f"{GREEN}题目:《塞上》{RESET}\n{YELLOW}作者:柳开（９４６－９９９）{RESET}\n鸣骹直上一千尺，\n%\n"
    (tmp_path / "tang300").write_text(tang)
    (tmp_path / "song100").write_text(song)
    return tmp_path


def test_entries_are_split_and_cleaned(fortune_dir):
    assert read_entries(fortune_dir / "literature") == ["A book is a mirror.\n\t\t-- Lichtenberg", "Second entry."]
    assert read_entries(fortune_dir / "literature.u8") == ["An *one* of them."]


def test_english_categories_prefer_the_utf8_file_and_skip_non_categories(fortune_dir):
    cats = {c.name: c for c in english_categories(fortune_dir)}
    assert set(cats) == {"literature", "science"}  # not chinese, not the .dat/.u8 files, not the poems
    assert cats["science"].texts == ["utf-8 café version", "E = mc^2"]
    assert all(c.group == "english" for c in cats.values())


def test_poets_are_concepts_and_their_name_is_not_in_the_text(fortune_dir):
    poets = {c.name: c for c in chinese_poets(fortune_dir)}
    assert list(poets) == ["张九龄", "杜甫", "柳开"]  # Song poets' dates are dropped from the name
    assert poets["杜甫"].texts == ["《月夜》\n今夜鄜州月，", "《春望》\n国破山河在，"]
    assert poets["柳开"].texts == ["《塞上》\n鸣骹直上一千尺，"] and poets["柳开"].group == "song"
    assert all("\x1b" not in t and "作者" not in t for c in poets.values() for t in c.texts)
    assert parse_poem("no author line here") is None


def test_concept_filters(fortune_dir):
    names = [c.name for c in fortune_concepts(fortune_dir, min_entries=2)]
    assert names == ["science", "杜甫"]  # literature's .u8 file, the one read, has one entry
    short = fortune_concepts(fortune_dir, min_entries=1, max_chars=10)
    assert {c.name: c.texts for c in short}["science"] == ["E = mc^2"]


def test_missing_packages_say_what_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y fortunes`"):
        english_categories(tmp_path)
    (tmp_path / "literature").write_text("x\n%\n")
    with pytest.raises(DataError, match="apt-get install -y fortunes-zh"):
        chinese_poets(tmp_path)


def test_vocabulary_round_trip_unknown_characters_and_lengths():
    vocab = CharVocab.build(["abba", "杜甫 a"])
    assert vocab.chars == "ab 杜甫"  # by frequency, ties in code-point order
    assert len(vocab) == 5 + CharVocab.RESERVED
    ids = vocab.encode(["ab", "甫z"], 6)
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    assert ids[0].tolist() == [1, vocab.index["a"], vocab.index["b"], 1, 0, 0]
    assert ids[1, 2].item() == CharVocab.UNK
    assert vocab.decode(ids) == ["ab", "甫\ufffd"]
    with pytest.raises(DataError, match="raise data.max_len"):
        vocab.encode(["abcde"], 6)
    assert CharVocab.build(["aab"], min_count=2).chars == "a"


@pytest.mark.skipif(not (FORTUNE_DIR / "tang300").is_file() or not (FORTUNE_DIR / "literature").is_file(),
                    reason="needs the Debian packages fortunes and fortunes-zh")
def test_the_installed_packages():
    concepts = fortune_concepts(min_entries=20, max_chars=300)
    by_name = {c.name: c for c in concepts}
    assert {"literature", "science", "songs-poems", "杜甫", "李白", "王维"} <= set(by_name)
    assert len(by_name["杜甫"].texts) >= 30 and by_name["杜甫"].group == "tang"
    assert all("\x1b" not in t and "\x08" not in t for c in concepts for t in c.texts)
