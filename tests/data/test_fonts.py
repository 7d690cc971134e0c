"""Fonts: rendering and caching, splits by family and by character, the content/style model, the retrieval
baseline, the fonts bench and the `font` / `stylize` commands. Uses the faces bundled with matplotlib (DejaVu,
STIX, Computer Modern: 21 usable faces in 8 families), so no font package is needed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metagen.config import from_dict, load_config
from metagen.data import load_splits
from metagen.data.fonts import LATIN, SCRIPTS, FontData, held_out_characters, load_fonts, reference_path, render_face
from metagen.errors import ConfigError, DataError
from metagen.generators.base import build_generator

MPL_FONTS = str(reference_path().parent)
TEST_FAMILIES = ["DejaVu Serif", "cmr10", "cmtt10"]


def fonts_config(**over: dict) -> dict:
    cfg = {
        "data": {"source": "fonts", "font_dirs": [MPL_FONTS], "image_size": 28, "held_out_chars": 4},
        "split": {"test_groups": TEST_FAMILIES, "val_fraction": 0.0},
        "generator": {"name": "fontgen", "channels": 8, "blocks": 1, "style_hidden": 32},
        "learner": {"name": "context", "context_dim": 16, "channels": 8, "hidden": 32, "kl_weight": 0.01},
        "train": {"steps": 250, "meta_batch": 4, "shots": [1, 4], "queries": 8, "log_every": 50, "ckpt_every": 125,
                  "lr": 3e-3},
        "eval": {"shots": [1, 2], "queries": 4},
    }
    for section, values in over.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


@pytest.fixture(scope="module")
def fonts() -> FontData:
    return load_fonts([MPL_FONTS], list(LATIN.scripts), 28, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from metagen.train import train

    run = tmp_path_factory.mktemp("fontrun") / "run"
    torch.manual_seed(0)
    train(from_dict(fonts_config()), run, progress=False)
    return run


def test_faces_render_on_a_common_baseline_with_the_reference_channel(fonts: FontData) -> None:
    assert len(fonts.concepts) == 21 and fonts.counts["duplicates"] >= 1  # DejaVu Sans itself is the reference
    assert "DejaVu Sans" not in fonts.concepts.names
    index = {c: i for i, c in enumerate(fonts.charset)}
    for e, chars in zip(fonts.concepts.examples, fonts.chars, strict=True):
        assert e.shape == (len(chars), 2, 28, 28) and e.dtype == torch.uint8 and set(e.unique().tolist()) <= {0, 1}
        assert chars.startswith(SCRIPTS["latin"] + SCRIPTS["digits"])  # every face has Latin and digits
        assert torch.equal(e[:, 1], fonts.reference[[index[c] for c in chars]])
        assert (e[:, 0].flatten(1).sum(1) > 0).all()
    # The baseline is shared: "x" and "H" end on the same row in every face (within a pixel).
    for e, chars in zip(fonts.concepts.examples, fonts.chars, strict=True):
        rows = [torch.nonzero(e[chars.index(c), 0].any(1)).max().item() for c in "xH"]
        assert abs(rows[0] - rows[1]) <= 1
    # Computer Modern has no Greek or Cyrillic: those faces keep only Latin and digits.
    assert {len(c) for n, c in zip(fonts.concepts.names, fonts.chars, strict=True) if n.startswith("cm")} == {62}


def test_the_cache_returns_what_was_rendered(fonts: FontData) -> None:
    again = load_fonts([MPL_FONTS], list(LATIN.scripts), 28, progress=False)
    assert again.concepts.names == fonts.concepts.names and again.chars == fonts.chars
    assert all(torch.equal(a, b) for a, b in zip(again.concepts.examples, fonts.concepts.examples, strict=True))


def test_a_bold_face_has_more_ink_than_its_regular() -> None:
    bold = render_face(reference_path().parent / "DejaVuSans-Bold.ttf", "ABCabc", 28).sum()
    regular = render_face(reference_path(), "ABCabc", 28).sum()
    assert bold > 1.2 * regular


def test_missing_fonts_say_to_run_setup_fonts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make setup-fonts"):
        load_fonts([str(tmp_path)], list(LATIN.scripts), 28, progress=False)
    with pytest.raises(DataError, match="must include latin"):
        load_fonts([MPL_FONTS], ["greek", "digits"], 28, progress=False)


def test_splits_hold_out_whole_families_and_characters() -> None:
    cfg = from_dict(fonts_config())
    s = load_splits(cfg.data, cfg.split)
    assert s.test_groups == sorted(TEST_FAMILIES)
    assert not set(s.background.groups) & set(s.held_out.groups)
    assert set(s.held_out.groups) == set(TEST_FAMILIES) and len(s.background) + len(s.held_out) == 21
    chosen = held_out_characters(4, 0)
    assert len(chosen) == 4 and set(chosen) <= set(s.held_out_chars)  # with their homoglyphs (B, Β, В)
    fonts = s.fonts
    index = {c: i for i, c in enumerate(fonts.charset)}
    hidden = fonts.reference[[index[c] for c in s.held_out_chars]]  # [4, H, W]
    for e in s.background.examples:  # no training glyph is one of the held-out characters
        assert not any(torch.equal(r, h) for r in e[:, 1] for h in hidden)
    for e in s.held_out.examples:  # held-out faces keep them, for the unseen-content scores
        assert sum(torch.equal(r, h) for r in e[:, 1] for h in hidden) >= 4


@pytest.mark.parametrize("modulate", ["blocks", "all"])
def test_fontgen_likelihood_is_the_bernoulli_of_its_logits(modulate: str) -> None:
    cfg = from_dict(fonts_config(generator={"modulate": modulate}))
    gen = build_generator(cfg.generator, (2, 28, 28), cond_dim=16)
    x = torch.rand(3, 2, 28, 28).round()
    cond = torch.randn(3, 16)
    logits = gen.logits(x[:, 1:], cond)
    p = torch.sigmoid(logits)
    by_hand = (x[:, :1] * p.log() + (1 - x[:, :1]) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(gen.log_prob(x, cond), by_hand, atol=1e-3)
    assert math.isclose(gen.loss(x, cond).item(), -by_hand.mean().item(), rel_tol=1e-4)
    out = gen.sample(3, cond, content=x[:, 1:])
    assert out.shape == (3, 2, 28, 28) and torch.equal(out[:, 1], x[:, 1])
    assert torch.allclose(out[:, :1], p, atol=1e-6)
    other = gen.sample(3, torch.randn(3, 16), content=x[:, 1:])  # another style, the same characters
    assert (other[:, 0] - out[:, 0]).abs().mean() > 1e-4
    with pytest.raises(DataError, match="content="):
        gen.sample(3, cond)
    with pytest.raises(DataError, match=r"content must be \[3, 1, 28, 28\]"):
        gen.sample(3, cond, content=torch.zeros(2, 1, 28, 28))


def test_fontgen_memory_starts_silent_then_reads_its_tokens_as_a_set() -> None:
    cfg = from_dict(fonts_config())
    torch.manual_seed(0)
    gen = build_generator(cfg.generator, (2, 28, 28), cond_dim=16, memory_dim=6)
    x, cond = torch.rand(3, 2, 28, 28).round(), torch.randn(3, 16)
    mem_a, mem_b = torch.randn(10, 6), torch.randn(10, 6)
    # zero-initialised read-out: the model starts as the one without a memory
    assert torch.equal(gen.log_prob(x, cond, mem_a), gen.log_prob(x, cond, mem_b))
    with torch.no_grad():
        gen.attn.out.weight.normal_()
    lp = gen.log_prob(x, cond, mem_a)
    assert (lp - gen.log_prob(x, cond, mem_b)).abs().max() > 1e-3
    assert torch.allclose(lp, gen.log_prob(x, cond, mem_a[torch.randperm(10)]), atol=1e-4)  # order-free
    per_example = mem_a.expand(3, -1, -1)
    assert torch.allclose(gen.sample(3, cond, per_example, content=x[:, 1:]),
                          gen.sample(3, cond, mem_a, content=x[:, 1:]), atol=1e-6)
    with pytest.raises(ValueError, match="memory must be"):
        gen.log_prob(x, cond, torch.randn(10, 5))


def test_fontgen_adversarial_term_reaches_each_player_only_through_its_own_loss() -> None:
    cfg = from_dict(fonts_config(generator={"adv_weight": 0.5}))
    gen = build_generator(cfg.generator, (2, 28, 28), cond_dim=16)
    x = torch.rand(4, 2, 28, 28).round()
    gen.loss(x, torch.randn(4, 16)).backward()
    assert all(p.grad is not None for p in gen.disc.parameters())
    assert all(p.grad is not None for p in gen.decoder.parameters())


def test_fontgen_needs_glyph_pairs_from_fonts_data() -> None:
    with pytest.raises(ConfigError, match="needs data.source = 'fonts'"):
        from_dict({**fonts_config(), "data": {"source": "glyphs"}})
    cfg = from_dict(fonts_config())
    with pytest.raises(ConfigError, match="glyph pairs"):
        build_generator(cfg.generator, (1, 28, 28))


def test_every_fonts_preset_builds() -> None:
    from metagen.config import presets

    names = [n for n in presets() if n.startswith("fonts")]
    assert {"fonts", "fonts-finetune", "fonts-hyper", "fonts-refine"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.data.source == "fonts" and cfg.generator.name == "fontgen", name


@pytest.mark.parametrize("name", ["fonts", "fonts-cjk"])
def test_the_packaged_fonts_bench_presets_validate(name: str) -> None:
    from metagen.bench import load_preset, method_config
    from metagen.config import read_toml
    from metagen.fontbench import load_font_preset

    p = load_font_preset(read_toml(name, "metagen.configs.bench")[1], name)
    assert p.shots == [1, 4, 8] and p.methods
    configs = [method_config(m, 0, "cpu") for m in p.methods.values()]
    assert all(c.data == configs[0].data and c.split == configs[0].split for c in configs)
    with pytest.raises(ConfigError, match="fonts bench"):
        load_preset(name)


def test_bench_targets_can_be_capped_per_face_without_touching_the_support_half() -> None:
    from metagen.fontbench import font_tasks, load_font_preset

    cfg = from_dict(fonts_config())
    s = load_splits(cfg.data, cfg.split)
    raw = {"kind": "fonts", "shots": [1, 4], "episodes": 2}
    full, half_a = font_tasks(s, load_font_preset(raw, "t"))
    capped, half_a2 = font_tasks(s, load_font_preset({**raw, "max_targets": 5}, "t"))
    assert half_a == half_a2 and [t.support for t in full] == [t.support for t in capped]
    for f, c in zip(full, capped, strict=True):
        assert len(c.seen) == 5 < len(f.seen) and set(c.seen) <= set(f.seen) and c.unseen == f.unseen
    assert capped[0].seen == capped[1].seen  # one face's episodes share its targets


def _pairs(fonts: FontData, face: str, chars: str) -> torch.Tensor:
    i = fonts.concepts.names.index(face)
    return fonts.concepts.examples[i][[fonts.chars[i].index(c) for c in chars]].float()


def test_content_and_style_swap(trained: Path, fonts: FontData) -> None:
    """Same content + two styles: the glyphs differ like the styles do; same style + two contents: they
    differ by character, each closer to its own true glyph than to the other's."""
    from metagen.checkpoint import load_learner

    learner, _ = load_learner(trained, verbose=False)
    bold, light = "DejaVu Sans Bold", "DejaVu Sans Mono Oblique"  # training faces far apart in weight
    support = {f: _pairs(fonts, f, "HOWMmw") for f in (bold, light)}
    targets = "ABEKRT"
    with torch.no_grad():
        out = {f: learner.adapt(support[f]).sample(len(targets), content=_pairs(fonts, f, targets)[:, 1:])[:, 0]
               for f in (bold, light)}
    # style: the bold support draws more ink than the light one, for the same characters (true glyphs: 1.9x;
    # 250 steps learn 1.75x, 150 steps only 1.1x)
    assert out[bold].sum() > 1.3 * out[light].sum()
    # content: each generated glyph is nearer its own character's true glyph than the next character's
    true = _pairs(fonts, bold, targets)[:, 0]
    own = (out[bold] - true).abs().flatten(1).mean(1)
    other = (out[bold] - true.roll(1, 0)).abs().flatten(1).mean(1)
    assert (own < other).float().mean() >= 5 / 6


def test_retrieval_finds_the_nearest_training_face_and_falls_back_to_the_reference(fonts: FontData) -> None:
    from metagen.fontbench import Retrieval

    cfg = from_dict(fonts_config())
    s = load_splits(cfg.data, cfg.split)
    r = Retrieval(s)
    for face in ["DejaVu Sans Mono Bold", "STIXGeneral Italic", "DejaVu Sans Oblique"]:
        support = _pairs(fonts, face, "HOWa")
        noisy = support.clone()
        noisy[:, 0] = (noisy[:, 0] + (torch.rand_like(noisy[:, 0]) < 0.03).float()) % 2  # flip 3% of pixels
        assert s.background.names[r.nearest(noisy, "HOWa")] == face
    hidden = s.held_out_chars[0]
    refs = _pairs(fonts, "DejaVu Sans Mono Bold", "Zz" + hidden)[:, 1]
    drawn = r.draw(_pairs(fonts, "DejaVu Sans Mono Bold", "HOWa"), "HOWa", refs, "Zz" + hidden)
    assert torch.equal(drawn[:2], _pairs(fonts, "DejaVu Sans Mono Bold", "Zz")[:, 0])
    assert torch.equal(drawn[2], refs[2].float())  # no training face shows the held-out character


def test_the_oracles_draw_the_training_face_and_glyphs_nearest_to_the_true_targets(fonts: FontData) -> None:
    from metagen.fontbench import NearestGlyphsToTruth, NearestToTruth

    cfg = from_dict(fonts_config())
    s = load_splits(cfg.data, cfg.split)
    oracle = NearestToTruth(s)
    hidden = s.held_out_chars[0]
    for face in ["DejaVu Sans Mono Bold", "STIXGeneral Italic"]:
        pairs = _pairs(fonts, face, "Zz7" + hidden)
        true = pairs[:, 0].clone()
        true[:3] = (true[:3] + (torch.rand_like(true[:3]) < 0.03).float()) % 2  # the truth: near that face
        drawn = oracle.draw_truth(true, pairs[:, 1], "Zz7" + hidden)
        assert torch.equal(drawn[:3], pairs[:3, 0].float())  # its glyphs, not the noisy truth
        assert torch.equal(drawn[3], pairs[3, 1].float())  # the held-out character: the reference glyph
    # per character: each target from its own nearest face
    mono, italic = _pairs(fonts, "DejaVu Sans Mono Bold", "Zz"), _pairs(fonts, "STIXGeneral Italic", "Zz")
    true = torch.stack([mono[0, 0], italic[1, 0]])
    drawn = NearestGlyphsToTruth(s).draw_truth(true, mono[:, 1], "Zz")
    assert torch.equal(drawn, true.float())


def test_font_bench_scores_every_method(trained: Path, tmp_path: Path) -> None:
    from metagen.fontbench import run_font_bench

    raw = {"kind": "fonts", "shots": [1, 3], "classifier_steps": 30, "sheet_faces": 2,
           "methods": {"context": {"checkpoint": str(trained)}}}
    report = run_font_bench("fonts-test", raw, tmp_path / "bench", tmp_path / "runs", quiet=True, progress=False)
    oracles = {"oracle: nearest face to the truth", "oracle: nearest training glyph to the truth"}
    assert set(report["methods"]) == {"copy reference", "retrieval", "context"} | oracles
    assert report["held_out_faces"] == 6 and report["tasks"] == 6
    copy = report["methods"]["copy reference"]["seen"]["3"]
    assert copy["l1"]["mean"] > 0 and 0 < copy["ssim"]["mean"] < 1
    for m in report["methods"].values():
        for split in ("seen", "unseen"):
            for cell in m.get(split, {}).values():
                assert all(0 <= cell[k]["mean"] <= 1 for k in ("l1", "content", "style"))
                assert cell["fid"]["mean"] >= 0
    assert 0 <= report["true"]["seen"]["style"]["mean"] <= 1
    md = (tmp_path / "bench" / "report.md").read_text()
    assert "| retrieval | 3 |" in md and "Unseen characters" in md
    # paired differences against retrieval: their mean is the difference of the two methods' means
    paired = report["vs_retrieval"]["context"]["seen"]["3"]["l1"]
    ours, theirs = report["methods"]["context"]["seen"]["3"]["l1"], report["methods"]["retrieval"]["seen"]["3"]["l1"]
    assert paired["mean"] == pytest.approx(ours["mean"] - theirs["mean"], abs=1e-9)
    assert len(report["methods"]["context"]["seen"]["3"]["per_task"]["l1"]) == 6
    fids = [report["methods"][m]["seen"]["3"]["fid"]["mean"] for m in ("context", "retrieval")]
    paired_fid = report["vs_retrieval"]["context"]["seen"]["3"]["fid"]
    assert paired_fid["mean"] == pytest.approx(fids[0] - fids[1], rel=1e-6, abs=1e-6)
    assert paired_fid["lo"] <= paired_fid["hi"] and paired_fid["ci95"] >= 0
    assert set(report["vs_retrieval"]) == {"context", "true glyphs"} | oracles and "Paired against retrieval" in md
    # the true glyphs, paired on the classifiers' metrics only
    true_vs = report["vs_retrieval"]["true glyphs"]["seen"]["3"]
    assert set(true_vs) == {"content", "style"}
    assert true_vs["style"]["mean"] == pytest.approx(
        report["true"]["seen"]["style"]["mean"] - report["methods"]["retrieval"]["seen"]["3"]["style"]["mean"],
        abs=1e-9)
    assert "| true glyphs | seen | 3 | – | – | – | – |" in md
    assert all(set(report["methods"][o]) == {"seen"} for o in oracles)  # no training face draws unseen ones
    assert len(report["sheets"]) == 2 and all((tmp_path / "bench" / p).is_file() for p in report["sheets"])


def test_a_baselines_only_bench_uses_the_data_of_the_presets_methods(trained: Path, tmp_path: Path) -> None:
    from metagen.fontbench import run_font_bench

    raw = {"kind": "fonts", "shots": [1], "classifier_steps": 5, "sheet_faces": 0,
           "methods": {"context": {"checkpoint": str(trained)}}}
    report = run_font_bench("fonts-test", raw, tmp_path / "bench", tmp_path / "runs", quiet=True, progress=False,
                            methods=["retrieval", "copy reference"])
    assert set(report["methods"]) == {"copy reference", "retrieval", "oracle: nearest face to the truth",
                                      "oracle: nearest training glyph to the truth"}
    assert report["held_out_faces"] == 6 and report["held_out_families"] == sorted(TEST_FAMILIES)


def _glyph_png(path: Path, char: str, font: str = "DejaVuSerif-Bold.ttf", size: int = 90) -> Path:
    g = render_face(reference_path().parent / font, char, size)[0]
    Image.fromarray(((1 - g) * 255).astype(np.uint8)).save(path)  # dark ink on white, 90 px
    return path


def test_font_and_stylize_commands(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metagen.cli import main

    support = [str(_glyph_png(tmp_path / f"{c}.png", c)) for c in "HOam"]
    assert main(["font", "--checkpoint", str(trained), "--support", *support, "--chars", "Hello",
                 "--out", str(tmp_path / "sheet.png"), "--each", str(tmp_path / "each")]) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] > 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["U+0048.png", "U+0065.png", "U+006C.png",
                                                                     "U+006F.png"]
    assert main(["stylize", "--checkpoint", str(trained), "--content", str(tmp_path / "each" / "U+0048.png"),
                 "--style", *support, "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    capsys.readouterr()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for extra, message in ((["--support", str(tmp_path / "bad.png")], "cannot tell which character"),
                           (["--support", str(tmp_path / "bad.png"), "--support-chars", "B"], "cannot read image"),
                           (["--support", str(tmp_path / "sheet.png")], "cannot tell which character"),
                           (["--support", support[0], "--support-chars", "HO"], "one per file"),
                           (["--support", support[0], "--chars", "中"], "no glyph")):
        assert main(["font", "--checkpoint", str(trained), "--out", str(tmp_path / "x.png"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("metagen: error: ") and "\n" not in err and message in err, err
    assert main(["font", "--checkpoint", str(trained.parent), "--support", support[0]]) == 2  # not a run


def test_user_glyphs_land_in_the_reference_box() -> None:
    from metagen.typeset import place_like, reference_glyphs

    ref = reference_glyphs("g", 28)[0].numpy()
    big = render_face(reference_path(), "g", 200)[0].astype(np.float32)
    placed = place_like(big, ref)
    rows, cols = np.nonzero(placed)
    rrows, rcols = np.nonzero(ref)
    assert abs(rows.min() - rrows.min()) <= 1 and abs(rows.max() - rrows.max()) <= 1
    assert abs(cols.mean() - rcols.mean()) <= 1.5
    assert F.l1_loss(torch.from_numpy(placed).float(), torch.from_numpy(ref).float()) < 0.05
    with pytest.raises(DataError, match="no glyph"):
        reference_glyphs("中", 28)


def test_eval_scores_glyphs_given_their_reference(trained: Path, tmp_path: Path) -> None:
    import json

    from metagen.cli import main

    assert main(["eval", "--checkpoint", str(trained), "--out", str(tmp_path / "eval"), "--shots", "1", "3"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["unit"].startswith("nats/glyph") and list(report["methods"]) == ["context"]  # no copy baseline
    nll = report["methods"]["context"]["nll"]
    assert all(math.isfinite(nll[k]["nll"]) and 0 < nll[k]["nll"] < 28 * 28 * math.log(2) for k in ("1", "3"))
    assert Image.open(tmp_path / "eval" / report["methods"]["context"]["samples_png"]).size[0] > 0


def test_the_bench_can_score_the_most_likely_glyph(trained: Path, fonts: FontData) -> None:
    from metagen.checkpoint import load_learner
    from metagen.fontbench import Learned

    learner, _ = load_learner(trained, verbose=False)
    support, refs = _pairs(fonts, "DejaVu Sans Bold", "HOW"), _pairs(fonts, "DejaVu Sans Bold", "ab")[:, 1]
    soft = Learned("soft", learner).draw(support, "HOW", refs, "ab")
    hard = Learned("hard", learner, binarize=True).draw(support, "HOW", refs, "ab")
    assert set(hard.unique().tolist()) <= {0.0, 1.0} and torch.equal(hard, (soft > 0.5).float())
    assert ((soft > 0) & (soft < 1)).any()


def test_few_system_fonts_say_how_to_get_the_rest(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    import metagen.data.fonts as fonts_module

    monkeypatch.setattr(fonts_module, "DEFAULT_DIRS", (MPL_FONTS,))
    assert len(fonts_module.load_fonts(None, list(LATIN.scripts), 28, progress=False).concepts) == 21
    assert "make setup-fonts" in capsys.readouterr().err


def test_the_typeface_classifier_is_cached_by_its_faces_glyphs_steps_and_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import metagen.fontbench as fb

    cfg = from_dict(fonts_config())
    s = load_splits(cfg.data, cfg.split)  # from the usual cache, before it moves
    monkeypatch.setenv("METAGEN_CACHE_DIR", str(tmp_path))
    half_a = {f: list(range(0, len(s.held_out.examples[f]), 2)) for f in range(len(s.held_out))}
    net, label, acc = fb.typeface_classifier(s, half_a, 5, False, 0)
    fits = []
    real_fit = fb.fit_classifier
    monkeypatch.setattr(fb, "fit_classifier", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    again, label2, acc2 = fb.typeface_classifier(s, half_a, 5, False, 0)
    assert not fits and label2 == label and acc2 == pytest.approx(acc)
    x = s.held_out.examples[0][:4, :1].float()
    assert torch.equal(net(x), again(x))
    fb.typeface_classifier(s, half_a, 5, False, 1)  # another seed: trained anew
    half_b = {f: a[1:] for f, a in half_a.items()}  # other glyphs: trained anew
    fb.typeface_classifier(s, half_b, 5, False, 0)
    assert len(fits) == 2


def test_the_task_jackknife_of_a_mean_is_its_standard_error() -> None:
    from metagen.fontbench import task_jackknife

    x = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    half = task_jackknife(len(x), lambda idx: float(x[idx].mean()))
    assert half == pytest.approx(1.96 * float(x.std()) / len(x) ** 0.5, rel=1e-9)


def test_old_fonts_presets_with_a_bootstrap_get_one_line() -> None:
    from metagen.fontbench import load_font_preset

    with pytest.raises(ConfigError, match="bootstrap.*fid_intervals"):
        load_font_preset({"kind": "fonts", "bootstrap": 200}, "old")


def test_paired_fid_difference_leaves_out_the_same_tasks_from_both_fids() -> None:
    from metagen.fontbench import fid_difference

    g = torch.Generator().manual_seed(0)
    real = [torch.randn(20, 4, generator=g) for _ in range(8)]
    far = [x + 3 for x in real]
    same = fid_difference(real, far, far)
    assert same == {"mean": 0.0, "ci95": 0.0, "lo": 0.0, "hi": 0.0}  # identical methods: no difference at all
    better = fid_difference(real, [x + 0.1 * torch.randn(x.shape, generator=g) for x in real], far)
    assert better["mean"] < -30 and better["hi"] < 0  # ~ -36 (a shift of 3 in 4 dimensions)
    assert better["lo"] < better["mean"] < better["hi"]  # the interval is around the estimate
