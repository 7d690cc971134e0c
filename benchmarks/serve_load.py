"""Load on `metagen serve`: C clients x R requests at once, each uploading 5 examples and waiting for samples.

Prints and writes JSON: requests served, failures, end-to-end latency percentiles, and that bad requests
mixed into the load (an oversized upload, a non-image, an unknown run) got their 4xx while the rest were served.

    python benchmarks/serve_load.py                       # runs/ (make demo first), else a tiny model it trains
    python benchmarks/serve_load.py --clients 20 --requests 10 --n 16 --out results/serve_load.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
import uvicorn
from PIL import Image, ImageDraw

from metagen.serve.app import create_app


def drawing(i: int) -> bytes:
    img = Image.new("L", (96, 96), 255)
    ImageDraw.Draw(img).line([(20, 20 + 2 * i), (76, 48), (24, 80)], fill=0, width=7)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def serve(roots: list[Path]) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(roots), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def tiny_runs() -> Path:
    from metagen.cli import main

    root = Path(tempfile.mkdtemp()) / "runs"
    main(["train", "--config", "glyphs", "--out", str(root / "demo" / "spatial"), "--steps", "50", "--quiet",
          "--set", "learner.name='spatial'"])
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--n", type=int, default=16, help="samples per request")
    parser.add_argument("--out", default="results/serve_load.json")
    args = parser.parse_args()

    roots = [Path(args.runs)] if (Path(args.runs) / "demo" / "spatial").is_dir() else [tiny_runs()]
    server, url = serve(roots)
    run = httpx.get(f"{url}/api/runs").json()["default"]
    files = [("support", (f"ex{i}.png", drawing(i), "image/png")) for i in range(5)]
    latencies: list[float] = []
    failures: list[str] = []
    bad: dict[str, int] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for r in range(args.requests):
                t0 = time.perf_counter()
                try:
                    resp = http.post("/api/jobs", data={"run": run, "n": str(args.n), "seed": str(c * 1000 + r)},
                                     files=files)
                    resp.raise_for_status()
                    job = resp.json()
                    while job["status"] not in ("done", "failed"):
                        job = http.get(f"/api/jobs/{job['id']}", params={"wait": 30}).json()
                    if job["status"] != "done" or len(job["samples"]) != args.n:
                        raise RuntimeError(f"job {job['status']}: {job.get('error')}")
                    http.get(job["samples"][0]).raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except Exception as e:  # counted, the load goes on
                    with lock:
                        failures.append(f"client {c} request {r}: {e!r}"[:200])
                if c == 0 and r % 3 == 0:  # bad requests in the middle of the load
                    for what, kw in {
                        "oversized": {"content": b"x" * (60 * 2**20)},
                        "non-image": {"data": {"run": run}, "files": [("support", ("a.png", b"text", "image/png"))]},
                        "unknown run": {"data": {"run": "../../etc"}, "files": files},
                    }.items():
                        status = http.post("/api/jobs", **kw).status_code
                        with lock:
                            bad[f"{what} -> {status}"] = bad.get(f"{what} -> {status}", 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server.should_exit = True

    ms = sorted(1000 * x for x in latencies)
    pct = (lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]) if ms else (lambda q: float("nan"))
    report = {
        "clients": args.clients, "requests_per_client": args.requests, "samples_per_request": args.n,
        "run": run, "served": len(latencies), "failures": len(failures), "failure_examples": failures[:5],
        "bad_requests": bad, "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {"p50": round(pct(0.5), 1), "p95": round(pct(0.95), 1), "max": round(ms[-1] if ms else 0, 1),
                       "mean": round(statistics.fmean(ms), 1) if ms else None},
        "cpu_threads": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
