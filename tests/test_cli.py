"""End to end through the command line, and one-line errors with exit code 2 for bad input."""

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from metagen.cli import main

TINY = ["--set", "generator.latent_dim=4", "--set", "generator.channels=4", "--set", "generator.hidden=16",
        "--set", "learner.context_dim=4", "--set", "learner.hidden=16", "--set", "learner.channels=4",
        "--set", "train.meta_batch=4", "--set", "train.ckpt_every=2", "--quiet"]


@pytest.fixture
def support_pngs(tmp_path):
    paths = []
    for i in range(3):
        img = Image.new("RGB", (90 + 10 * i, 90), "white")
        ImageDraw.Draw(img).line([(20, 20 + i), (70, 70), (20, 70)], fill="black", width=6)
        paths.append(tmp_path / f"s{i}.png")
        img.save(paths[-1])
    return [str(p) for p in paths]


def test_train_adapt_sample_eval(tmp_path, support_pngs, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--config", "glyphs", "--out", run, "--steps", "3", *TINY]) == 0
    assert main(["train", "--config", "glyphs", "--out", run, "--steps", "5", "--resume", *TINY]) == 0
    assert "step 5" in capsys.readouterr().out

    out = tmp_path / "adapted.png"
    each = tmp_path / "each"
    assert main(["adapt", "--checkpoint", run, "--support", *support_pngs, "--n", "12", "--out", str(out),
                 "--each", str(each)]) == 0
    assert Image.open(out).size[0] > 0 and len(list(each.glob("sample_*.png"))) == 12

    assert main(["sample", "--checkpoint", run, "--concepts", "2", "--n", "3", "--out",
                 str(tmp_path / "prior.png")]) == 0
    assert (tmp_path / "prior.png").is_file()

    report_dir = tmp_path / "eval"
    assert main(["eval", "--checkpoint", run, "--out", str(report_dir), "--shots", "1", "2", "--iw-samples", "3",
                 "--max-tasks", "3", "--quiet"]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["methods"]) == {"context", "copy"}
    for m in report["methods"].values():
        assert set(m["nll"]) == {"1", "2"} and m["nll"]["1"]["n_tasks"] == 3 and m["nll"]["1"]["nll"] > 0
    assert "| context |" in (report_dir / "report.md").read_text()
    assert (report_dir / "samples_context.png").is_file() and (report_dir / "samples_copy.png").is_file()

    classified = tmp_path / "classified"
    assert main(["eval", "--checkpoint", run, "--out", str(classified), "--shots", "1", "--max-tasks", "3",
                 "--classify", "5", "3", "--classify-episodes", "4", "--quiet"]) == 0
    table = json.loads((classified / "report.json").read_text())["classification"]["table"]
    assert set(table) == {"pixel nearest neighbour", "context", "copy"}
    for row in table.values():
        assert set(row) == {"3-way 1-shot", "5-way 1-shot"}
        assert all(0 <= cell["mean"] <= 1 and cell["n"] == 4 for cell in row.values())
    assert table["copy"] == table["pixel nearest neighbour"]  # one support image: copy ranks by Hamming distance
    assert "| pixel nearest neighbour |" in (classified / "report.md").read_text()


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("metagen: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, support_pngs):
    run = str(tmp_path / "run")
    assert main(["train", "--config", "glyphs", "--out", run, "--steps", "2", *TINY]) == 0

    assert "no Omniglot data" in _error(capsys, ["train", "--config", "omniglot", "--out", str(tmp_path / "o"),
                                                 "--data-dir", str(tmp_path), "--quiet"])
    assert "train.lr = -1" in _error(capsys, ["train", "--config", "glyphs", "--set", "train.lr=-1"])
    assert "needs N >= 2" in _error(capsys, ["eval", "--checkpoint", run, "--classify", "1", "--quiet"])
    assert "61 held-out concepts, there are 60" in _error(capsys, ["eval", "--checkpoint", run, "--classify", "61",
                                                                   "--no-copy", "--shots", "1", "--max-tasks", "2",
                                                                   "--quiet"])
    assert "unknown key 'train.bogus'" in _error(capsys, ["train", "--config", "glyphs", "--set", "train.bogus=1"])

    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    adapt = ["adapt", "--checkpoint", run, "--out", str(tmp_path / "x.png"), "--support"]
    assert "cannot read image" in _error(capsys, [*adapt, str(tmp_path / "bad.png")])
    assert "no ink" in _error(capsys, [*adapt, str(tmp_path / "blank.png")])
    assert "--n must be at least 1" in _error(capsys, [*adapt, *support_pngs, "--n", "0"])

    (tmp_path / "fake.safetensors").write_bytes(b"junk")
    assert "not a readable checkpoint" in _error(capsys, ["sample", "--checkpoint", str(tmp_path / "fake.safetensors")])
    assert "no checkpoint at" in _error(capsys, ["sample", "--checkpoint", str(tmp_path / "nothing")])
    assert "was trained with learner.name" in _error(
        capsys, ["train", "--config", "glyphs", "--out", run, "--resume", *TINY,
                 "--set", "learner.name='unconditional'"])


def test_empty_support_on_the_command_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--config", "glyphs", "--out", run, "--steps", "1", *TINY]) == 0
    assert "support set is empty" in _error(capsys, ["adapt", "--checkpoint", run, "--support"])


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "metagen.cli", "presets"], capture_output=True, text=True, check=True)
    assert "omniglot" in out.stdout.split()
