"""Sharded meta-training over 2 CPU processes (torchrun, gloo) takes the single-process step."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metagen.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_two_processes_take_the_single_process_step(tmp_path):
    run = subprocess.run([*TORCHRUN, str(WORKER), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("maml", "context", "hyper"):
        for rank in (0, 1):
            r = json.loads((tmp_path / f"{name}.rank{rank}.json").read_text())
            assert r["world"] == 2
            assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-12)
            assert r["moved"] > 1e-4 and r["max_diff"] < 1e-12, (name, rank, r)


def test_torchrun_metagen_train_writes_one_run(tmp_path):
    metagen = Path(sys.executable).with_name("metagen")
    cmd = [*TORCHRUN, "--no-python", str(metagen), "train", "--config", "glyphs", "--out", str(tmp_path / "run"),
           "--steps", "3", "--set", "generator.latent_dim=4", "--set", "generator.channels=4",
           "--set", "generator.hidden=16", "--set", "learner.context_dim=4", "--set", "learner.hidden=16",
           "--set", "learner.channels=4", "--set", "train.meta_batch=4", "--set", "train.val_every=0",
           "--set", "train.log_every=1",
           "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run").step == 3
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # rank 0 alone logs: a header and one row per step
