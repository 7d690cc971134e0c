"""Real faults during training: SIGKILL mid-run, damaged checkpoints, a full disk; each ends cleanly."""

from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metagen.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, load_checkpoint

TINY = ["--set", "generator.latent_dim=4", "--set", "generator.channels=4", "--set", "generator.hidden=16",
        "--set", "learner.context_dim=4", "--set", "learner.hidden=16", "--set", "learner.channels=4",
        "--set", "train.meta_batch=4", "--set", "train.log_every=1", "--quiet"]
CKPT_EVERY = 10


def _train_cmd(run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metagen.cli", "train", "--config", "glyphs", "--out", str(run),
            "--steps", str(steps), "--set", f"train.ckpt_every={CKPT_EVERY}", *TINY, *extra]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _logged_steps(run: Path) -> list[int]:
    path = run / "log.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if (r.get("step") or "").isdigit()]


def test_sigkill_mid_run_loses_at_most_one_interval_and_resumes_to_the_same_weights(tmp_path):
    steps = 300
    straight = _run(_train_cmd(tmp_path / "straight", steps))
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run, steps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        logged = _logged_steps(run)
        if logged and logged[-1] >= 3 * CKPT_EVERY + 5:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "training ended before it could be killed; raise `steps`"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    proc.stderr.close()

    done = _logged_steps(run)[-1]  # the last step the killed run finished
    saved = load_checkpoint(run / CHECKPOINT_NAME).step
    assert saved < steps and 0 <= done - saved <= CKPT_EVERY  # at most one checkpoint interval lost

    resumed = _run(_train_cmd(run, steps, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight").model, load_checkpoint(run).model
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit the uninterrupted run
    assert _logged_steps(run) == list(range(1, steps + 1))  # the redone steps are logged once
    assert not list(run.glob(".*.tmp"))


def test_damaged_checkpoint_is_one_line_exit_2_and_the_previous_one_is_kept(tmp_path):
    run = tmp_path / "run"
    assert _run(_train_cmd(run, 2 * CKPT_EVERY)).returncode == 0
    latest, previous = run / CHECKPOINT_NAME, run / PREVIOUS_NAME
    assert load_checkpoint(previous).step == CKPT_EVERY and load_checkpoint(latest).step == 2 * CKPT_EVERY
    good_previous = previous.read_bytes()

    whole = latest.read_bytes()
    damages = {"truncated": whole[: len(whole) // 2], "header": b"\xff" * 16 + whole[16:], "empty": b""}
    for what, data in damages.items():
        latest.write_bytes(data)
        resume = _run(_train_cmd(run, 3 * CKPT_EVERY, "--resume"))
        sample = _run([sys.executable, "-m", "metagen.cli", "sample", "--checkpoint", str(latest), "--quiet",
                       "--out", str(tmp_path / "s.png")])
        for out in (resume, sample):
            assert out.returncode == 2, (what, out.stderr)
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("metagen: error:"), (what, out.stderr)
            assert "not a readable checkpoint" in lines[0]
        assert f"'{previous}', is kept" in resume.stderr  # says where the last good state is
        assert latest.read_bytes() == data and previous.read_bytes() == good_previous  # nothing overwritten

    latest.write_bytes(good_previous)  # what the message says to do
    assert _run(_train_cmd(run, 3 * CKPT_EVERY, "--resume")).returncode == 0
    assert load_checkpoint(run).step == 3 * CKPT_EVERY


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert _run(_train_cmd(run, CKPT_EVERY)).returncode == 0
    before = (run / CHECKPOINT_NAME).read_bytes()
    # The kernel refuses any write past half a checkpoint: the next checkpoint cannot be written.
    out = _run(_train_cmd(run, 3 * CKPT_EVERY, "--resume"), preexec_fn=_limit_file_size(len(before) // 2))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not write checkpoint" in lines[0] and "File too large" in lines[0], lines
    assert "previous one is untouched" in lines[0]
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    assert not list(run.glob(".*.tmp"))  # the torn temporary file was removed
    assert _run(_train_cmd(run, 3 * CKPT_EVERY, "--resume")).returncode == 0  # space again: it continues
    assert load_checkpoint(run).step == 3 * CKPT_EVERY


def test_full_disk_on_the_first_checkpoint_says_so(tmp_path):
    run = tmp_path / "run"
    out = _run(_train_cmd(run, CKPT_EVERY), preexec_fn=_limit_file_size(50_000))
    assert out.returncode == 2 and "could not write checkpoint" in out.stderr, out.stderr
    assert "choose another --out" in out.stderr and not (run / CHECKPOINT_NAME).exists()
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]
