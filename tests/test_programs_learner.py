"""The stroke-program learner behind the shared surfaces: train, checkpoint, adapt, sample, log_prob, CLI."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tests.conftest import tiny_config

from metagen.checkpoint import load_learner
from metagen.cli import main
from metagen.data import Tasks, fixed_tasks, load_splits
from metagen.errors import ConfigError, DataError
from metagen.programs import Program
from metagen.train import train

BACKGROUND = ["Alpha", "Beta", "Gamma"]
HELD_OUT = ["Delta"]
CHARS, DRAWERS = 3, 6
PROGRAMS = {"name": "programs", "strokes": 2, "control": 4, "channels": 4, "hidden": 16, "refine_steps": 3,
            "joint_steps": 3, "fit_steps": 2}


def _write_drawings(root: Path, seed: int = 0, corrupt_held_out: bool = True) -> Path:
    """Fake Omniglot whose images are drawn from their own stroke files (one or two strokes per character,
    drawers differ by a little noise). With `corrupt_held_out`, the held-out alphabet's stroke files are corrupt:
    reading them fails."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "images_background.zip", "w") as images, \
            zipfile.ZipFile(root / "strokes_background.zip", "w") as strokes:
        for alphabet in BACKGROUND + HELD_OUT:
            for c in range(1, CHARS + 1):
                base = [rng.uniform(20, 85, size=(3, 2)) for _ in range(int(rng.integers(1, 3)))]
                for d in range(1, DRAWERS + 1):
                    drawing = [b + rng.normal(0, 1.5, size=b.shape) for b in base]
                    img = Image.new("L", (105, 105), 255)
                    draw = ImageDraw.Draw(img)
                    for s in drawing:
                        draw.line([tuple(p) for p in s], fill=0, width=5)
                    name = f"{alphabet}/character{c:02d}/{c:04d}_{d:02d}"
                    png = root / "tmp.png"
                    img.convert("1").save(png)
                    images.write(png, f"images_background/{name}.png")
                    text = "START\n" + "".join("".join(f"{x:.2f},{-y:.2f},{10 * i}\n" for i, (x, y) in enumerate(s))
                                               + "BREAK\n" for s in drawing)
                    if alphabet in HELD_OUT and corrupt_held_out:
                        text = "START\nnot a stroke file\n"
                    strokes.writestr(f"strokes_background/{name}.txt", text)
    (root / "tmp.png").unlink()
    return root


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_drawings(tmp_path_factory.mktemp("drawn"))


def _config(root: Path, **sections):
    return tiny_config(**{"data": {"source": "omniglot", "data_dir": str(root), "rotations": False},
                          "split": {"test_groups": HELD_OUT, "val_fraction": 0.2}, "learner": PROGRAMS,
                          "train": {"steps": 6, "meta_batch": 2, "shots": [1, 1], "queries": 3, "val_every": 3},
                          **sections})


@pytest.fixture(scope="module")
def trained(drawn: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "programs"
    train(_config(drawn), run, progress=False)  # never parses the held-out alphabet's (corrupt) stroke files
    return run


def test_training_reads_background_strokes_and_checkpoints_what_it_learned(trained: Path):
    learner, ckpt = load_learner(trained, which="latest")
    assert ckpt.step == 6 and ckpt.best_step == 3 and learner.fitted.item() == 1.0  # validation images found too
    noise = learner.noise_model
    assert 0 < noise.jitter < 10 and 0 < noise.shift < 20  # canvas units, from the fake drawers' spread
    assert learner.stroke_counts.shape == (2,) and learner.stroke_counts.sum().item() == pytest.approx(1.0)


def test_adapt_sample_and_likelihood_through_the_shared_surfaces(trained: Path, drawn: Path):
    learner, ckpt = load_learner(trained)
    splits = load_splits(ckpt.config.data, ckpt.config.split)
    assert splits.test_groups == HELD_OUT
    tasks = fixed_tasks(splits.held_out, 2, 2, seed=0)
    with torch.no_grad():  # inference takes gradient steps inside, also under no_grad (as the bench calls it)
        adapted = learner.adapt(tasks.support[0])
        samples = adapted.sample(5, generator=torch.Generator().manual_seed(0))
        lp = adapted.log_prob(tasks.query[0], iw_samples=4, generator=torch.Generator().manual_seed(0))
        again = learner.adapt(tasks.support[0]).log_prob(tasks.query[0], iw_samples=4,
                                                         generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 28, 28) and samples.dtype == torch.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert lp.shape == (2,) and torch.isfinite(lp).all() and (lp < 0).all()
    torch.testing.assert_close(lp, again)  # adaptation is deterministic, the bound reproducible with a generator
    program = Program.from_text(adapted.program().to_text())
    assert 1 <= len(program.strokes) <= 2
    imagined = learner.prior(torch.Generator().manual_seed(3))
    assert imagined.sample(2).shape == (2, 1, 28, 28)
    assert torch.isfinite(learner.marginal_log_prob(tasks.query[0], iw_samples=2, concepts=2)).all()


def test_sample_and_adapt_print_programs(trained: Path, drawn: Path, tmp_path: Path, capsys):
    assert main(["sample", "--checkpoint", str(trained), "--programs", "--concepts", "2", "--n", "3",
                 "--out", str(tmp_path / "imagined.png"), "--quiet"]) == 0
    out = capsys.readouterr().out
    texts = out.split("# character ")[1:]
    assert len(texts) == 2
    for t in texts:
        Program.from_text(t.split("\n", 1)[1].split("\nwrote")[0].strip())
    assert Image.open(tmp_path / "imagined.png").mode == "RGB"
    with zipfile.ZipFile(drawn / "images_background.zip") as zf:
        (tmp_path / "a.png").write_bytes(zf.read("images_background/Delta/character01/0001_01.png"))
    assert main(["adapt", "--checkpoint", str(trained), "--support", str(tmp_path / "a.png"), "--programs",
                 "--out", str(tmp_path / "adapted.png"), "--n", "4", "--quiet"]) == 0
    assert "program pen=" in capsys.readouterr().out
    assert (tmp_path / "adapted.strokes.png").is_file() and (tmp_path / "adapted.png").is_file()


def test_programs_flag_on_another_learner_is_one_line(tmp_path: Path, capsys):
    run = tmp_path / "vae"
    train(tiny_config(train={"steps": 1}), run, progress=False)
    assert main(["sample", "--checkpoint", str(run), "--programs", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--programs needs a stroke-program model" in err and err.count("\n") == 1


def test_bad_setups_are_clear_errors(drawn: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="data.rotations = false"):
        train(_config(drawn, data={"source": "omniglot", "data_dir": str(drawn), "rotations": True}), None,
              progress=False)
    with pytest.raises(ConfigError, match="Omniglot's pen trajectories"):
        train(tiny_config(learner=PROGRAMS, train={"steps": 1}), None, progress=False)
    # images without their stroke files
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "images_background.zip").write_bytes((drawn / "images_background.zip").read_bytes())
    with pytest.raises(DataError, match="no Omniglot stroke data"):
        train(_config(bare), None, progress=False)
    # a batch of images nobody drew: the learner says it cannot train on them
    from metagen.meta import build_learner

    learner = build_learner(_config(drawn), (1, 28, 28))
    x = torch.zeros(1, 2, 1, 28, 28)
    with pytest.raises(DataError, match="pen trajectories"):
        learner.meta_loss(Tasks(x[:, :1], x[:, 1:], None, None, None))
    with pytest.raises(DataError, match="has not read any pen trajectories"):
        learner.adapt(x[0, :1])


def test_augmentation_moves_images_and_strokes_alike():
    from metagen.meta.programs import augment
    from metagen.programs.encoder import render_batch

    g = torch.Generator().manual_seed(0)
    cps = torch.rand(32, 2, 4, 2, generator=g) * 50 + 25
    present, pen = torch.ones(32, 2), torch.full((32,), 6.0)
    images = (render_batch(cps, present, pen, 28) > 0.5).float()[:, None]
    torch.manual_seed(0)
    warped, moved = augment(images, cps, 0.4)
    assert set(warped.unique().tolist()) <= {0.0, 1.0}

    def iou(a, b):
        return ((a * b).sum((1, 2, 3)) / ((a + b) > 0).float().sum((1, 2, 3))).mean().item()

    drawn = (render_batch(moved, present, pen, 28) > 0.5).float()[:, None]
    assert iou(warped, drawn) > 0.7  # the moved strokes draw the moved image (up to resampling)
    assert iou(warped, images) < iou(warped, drawn) - 0.2  # and the images did move
    same, unmoved = augment(images, cps, 0.0)
    assert torch.equal(same, images) and torch.equal(unmoved, cps)


def test_stroke_check_benchmark_runs_on_a_trained_run(tmp_path: Path):
    import importlib.util
    import json

    root = _write_drawings(tmp_path / "data", seed=1, corrupt_held_out=False)
    run = tmp_path / "run"
    train(_config(root, train={"steps": 2, "meta_batch": 2, "shots": [1, 1], "queries": 3}), run, progress=False)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stroke_programs.py"
    spec = importlib.util.spec_from_file_location("stroke_programs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    assert module.main(["--checkpoint", str(run), "--shots", "1", "2", "--rows", "2", "--imagine", "2",
                        "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == CHARS and 0 <= report["shots"]["1"]["stroke_count_accuracy"] <= 1
    assert (out / "sheet_2shot.png").is_file() and len((out / "imagined.txt").read_text().split("\n\n")) == 2
