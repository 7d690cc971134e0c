"""Character language models (LSTM, Transformer): exact likelihoods, sampling, conditioning, text data in runs."""

import itertools
import math

import pytest
import torch

from metagen.config import from_dict
from metagen.data import load_splits
from metagen.data.text import CharVocab
from metagen.errors import ConfigError, DataError
from metagen.generators.lstm import CharLSTM, LSTMConfig
from metagen.generators.text import characters
from metagen.generators.transformer import CharTransformer, TransformerConfig
from metagen.train import prepare, train

V = 6  # 3 reserved ids + 3 characters


def make(family: str, L: int = 10, cond_dim: int = 0, vocab_size: int = V):
    torch.manual_seed(0)
    if family == "lstm":
        return CharLSTM(LSTMConfig(vocab_size=vocab_size, embed_dim=8, hidden=16), (L,), cond_dim)
    return CharTransformer(TransformerConfig(vocab_size=vocab_size, dim=16, heads=2, layers=2), (L,), cond_dim)


FAMILIES = ["lstm", "transformer"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cond_dim", [0, 3])
def test_log_prob_is_the_sum_of_the_sampling_steps(family, cond_dim):
    model = make(family, cond_dim=cond_dim)
    cond = torch.randn(5, 3) if cond_dim else None
    with torch.no_grad():
        x, logp = model.sample_with_log_prob(5, cond, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(model.log_prob(x, cond), logp, atol=1e-5)
        assert (x[:, 0] == CharVocab.BOUNDARY).all() and (x != CharVocab.PAD).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_probabilities_of_every_text_sum_to_one(family):
    # L = 4: texts of 0, 1 or 2 characters closed by a boundary, or 3 characters cut at the end. Every next
    # token is one of BOUNDARY, UNK and the 3 characters.
    model = make(family, L=4).double()
    choices = [CharVocab.BOUNDARY, *range(CharVocab.UNK, V)]
    texts = []
    for n in range(4):
        for chars in itertools.product(range(CharVocab.UNK, V), repeat=n):
            row = [CharVocab.BOUNDARY, *chars] + ([CharVocab.BOUNDARY] if n < 3 else [])
            texts.append(row + [CharVocab.PAD] * (4 - len(row)))
    x = torch.tensor(texts)
    assert len(x) == 1 + 4 + 16 + 64 and len(choices) == 5
    with torch.no_grad():
        total = model.log_prob(x).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_token_only_affects_the_predictions_after_it(family):
    model = make(family)
    x = torch.tensor([[1, 3, 4, 5, 3, 4, 1, 0, 0, 0]])
    y = x.clone()
    y[0, 4] = 5
    with torch.no_grad():
        a, b = model.logits(x, None), model.logits(y, None)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4], b[:, 4])


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_options(family):
    model = make(family, L=12)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        greedy = model.sample(3, generator=g, top_k=1)
        assert (greedy == greedy[0]).all()  # top-1 is deterministic
        prompted = model.sample(4, generator=g, prompt=torch.tensor([5, 4]))
        assert (prompted[:, 1:3] == torch.tensor([5, 4])).all()
        again = model.sample(4, generator=torch.Generator().manual_seed(7), temperature=0.5)
        assert torch.equal(again, model.sample(4, generator=torch.Generator().manual_seed(7), temperature=0.5))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, temperature=0)
    with pytest.raises(DataError, match="prompt has 11 characters"):
        model.sample(1, prompt=torch.full((11,), 3))


def test_bad_inputs_and_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="vocab_size"):
        CharLSTM(LSTMConfig(), (10,))
    with pytest.raises(ConfigError, match="models text"):
        CharLSTM(LSTMConfig(vocab_size=V), (1, 28, 28))
    with pytest.raises(DataError, match="token ids"):
        make("lstm").log_prob(torch.zeros(2, 10))
    with pytest.raises(ConfigError, match="multiple of generator.heads"):
        from_dict({"data": {"source": "fortunes"}, "generator": {"name": "transformer", "dim": 10, "heads": 4}})
    with pytest.raises(ConfigError, match="use generator.name = lstm or transformer"):
        from_dict({"data": {"source": "fortunes"}})
    with pytest.raises(ConfigError, match="models text"):
        from_dict({"generator": {"name": "lstm"}})


def test_characters_counts_the_scored_tokens():
    x = torch.tensor([[1, 3, 4, 1, 0], [1, 3, 3, 3, 3]])  # closed after 2 characters; cut after 4
    assert characters(x).tolist() == [3, 4]


# A fake fortune folder: each category writes with its own three letters, so a style is learnable.
STYLES = {"aa": "abc", "bb": "def", "cc": "ghi", "dd": "jkl", "ee": "mno", "ff": "pqr", "held1": "aei", "held2": "mqz"}


@pytest.fixture
def styles_dir(tmp_path):
    g = torch.Generator().manual_seed(0)
    for name, letters in STYLES.items():
        texts = ["".join(letters[int(i)] for i in torch.randint(0, 3, (int(n),), generator=g))
                 for n in torch.randint(4, 12, (20,), generator=g)]
        (tmp_path / name).write_text("\n%\n".join(texts) + "\n%\n")
    (tmp_path / "literature").write_text("x\n%\n")  # so the folder passes for the fortunes package
    (tmp_path / "tang300").write_text("《题》\n作者：某\n一\n%\n")
    (tmp_path / "song100").write_text("")
    return tmp_path


def text_config(styles_dir, learner: dict, steps: int = 150):
    return from_dict({
        "data": {"source": "fortunes", "data_dir": str(styles_dir), "max_len": 16, "min_entries": 15},
        "split": {"test_groups": ["held1", "held2"]},
        "generator": {"name": "lstm", "embed_dim": 16, "hidden": 32},
        "learner": learner,
        "train": {"steps": steps, "meta_batch": 8, "shots": [1, 5], "queries": 5, "lr": 3e-3, "log_every": 50,
                  "ckpt_every": 1000},
    })


def test_text_runs_record_their_vocabulary(styles_dir, tmp_path):
    config = text_config(styles_dir, {"name": "unconditional"}, steps=2)
    splits = load_splits(config.data, config.split)
    assert sorted(splits.test_groups) == ["held1", "held2"] and splits.background.example_shape == (16,)
    chars = set(splits.vocab.chars)
    assert set("abcdefghijklmnopqr") <= chars and "z" not in chars  # only held2 writes 'z'
    assert "x" in chars  # from a background category too small to train on
    z = next(i for i, n in enumerate(splits.held_out.names) if n == "held2")
    held2 = splits.vocab.decode(splits.held_out.examples[z])
    assert any("\ufffd" in t for t in held2)  # 'z' is not in the vocabulary
    resolved, _, _ = prepare(config)
    assert resolved.data.vocab == splits.vocab.chars and resolved.generator.vocab_size == len(splits.vocab)
    again = load_splits(resolved.data, resolved.split)  # a checkpoint's config encodes exactly the same ids
    assert all(torch.equal(a, b) for a, b in zip(again.held_out.examples, splits.held_out.examples, strict=True))
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 2


def test_adaptation_lowers_held_out_perplexity(styles_dir):
    from metagen.data import EpisodeSampler, fixed_tasks
    from metagen.meta.base import GeneratorAdapted
    from metagen.train import Trainer

    torch.manual_seed(0)
    for learner in ({"name": "context", "context_dim": 8, "hidden": 32, "channels": 16},
                    {"name": "finetune", "finetune_steps": 30, "finetune_lr": 3e-3}):
        config, splits, model = prepare(text_config(styles_dir, learner))
        Trainer(config, model, EpisodeSampler(splits.background, seed=0), progress=False).fit()
        tasks = fixed_tasks(splits.held_out, 5, 10, seed=0)
        model.eval()
        with torch.no_grad():
            for t in range(len(tasks)):
                other = tasks.support[1 - t]
                own = -model.adapt(tasks.support[t]).log_prob(tasks.query[t]).sum()
                wrong = -model.adapt(other).log_prob(tasks.query[t]).sum()
                assert own < wrong, (learner["name"], t)  # its own support helps more than another concept's
                if learner["name"] == "finetune":  # and more than no adaptation at all
                    assert own < -GeneratorAdapted(model.generator).log_prob(tasks.query[t]).sum()
                bits = (own / characters(tasks.query[t]).sum() / math.log(2)).item()
                assert 0 < bits < 20


def test_text_through_the_command_line(styles_dir, tmp_path, capsys):
    from metagen.cli import main

    run = str(tmp_path / "run")
    settings = [f"data.data_dir='{styles_dir}'", "data.max_len=16", "split.test_groups=['held1', 'held2']",
                "split.val_fraction=0", "train.val_every=0", "train.patience=0", "generator.hidden=16",
                "generator.embed_dim=8", "learner.channels=8", "learner.hidden=16", "learner.context_dim=4",
                "train.meta_batch=4"]
    tiny = [arg for s in settings for arg in ("--set", s)] + ["--quiet"]
    assert main(["train", "--config", "fortunes", "--out", run, "--steps", "3", *tiny]) == 0
    assert main(["eval", "--checkpoint", run, "--out", str(tmp_path / "eval"), "--shots", "0", "1", "5",
                 "--episodes", "3", "--quiet"]) == 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "bits/character" in report and "copy" not in report and "| 0-shot NLL |" in report
    assert "6 tasks" in report and "| method | held1 | held2 |" in report  # per-concept table, 3 tasks each
    samples = (tmp_path / "eval" / "samples_context.txt").read_text()
    assert samples.startswith("## task 0 (held1): support") and "## task 1 (held2): support" in samples
    assert "## task 2" not in samples  # one task per concept
    capsys.readouterr()

    support = tmp_path / "style.txt"
    support.write_text("abcab\n%\ncabba\n%\nbbca\n")
    assert main(["write", "--checkpoint", run, "--support", str(support), "--n", "3", "--prompt", "ab",
                 "--top-k", "3", "--temperature", "0.7"]) == 0
    texts = capsys.readouterr().out.strip().split("\n%\n")
    assert len(texts) == 3 and all(t.startswith("ab") for t in texts)

    long = tmp_path / "long.txt"
    long.write_text("a" * 40)
    assert main(["write", "--checkpoint", run, "--support", str(long)]) == 2
    assert "split it into entries" in capsys.readouterr().err
    assert main(["write", "--checkpoint", run, "--support", str(support), "--temperature", "0"]) == 2
    assert main(["adapt", "--checkpoint", run, "--support", str(support)]) == 2
    assert "metagen write" in capsys.readouterr().err
