"""`metagen bench`: the copy baseline's metrics, a tiny preset end to end (table, JSON, plots, docs block),
reproducibility under a seed, reuse of finished runs, checkpoint methods, and one-line errors."""

import json

import pytest
import torch

from metagen.bench import _fmt, _PerK, _summarise, load_preset, run_bench, score_method, update_docs
from metagen.cli import main
from metagen.config import load_config
from metagen.data import fixed_tasks, load_splits
from metagen.errors import ConfigError
from metagen.meta.base import build_learner
from metagen.metrics.features import FeatureConfig, FidelityClassifier, feature_net

SMALL_VAE = ["generator.latent_dim=4", "generator.channels=4", "generator.hidden=16", "train.meta_batch=4",
             "train.val_every=0", "train.patience=0"]


def method(*sets: str, steps: int = 3) -> str:
    """A bench method on the glyphs preset with a tiny VAE (a JSON list of strings is a TOML array)."""
    return f'config = "glyphs"\nsteps = {steps}\nset = {json.dumps([*SMALL_VAE, *sets])}'


CONTEXT = method("learner.context_dim=4")
COPY = method("learner.name='copy'")


def write_preset(path, methods: dict[str, str], seeds=(0,)) -> str:
    """A tiny glyphs bench preset: {name: extra TOML lines of the method}."""
    text = f"""
description = "tiny test preset"
shots = [1, 3]
seeds = {list(seeds)}
queries = 4
samples = 4
iw_samples = 4
max_tasks = 5
grid_shots = 3
grid_rows = 2
fidelity_steps = 5
bootstrap = 10
classify = [[3, 1]]
classify_episodes = 4

[features]
channels = 8
steps = 5
batch = 32
"""
    for name, body in methods.items():
        text += f"\n[methods.{name}]\n{body}\n"
    path.write_text(text)
    return str(path)


def test_copy_baseline_has_zero_novelty_and_the_fidelity_of_real_images():
    """Copy's samples are its support images, so its fidelity is the classifier's accuracy on those real images
    (whatever that accuracy is on a given machine), and its novelty is exactly 0."""
    config = load_config("glyphs", ["learner.name='copy'"])
    splits = load_splits(config.data, config.split)
    config.split.test_groups = splits.test_groups
    T = 5
    tasks = fixed_tasks(splits.held_out, 5, 10, seed=0, max_tasks=T)
    feats = feature_net(config, splits.background, FeatureConfig(channels=16, steps=300, batch=64), progress=False)
    clf = FidelityClassifier(feats.net, tasks, steps=200, progress=False)
    assert clf.support_accuracy >= 0.4  # well above chance (1/5): the classifier works at all
    real_f = feats.net.features(tasks.query.flatten(0, 1)).view(T, 10, -1)
    support_f = feats.net.features(tasks.support.flatten(0, 1)).view(T, 5, -1)
    learner = build_learner(config, splits.background.example_shape).eval()
    _, preset = load_preset("glyphs")
    p = preset.model_copy(update={"shots": [1, 5], "samples": 8, "bootstrap": 5, "grid_rows": 2})
    with torch.no_grad():
        scores, grid = score_method(learner, tasks, p, feats.net, clf, real_f, support_f, 0, torch.device("cpu"))
    for k in (1, 5):
        assert scores[k].per_task["novelty"] == [0.0] * T
        assert len(scores[k].per_task["nll"]) == T and scores[k].fid is not None
        for t in range(T):
            seen = [clf.recognised(tasks.support[t, i : i + 1], t) for i in range(k)]  # 1.0 or 0.0 per image
            assert min(seen) <= scores[k].per_task["fidelity"][t] <= max(seen)
    one_shot = [clf.recognised(tasks.support[t, :1], t) for t in range(T)]
    assert scores[1].per_task["fidelity"] == one_shot  # eight copies of the one support image
    assert sum(scores[1].per_task["diversity"]) == 0  # one support image, copied 8 times
    assert sum(scores[5].per_task["diversity"]) > 0
    assert grid.shape == (2, 8, 1, 28, 28)


def _metrics(report: dict) -> dict:
    """Every number of a report except the timings and memory, which vary from run to run."""
    return {name: {k: {metric: v for metric, v in row.items() if metric not in ("adapt_ms", "peak_mib")}
                   for k, row in m["shots"].items()} for name, m in report["methods"].items()}


def test_tiny_bench_writes_a_well_formed_table_and_reproduces(tmp_path):
    preset = write_preset(tmp_path / "tiny.toml", {"context": CONTEXT, "copy": COPY})
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nintro\n")
    report = run_bench(preset, tmp_path / "out", tmp_path / "runs", docs=docs, progress=False)

    table = (tmp_path / "out" / "results.md").read_text()
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method | shots"))
    header, rows = lines[start], lines[start + 2 : lines.index("", start)]
    assert len(rows) == 3 * 2  # (reference + 2 methods) x 2 shot counts
    assert [r.split(" | ")[1] for r in rows] == ["1", "3"] * 3
    assert all(line.count("|") == header.count("|") for line in rows)
    for metric in ("NLL", "FID", "precision", "recall", "fidelity", "novelty", "diversity", "adapt ms"):
        assert metric in header
    copy_row = next(line for line in rows if line.startswith("| copy | 3 |"))
    assert "0.00 ± 0.00" in copy_row  # novelty of copies
    for f in ("results.json", "nll_vs_shots.png", "fidelity_vs_novelty.png", "samples_context.png",
              "samples_copy.png"):
        assert (tmp_path / "out" / f).is_file()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["methods"].keys() == {"context", "copy"}
    for k in ("1", "3"):
        row = report["methods"]["context"]["shots"][k]
        assert set(row) >= {"nll", "fid", "precision", "recall", "fidelity", "novelty", "diversity", "adapt_ms"}
        assert row["nll"]["n"] == 5 and row["peak_mib"] >= 0

    # Classification by likelihood: at 1 shot copy's flip-mixture likelihood falls with the Hamming distance to
    # the support image, so it classifies exactly as the pixel nearest neighbour does.
    assert "| method | 3-way 1-shot error (%) |" in table and "| pixel nearest neighbour |" in table
    pixel_nn = report["classify_reference"]["pixel nearest neighbour"]["3-way 1-shot"]
    assert report["methods"]["copy"]["classify"]["3-way 1-shot"] == pixel_nn and pixel_nn["n"] == 4
    assert 0 <= report["methods"]["context"]["classify"]["3-way 1-shot"]["mean"] <= 1

    text = docs.read_text()
    assert text.startswith("# Results\n\nintro\n") and "<!-- bench:tiny start -->" in text and table in text
    update_docs(docs, "tiny", "new table")  # a rerun replaces the block in place
    assert docs.read_text().count("bench:tiny start") == 1 and "new table" in docs.read_text()

    # Same seed, fresh runs: the same numbers. Same runs folder: finished runs are reused, not retrained.
    again = run_bench(preset, tmp_path / "out2", tmp_path / "runs2", progress=False)
    assert _metrics(again) == _metrics(report)
    assert again["methods"]["context"]["classify"] == report["methods"]["context"]["classify"]
    marker = tmp_path / "runs" / "tiny" / "context" / "seed0" / "bench.json"
    stamp = marker.stat().st_mtime_ns
    reused = run_bench(preset, tmp_path / "out3", tmp_path / "runs", progress=False)
    assert marker.stat().st_mtime_ns == stamp and _metrics(reused) == _metrics(report)

    # Each (method, seed) is saved when scored: a rerun into the same folder (say, after an interruption)
    # reuses it; a score file made another way (here: another feature net) is scored again.
    saved = {m: tmp_path / "out" / "scores" / f"{m}-seed0.json" for m in ("context", "copy")}
    stamps = {m: f.stat().st_mtime_ns for m, f in saved.items()}
    stale = json.loads(saved["copy"].read_text())
    stale["fingerprint"]["features"] = "another"
    saved["copy"].write_text(json.dumps(stale))
    older = json.loads(saved["context"].read_text())  # written before a setting existed: same config
    del older["fingerprint"]["config"]["eval"]["episodes"]
    saved["context"].write_text(json.dumps(older))
    stamps["context"] = saved["context"].stat().st_mtime_ns
    resumed = run_bench(preset, tmp_path / "out", tmp_path / "runs", progress=False)
    assert _metrics(resumed) == _metrics(report)
    assert resumed["seconds"] > resumed["methods"]["context"]["eval_seconds"][0]  # reused scoring time counts
    assert saved["context"].stat().st_mtime_ns == stamps["context"]
    assert json.loads(saved["copy"].read_text())["fingerprint"]["features"] != "another"


def test_bench_evaluates_a_checkpoint_trained_elsewhere(tmp_path):
    run = tmp_path / "trained"
    tiny = ["--set", "generator.latent_dim=4", "--set", "generator.channels=4", "--set", "generator.hidden=16",
            "--set", "learner.context_dim=4", "--set", "train.meta_batch=4", "--quiet"]
    assert main(["train", "--config", "glyphs", "--out", str(run), "--steps", "2", *tiny]) == 0
    preset = write_preset(tmp_path / "ck.toml", {"copy": COPY, "mine": f'checkpoint = "{run}"'})
    report = run_bench(preset, tmp_path / "out", tmp_path / "runs", progress=False)
    assert report["methods"]["mine"]["train_steps"] == [2] and report["methods"]["mine"]["learner"] == "context"
    assert f"mine (`{run}`)" in (tmp_path / "out" / "results.md").read_text()


def test_bench_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "--list"]) == 0
    assert {"glyphs", "omniglot-small", "omniglot-full"} <= set(capsys.readouterr().out.split())
    assert main(["bench", "--preset", "nope"]) == 2
    assert "no bench preset file or preset named 'nope'" in capsys.readouterr().err
    bad = write_preset(tmp_path / "bad.toml", {"copy": COPY + "\ncheckpoint = 'x'"})
    with pytest.raises(ConfigError, match="either config .* or checkpoint"):
        load_preset(bad)
    other = write_preset(tmp_path / "other.toml", {"copy": COPY, "big": method("data.image_size=16")})
    assert main(["bench", "--preset", other, "--out", str(tmp_path / "o"), "--runs", str(tmp_path / "r"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "other data or other held-out groups" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "--preset", other, "--methods", "nope", "--quiet"]) == 2
    assert "has no method 'nope'" in capsys.readouterr().err


def test_features_train_command(tmp_path, capsys):
    preset = write_preset(tmp_path / "tiny.toml", {"copy": COPY})
    assert main(["features", "train", "--config", "glyphs", "--bench", preset, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "feature network" in out and "background concepts" in out and "cached at" in out


def test_every_packaged_bench_preset_loads_and_its_configs_validate():
    from metagen.bench import bench_presets, method_config

    for name in bench_presets():
        if name.startswith("fonts"):  # its own kind, checked in tests/data/test_fonts.py
            continue
        _, preset = load_preset(name)
        assert preset.shots == [1, 5, 10] and preset.methods
        for method in preset.methods.values():
            if method.config is not None:  # checkpoint methods need their run folders
                cfg = method_config(method, seed=0, device="cpu")
                assert cfg.eval.shots == [1, 5, 10] and cfg.data.image_size == 28


def test_a_preset_that_changes_a_trained_model_says_what_to_do(tmp_path):
    from metagen.errors import CheckpointError

    preset = write_preset(tmp_path / "p.toml", {"context": CONTEXT})
    run_bench(preset, tmp_path / "out", tmp_path / "runs", progress=False)
    write_preset(tmp_path / "p.toml", {"context": method("learner.context_dim=6")})
    with pytest.raises(CheckpointError, match="delete .* or pass another --runs"):
        run_bench(preset, tmp_path / "out", tmp_path / "runs", progress=False)


def test_a_diverged_adaptation_is_reported_not_averaged():
    ok = _PerK(per_task={"nll": [90.0, 92.0], "novelty": [1.0, 2.0]}, fid=float("nan"), fid_ci=float("nan"))
    bad = _PerK(per_task={"nll": [90.0, float("nan")], "novelty": [1.0, 2.0]}, fid=3.0, fid_ci=0.5)
    row = _summarise([{1: ok}, {1: bad}], [1])["1"]
    assert row["nll"]["diverged"] == 1 and row["nll"]["n"] == 4
    assert _fmt(row["nll"]) == "diverged on 1/4" and _fmt(row["novelty"]) == "1.50 ± 0.57"
    assert _fmt(_summarise([{1: ok}], [1])["1"]["fid"]) == "diverged"
