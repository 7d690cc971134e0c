"""`metagen serve` through its HTTP API: samples for an uploaded support set, and clear errors for bad input."""

from __future__ import annotations

import io
import threading
import zipfile

import pytest

pytest.importorskip("fastapi", reason="the web app's extra: pip install 'metagen[serve]'")
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from metagen.serve.app import Limits, create_app


@pytest.fixture(scope="module")
def client(serve_runs) -> TestClient:
    limits = Limits(max_files=6, max_file_bytes=200_000, max_body_bytes=1_000_000, max_samples=40, max_pending=64)
    with TestClient(create_app([serve_runs], limits)) as c:
        yield c


def drawing(i: int, size: int = 64, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).line([(10, 10 + i), (size - 12, size // 2), (12, size - 10)], fill="black", width=5)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def post(client: TestClient, files: list[tuple[str, bytes]] | None = None, **fields):
    data = {"run": "runs/demo/spatial", "n": "6", "seed": "0", **{k: str(v) for k, v in fields.items()}}
    upload = [("support", (name, content, "image/png")) for name, content in (files or [])]
    return client.post("/api/jobs", data=data, files=upload or None)


def finish(client: TestClient, job: dict) -> dict:
    for _ in range(100):
        job = client.get(f"/api/jobs/{job['id']}?wait=5").json()
        if job["status"] in ("done", "failed"):
            return job
    raise AssertionError(f"job never finished: {job}")


FIVE = [(f"ex{i}.png", drawing(i)) for i in range(5)]


def test_runs_are_listed_with_the_demo_as_default(client):
    body = client.get("/api/runs").json()
    ids = {r["id"]: r for r in body["runs"]}
    assert set(ids) == {"runs/demo/spatial", "runs/text/lstm"} and body["default"] == "runs/demo/spatial"
    assert ids["runs/demo/spatial"]["kind"] == "image" and ids["runs/demo/spatial"]["image_size"] == 28
    assert ids["runs/text/lstm"]["kind"] == "text"
    assert "/" not in body["runs"][0]["id"][:1]  # ids, never absolute paths
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text


def test_five_images_in_n_samples_out_and_a_zip(client):
    resp = post(client, FIVE, n=7, seed=3)
    assert resp.status_code == 202, resp.text
    job = finish(client, resp.json())
    assert job["status"] == "done" and job["done"] == job["total"] == 7
    assert len(job["samples"]) == 7
    pngs = [Image.open(io.BytesIO(client.get(url).content)) for url in job["samples"]]
    assert all(p.size == (28, 28) for p in pngs)
    grid = Image.open(io.BytesIO(client.get(job["grid"]).content))
    assert grid.width > 28 * 5 and grid.height > 28 * 2  # the support row and the samples below
    z = zipfile.ZipFile(io.BytesIO(client.get(job["zip"]).content))
    assert sorted(z.namelist()) == ["README.txt", "grid.png", *[f"sample_{i:03d}.png" for i in range(7)]]
    again = finish(client, post(client, FIVE, n=7, seed=3).json())  # the same seed, the same samples
    assert [client.get(u).content for u in again["samples"]] == [client.get(u).content for u in job["samples"]]


def test_text_run_writes_texts(client):
    resp = client.post("/api/jobs", data={"run": "runs/text/lstm", "n": "3", "text": "abc def\n%\nhead bag",
                                          "temperature": "0.8"})
    job = finish(client, resp.json())
    assert job["status"] == "done" and len(job["texts"]) == 3 and all(isinstance(t, str) for t in job["texts"])
    names = zipfile.ZipFile(io.BytesIO(client.get(job["zip"]).content)).namelist()
    assert "sample_000.txt" in names


def _error(resp, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    msg = resp.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg and "Traceback" not in msg
    return msg


def test_bad_uploads_get_clear_messages(client):
    assert "empty" in _error(post(client, []), 400)
    assert "too many files" in _error(post(client, [(f"e{i}.png", drawing(i)) for i in range(7)]), 400)
    assert "larger than" in _error(post(client, [("big.png", b"\x89PNG" + b"0" * 250_000)]), 400)
    assert "cannot read image 'notes.txt'" in _error(post(client, [("notes.txt", b"just text")]), 400)
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, "PNG")
    assert "no ink" in _error(post(client, [("blank.png", blank.getvalue())]), 400)
    # A decompression bomb: a tiny file declaring 20000 x 20000 pixels is refused before decoding.
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000), 1).save(bomb, "PNG")
    assert len(bomb.getvalue()) < 200_000
    assert "megapixels" in _error(post(client, [("bomb.png", bomb.getvalue())]), 400)
    # Path tricks in a file name are only ever a label: the last part, printable.
    for name in ("../../etc/passwd.png", "..\\..\\windows\\passwd.png", "/etc/passwd.png"):
        msg = _error(post(client, [(name, b"nope")]), 400)
        assert "image 'passwd.png'" in msg and "etc" not in msg and "windows" not in msg
    assert "larger than" in _error(client.post("/api/jobs", content=b"x" * 1_100_000,
                                               headers={"content-type": "application/octet-stream"}), 413)


def test_bad_fields_and_runs_get_clear_messages(client, serve_runs):
    assert "unknown run" in _error(post(client, FIVE, run="../../etc"), 404)
    assert "unknown run" in _error(post(client, FIVE, run=str(serve_runs / "demo" / "spatial")), 404)  # no paths
    assert "unknown run" in _error(post(client, FIVE, run="runs/broken"), 404)
    assert "n must be between 1 and 40" in _error(post(client, FIVE, n=0), 400)
    assert "n must be between 1 and 40" in _error(post(client, FIVE, n=10_000), 400)
    assert "must be int" in _error(post(client, FIVE, n="many"), 400)
    assert "temperature" in _error(post(client, FIVE, temperature="nan"), 400)
    assert "say which run" in _error(client.post("/api/jobs", data={"n": "2"}), 400)
    assert "no page '/etc/passwd'" in _error(client.get("/api/jobs/../../etc/passwd"), 404)
    assert "no page" in _error(client.get("/api/jobs/..%2F..%2Fetc"), 404)
    assert "no job 'abc'" in _error(client.get("/api/jobs/abc"), 404)
    assert "not allowed" in _error(client.delete("/api/runs"), 405)
    assert "no job" in _error(client.get("/api/jobs/" + "0" * 32), 404)
    assert "holds no text" in _error(client.post("/api/jobs", data={"run": "runs/text/lstm", "text": "%\n%"}), 400)
    assert client.get("/api/runs").status_code == 200  # still serving


def test_many_concurrent_clients_are_all_served(client):
    errors = []

    def one_client() -> None:
        for _ in range(3):
            try:
                job = finish(client, post(client, FIVE[:2], n=2).json())
                assert job["status"] == "done" and len(job["samples"]) == 2
            except Exception as e:  # collected, so a failure names the request
                errors.append(repr(e))

    threads = [threading.Thread(target=one_client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_a_full_queue_says_busy_and_recovers(serve_runs):
    with TestClient(create_app([serve_runs], Limits(max_pending=1))) as c:
        gate = threading.Event()
        blocker = c.app.state.jobs.submit("test", 1, lambda job: gate.wait(30))  # holds the only slot
        resp = post(c, FIVE)
        assert "busy" in _error(resp, 503) and resp.headers["retry-after"] == "2"
        gate.set()
        blocker.finished.wait(10)
        assert finish(c, post(c, FIVE).json())["status"] == "done"  # serving again


def test_a_bug_in_a_job_fails_that_job_only(serve_runs):
    with TestClient(create_app([serve_runs])) as c:
        broken = c.app.state.jobs.submit("test", 1, lambda job: 1 / 0)
        broken.finished.wait(10)
        assert broken.status == "failed" and "ZeroDivisionError" in broken.error
        assert finish(c, post(c, FIVE).json())["status"] == "done"


def test_slow_families_sample_in_pieces_and_report_progress():
    from types import SimpleNamespace

    import torch

    from metagen.serve.generate import generate
    from metagen.serve.jobs import Job
    from metagen.serve.runs import RunInfo

    seen = []

    class Adapted:
        def sample(self, n, generator=None):
            seen.append((n, job.done, job.stage))
            return torch.rand(n, 1, 8, 8, generator=generator)

    learner = SimpleNamespace(adapt=lambda support: Adapted())
    job = Job("x", "run", 25)
    slow = RunInfo("runs/p", None, "image", "context", "pixelcnn", 8, 1)
    result = generate(job, slow, learner, None, torch.zeros(2, 1, 8, 8), 25, seed=0)
    assert [n for n, _, _ in seen] == [3] * 8 + [1] and job.done == 25 and len(result.samples) == 25
    assert seen[1][2] == "sampling 4-6 of 25"
    seen.clear()
    job = Job("y", "run", 25)
    generate(job, RunInfo("runs/v", None, "image", "context", "vae", 8, 1), learner, None,
             torch.zeros(2, 1, 8, 8), 25, seed=0)
    assert [n for n, _, _ in seen] == [25]  # fast families in one go


def test_serve_command_errors_are_one_line(tmp_path, capsys):
    from metagen.cli import main

    assert main(["serve", "--runs", str(tmp_path / "nowhere")]) == 2
    assert "no folder" in capsys.readouterr().err
    assert main(["serve", "--runs", str(tmp_path), "--port", "0"]) == 2
    assert "--port must be in 1-65535" in capsys.readouterr().err


def test_tune_runs_take_abc_and_midi_and_return_abc(serve_runs, tmp_path):
    pytest.importorskip("music21")
    from music21 import converter

    from metagen.checkpoint import save_checkpoint
    from metagen.config import from_dict
    from metagen.data.tunes import alphabet
    from metagen.meta import build_learner

    cfg = from_dict({"data": {"source": "tunes", "vocab": alphabet(), "max_len": 64},
                     "generator": {"name": "lstm", "embed_dim": 8, "hidden": 16, "vocab_size": len(alphabet()) + 3},
                     "learner": {"name": "context", "context_dim": 4, "hidden": 16}})
    root = tmp_path / "runs"
    save_checkpoint(root / "tunes" / "checkpoint.safetensors", cfg, 0, build_learner(cfg, (64,)))
    abc = "X:1\nT:t\nM:6/8\nL:1/8\nK:G\nG2B dBG|c2A B2G|\n"
    (tmp_path / "t.abc").write_text(abc)
    converter.parse(str(tmp_path / "t.abc")).write("midi", fp=str(tmp_path / "t.mid"))
    with TestClient(create_app([root])) as c:
        assert c.get("/api/runs").json()["runs"][0]["kind"] == "tunes"
        files = [("support", ("a.abc", abc.encode(), "text/plain")),
                 ("support", ("b.mid", (tmp_path / "t.mid").read_bytes(), "audio/midi"))]
        job = finish(c, c.post("/api/jobs", data={"run": "runs/tunes", "n": "2", "text": "M:2/4\nK:C\nCDEG|"},
                               files=files).json())
        assert job["status"] == "done" and len(job["texts"]) == 2 and all(t.startswith("X:") for t in job["texts"])
        names = zipfile.ZipFile(io.BytesIO(c.get(job["zip"]).content)).namelist()
        assert {"sample_000.abc", "sample_000.mid"} <= set(names)
        bad = c.post("/api/jobs", data={"run": "runs/tunes"}, files=[("support", ("x.png", b"nope", "image/png"))])
        assert "not a tune file" in _error(bad, 400)
        bad = c.post("/api/jobs", data={"run": "runs/tunes"}, files=[("support", ("x.mid", b"MThd", "audio/midi"))])
        assert "cannot read tune file 'x.mid'" in _error(bad, 400)
