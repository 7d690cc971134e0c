"""Retrieve and refine (learner 'refine'): its bank of training typefaces, retrieval as the fonts bench's
baseline does it, the exclusion of the task's own family in training, and a tiny train/reload/draw run.
Uses the faces bundled with matplotlib, like tests/data/test_fonts.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_fonts import MPL_FONTS, _pairs, fonts_config

from metagen.config import from_dict
from metagen.data import load_splits
from metagen.data.fonts import LATIN, FontData, load_fonts
from metagen.errors import ConfigError, DataError
from metagen.meta import build_learner

REFINE = {"name": "refine", "context_dim": 16, "channels": 8, "hidden": 32, "kl_weight": 0.01, "neighbours": 2}


@pytest.fixture(scope="module")
def fonts() -> FontData:
    return load_fonts([MPL_FONTS], list(LATIN.scripts), 28, progress=False)


@pytest.fixture(scope="module")
def fitted():
    """A refine learner with its bank of the background faces, and the splits."""
    cfg = from_dict(fonts_config(learner=REFINE))
    s = load_splits(cfg.data, cfg.split)
    torch.manual_seed(0)  # the untrained weights, so the tuning test does not ride on an initialisation's luck
    learner = build_learner(cfg, s.background.example_shape)
    learner.fit_data(cfg, s, None)
    return learner, s


def test_the_bank_holds_every_background_glyph_once_per_reference(fitted) -> None:
    learner, s = fitted
    bank = learner.bank()
    assert bank.shape[:2] == learner.has_glyph.shape == (len(s.background), len(learner.class_refs))
    assert set(bank.unique().tolist()) <= {0, 1}
    for f in (0, len(s.background) - 1):
        ex = s.background.examples[f]
        cls = learner.classes_of(ex[:, 1].float())
        assert (cls >= 0).all() and learner.has_glyph[f, cls].all()
        # a face's glyph of each class is one of its glyphs with that reference (homoglyphs share a class)
        for glyph, c in zip(ex[:, 0], cls.tolist(), strict=True):
            same = ex[cls == c, 0]
            assert any(torch.equal(bank[f, c], g) for g in same)
            assert torch.equal(bank[f, c], glyph) or len(same) > 1
    assert learner.family.max() + 1 == len(set(s.background.groups))


def test_it_retrieves_what_the_retrieval_baseline_retrieves(fitted, fonts: FontData) -> None:
    from metagen.fontbench import Retrieval

    learner, s = fitted
    baseline = Retrieval(s)
    hidden = s.held_out_chars[0]
    for face in s.held_out.names[:6]:
        chars = "".join(c for c in "HOWag5" if c in fonts.chars[fonts.concepts.names.index(face)])
        support = _pairs(fonts, face, chars)
        faces = learner.nearest(support)
        assert faces[0].item() == baseline.nearest(support, chars)
        assert faces[1].item() != faces[0].item() and faces[1].item() >= 0
        targets = "Zz" + hidden
        refs = _pairs(fonts, face, targets)[:, 1]
        expected = baseline.draw(support, chars, refs, targets)
        assert torch.equal(learner.retrieved(refs, faces)[:, 0], expected)  # held-out char: the reference


def test_training_leaves_out_the_tasks_own_family(fitted, fonts: FontData) -> None:
    learner, s = fitted
    face = "DejaVu Sans Mono Bold"
    support = _pairs(fonts, face, "HOWa")
    own = s.background.names.index(face)
    assert learner.nearest(support)[0].item() == own
    family = s.background.groups[own]
    for f in learner.nearest(support, exclude_exact=True).tolist():
        assert f >= 0 and s.background.groups[f] != family


def test_content_that_is_no_reference_glyph_stands_for_itself(fitted, fonts: FontData) -> None:
    learner, _ = fitted
    blob = torch.zeros(1, 28, 28)
    blob[0, 5:20, 8:12] = 1
    faces = learner.nearest(_pairs(fonts, "DejaVu Sans Bold", "HO"))
    assert torch.equal(learner.retrieved(blob, faces)[0], blob.expand(2, -1, -1))
    assert (learner.nearest(torch.stack([torch.stack([blob[0], blob[0]])])) == -1).all()


def test_an_untrained_model_says_to_train_it_and_other_generators_are_refused() -> None:
    cfg = from_dict(fonts_config(learner=REFINE))
    learner = build_learner(cfg, (2, 28, 28))
    with pytest.raises(DataError, match="no typeface bank.*metagen train"):
        learner.adapt(torch.zeros(2, 2, 28, 28))
    with pytest.raises(ConfigError, match="'fontgen' only"):
        from_dict({"generator": {"name": "vae"}, "learner": REFINE})
    with pytest.raises(ConfigError, match="data.source = 'fonts'"):
        from types import SimpleNamespace

        learner.fit_data(cfg, SimpleNamespace(fonts=None), None)


def _trained_and_untrained(run: Path, learner_cfg: dict):
    """A refine learner trained 40 steps into `run` and loaded back, and an untrained one with the same bank."""
    from metagen.checkpoint import load_learner
    from metagen.train import train

    torch.manual_seed(0)
    cfg = from_dict(fonts_config(learner=learner_cfg, train={"steps": 40, "ckpt_every": 20, "log_every": 20}))
    train(cfg, run, progress=False)
    learner, _ = load_learner(run, verbose=False)
    untrained = build_learner(cfg, (2, 28, 28))
    untrained.fit_data(cfg, load_splits(cfg.data, cfg.split), None)
    return learner, untrained


def test_it_trains_reloads_with_its_bank_and_draws(tmp_path: Path, fonts: FontData,
                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    learner, untrained = _trained_and_untrained(run, REFINE)
    assert len(learner.family) > 0  # the bank came back with the weights
    support, targets = _pairs(fonts, "DejaVu Serif Bold", "HOWa"), _pairs(fonts, "DejaVu Serif Bold", "bcxyz")
    with torch.no_grad():
        adapted = learner.adapt(support)
        x = adapted.sample(5, content=targets[:, 1:])
        lp = adapted.log_prob(targets)
        before = untrained.adapt(support).log_prob(targets)
    assert lp.mean() > before.mean() + 100, (lp.mean(), before.mean())  # nats per glyph, of ~500 at the start
    assert x.shape == (5, 2, 28, 28) and torch.equal(x[:, 1], targets[:, 1])
    assert x.min() >= 0 and x.max() <= 1
    assert lp.shape == (5,) and torch.isfinite(lp).all() and (lp <= 0).all()
    with pytest.raises(DataError, match=r"content must be reference glyphs \[n, 1, H, W\]"):
        adapted.sample(2, content=targets[:2])

    # the font command, with an adaptation setting; a setting the learner lacks is one line, exit 2
    from test_fonts import _glyph_png

    from metagen.cli import main

    glyphs = [str(_glyph_png(tmp_path / f"{c}.png", c)) for c in "HOam"]
    out = tmp_path / "sheet.png"
    assert main(["font", "--checkpoint", str(run), "--support", *glyphs, "--chars", "Hello", "--out", str(out),
                 "--set", "learner.select=2"]) == 0 and out.is_file()
    capsys.readouterr()
    assert main(["font", "--checkpoint", str(run), "--support", *glyphs, "--out", str(out),
                 "--set", "learner.finetune_steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metagen: error: ") and "\n" not in err and "finetune_steps" in err


def test_part_attention_trains_reloads_and_reads_the_support_as_a_set(tmp_path: Path, fonts: FontData) -> None:
    """parts > 0: the decoder attends over the support glyphs' parts; it learns to use them, comes back from
    the checkpoint, and the support's order does not matter."""
    learner, untrained = _trained_and_untrained(tmp_path / "run", {**REFINE, "parts": 16})
    assert learner.generator.attn.out.weight.abs().sum() > 0  # the read-out left zero: the parts are used
    support, targets = _pairs(fonts, "DejaVu Serif Bold", "HOWa"), _pairs(fonts, "DejaVu Serif Bold", "bcxyz")
    with torch.no_grad():
        adapted = learner.adapt(support)
        x = adapted.sample(5, content=targets[:, 1:])
        shuffled = learner.adapt(support[[2, 0, 3, 1]]).sample(5, content=targets[:, 1:])
        lp, before = adapted.log_prob(targets), untrained.adapt(support).log_prob(targets)
    assert adapted.memory.shape == (4 * 7 * 7, 16)  # a token per support glyph and H/4 x W/4 position
    assert torch.allclose(x, shuffled, atol=1e-5)
    assert lp.mean() > before.mean() + 100, (lp.mean(), before.mean())
    with pytest.raises(ConfigError, match="learner.parts = 2"):
        build_learner(from_dict(fonts_config(learner={**REFINE, "parts": 2})), (2, 28, 28))


def test_selection_draws_real_glyphs_of_the_candidate_faces(fitted, fonts: FontData) -> None:
    """select = 1 is the retrieval baseline; more candidates give, per character, one of their glyphs;
    characters no candidate has get the decoder's glyph."""
    from metagen.fontbench import Retrieval

    learner, s = fitted
    learner.eval()
    face = s.held_out.names[0]
    support = _pairs(fonts, face, "HOWa")
    hidden = s.held_out_chars[0]
    targets = "".join(c for c in "bcexzk" if c not in s.held_out_chars) + hidden
    refs = _pairs(fonts, face, targets)[:, 1]
    expected = Retrieval(s).draw(support, "HOWa", refs, targets)
    learner.cfg = learner.cfg.model_copy(update={"select": 1})
    with torch.no_grad():
        one = learner.adapt(support).sample(len(targets), content=refs[:, None])[:, 0]
        learner.cfg = learner.cfg.model_copy(update={"select": 0})
        drawn = learner.adapt(support).sample(len(targets), content=refs[:, None])[:, 0]
        learner.cfg = learner.cfg.model_copy(update={"select": 4})
        adapted = learner.adapt(support)
        four = adapted.sample(len(targets), content=refs[:, None])[:, 0]
    assert torch.equal(one[:-1], expected[:-1]) and torch.equal(one[-1], drawn[-1])
    options = learner.retrieved(refs, adapted.candidates)  # [N, 4, H, W]
    assert len(set(adapted.candidates.tolist())) == 4
    for i in range(len(targets) - 1):
        assert any(torch.equal(four[i], o) for o in options[i])
        with torch.no_grad():  # the likeliest of them under the adapted model's own log_prob
            every = adapted.log_prob(torch.stack([options[i], refs[i].float().expand_as(options[i])], 1))
            mine = adapted.log_prob(torch.stack([four[i], refs[i].float()])[None])
        assert mine.item() == pytest.approx(every.max().item(), abs=1e-3)
    assert torch.equal(four[-1], drawn[-1])
    learner.cfg = learner.cfg.model_copy(update={"select": 0})


def test_face_selection_draws_one_candidate_face_the_likeliest_in_all(fitted, fonts: FontData) -> None:
    """select_by = face: every character from the top-ranked candidate face, ranked by the mean likelihood of
    their glyphs of the characters all candidates draw (checked against the adapted model's own log_prob)."""
    learner, s = fitted
    learner.eval()
    face = s.held_out.names[1]
    support = _pairs(fonts, face, "HOWa")
    targets = "".join(c for c in "bcexzk" if c not in s.held_out_chars)
    refs = _pairs(fonts, face, targets)[:, 1]
    learner.cfg = learner.cfg.model_copy(update={"select": 3, "select_by": "face"})
    try:
        with torch.no_grad():
            adapted = learner.adapt(support)
            drawn = adapted.sample(len(targets), content=refs[:, None])[:, 0]
            ranking = adapted.face_ranking()
            cands = adapted.candidates
            shared = learner.has_glyph[cands].all(0)
            scores = [adapted.log_prob(torch.stack([learner.bank()[f, shared].float(),
                                                    learner.class_refs[shared].float()], 1)).mean().item()
                      for f in cands.tolist()]
    finally:
        learner.cfg = learner.cfg.model_copy(update={"select": 0, "select_by": "char"})
    assert sorted(ranking.tolist()) == [0, 1, 2]
    assert ranking.tolist() == sorted(range(3), key=lambda j: -scores[j])
    top = cands[ranking[0]].item()
    options = learner.retrieved(refs, cands[ranking[:1]])[:, 0]
    assert learner.has_glyph[top, learner.classes_of(refs.float())].all()
    assert torch.equal(drawn, options)  # the whole alphabet is the one face's


def test_bench_methods_take_adaptation_settings_and_refuse_others() -> None:
    from metagen.bench import BenchMethod

    assert BenchMethod(checkpoint="run", adapt=["learner.select=8"]).adapt == ["learner.select=8"]
    with pytest.raises(ValueError, match="only change adaptation settings"):
        BenchMethod(checkpoint="run", adapt=["learner.context_dim=8"])


def test_tuning_the_code_raises_the_supports_likelihood_and_leaves_the_weights(fitted, fonts: FontData) -> None:
    learner, s = fitted
    support = _pairs(fonts, s.held_out.names[0], "HOWa")
    weights = {k: v.clone() for k, v in learner.state_dict().items()}
    with torch.no_grad():
        before = learner.adapt(support).log_prob(support).mean()
        learner.cfg = learner.cfg.model_copy(update={"tune_steps": 20, "tune_lr": 0.05})
        after = learner.adapt(support).log_prob(support).mean()
    learner.cfg = learner.cfg.model_copy(update={"tune_steps": 0})
    assert after > before + 1.0, (before, after)
    assert all(torch.equal(v, learner.state_dict()[k]) for k, v in weights.items())


def test_bench_methods_that_differ_in_adaptation_share_one_training_run(tmp_path: Path) -> None:
    from metagen.fontbench import run_font_bench

    cfg = fonts_config(learner=REFINE, train={"steps": 6, "ckpt_every": 6, "log_every": 6})
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    (tmp_path / "tiny.toml").write_text("\n".join(lines) + "\n")
    raw = {"kind": "fonts", "shots": [2], "classifier_steps": 5, "fid_intervals": False, "sheet_faces": 0,
           "max_faces": 3, "binarize": True,
           "methods": {"drawn": {"config": str(tmp_path / "tiny.toml")},
                       "selected": {"config": str(tmp_path / "tiny.toml"), "adapt": ["learner.select=2"]}}}
    report = run_font_bench("tiny", raw, tmp_path / "bench", tmp_path / "runs", quiet=True, progress=False)
    assert {"drawn", "selected"} <= set(report["methods"])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tiny-drawn"]  # trained once
    drawn, selected = (report["methods"][m]["seen"]["2"]["l1"]["mean"] for m in ("drawn", "selected"))
    assert drawn != selected  # the setting reached the second method only


def _toml(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)
