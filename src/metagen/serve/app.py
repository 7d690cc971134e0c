"""`metagen serve`: a local web app over trained run folders. Upload or draw k examples, get samples back.

FastAPI (not Gradio): a small, explicit HTTP API that scripts and tests can call as well as the page, limits
we control (upload sizes, file counts, queue length), and few dependencies that change slowly.

    GET  /                       the page
    GET  /api/runs               the served runs and the default one
    POST /api/jobs               multipart: run, n, seed, temperature, support (files) and/or text -> a job id
    GET  /api/jobs/{id}?wait=S   the job's progress; when done, links to its samples, grid and zip
    GET  /api/jobs/{id}/sample/{i}.png | grid.png | samples.zip
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from metagen.errors import DataError, MetagenError, one_line
from metagen.serve.generate import Result, generate, image_support, text_support, tune_support, zip_result
from metagen.serve.jobs import Busy, Job, JobQueue
from metagen.serve.runs import RunRegistry, UnknownRun

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Limits:
    max_files: int = 64  # support examples per request
    max_file_bytes: int = 5 * 2**20  # per uploaded file
    max_body_bytes: int = 48 * 2**20  # a whole request
    max_samples: int = 200  # n per request
    max_text_chars: int = 200_000  # the text field
    max_pending: int = 64  # jobs waiting or running
    max_wait_s: float = 60.0  # the longest ?wait= a client may ask for


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app parses any of it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(self.limit, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):  # chunked: read it under the limit
            body, more = b"", True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.limit:
                    return await _too_large(self.limit, send)
            replayed = False

            async def receive_again() -> dict:
                nonlocal replayed
                if replayed:
                    return {"type": "http.disconnect"}
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, receive_again, send)
        return await self.app(scope, receive, send)


async def _too_large(limit: int, send: Any) -> None:
    resp = JSONResponse({"error": f"the request is larger than {limit // 2**20} MiB; send fewer or smaller files"},
                        status_code=413)
    await resp({"type": "http"}, None, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


def create_app(roots: list[Path], limits: Limits | None = None, default_run: str | None = None) -> FastAPI:
    """The app over the run folders below `roots` (e.g. [Path("runs")])."""
    limits = limits or Limits()
    registry = RunRegistry(roots)
    jobs = JobQueue(max_pending=limits.max_pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()

    app = FastAPI(title="metagen", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.registry, app.state.jobs, app.state.limits = registry, jobs, limits
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(UnknownRun)
    async def _unknown(request: Request, e: UnknownRun) -> JSONResponse:
        return _error(404, str(e))

    @app.exception_handler(Busy)
    async def _busy(request: Request, e: Busy) -> JSONResponse:
        resp = _error(503, str(e))
        resp.headers["Retry-After"] = "2"
        return resp

    @app.exception_handler(MetagenError)
    async def _bad_input(request: Request, e: MetagenError) -> JSONResponse:
        return _error(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 404 and e.detail == "Not Found":  # no route
            return _error(404, f"no page '{request.url.path[:80]}'; the app is at / and its API under /api/runs")
        if e.status_code == 405:
            return _error(405, f"{request.method} is not allowed on '{request.url.path[:80]}'")
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(e).__name__}); the server keeps running")

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("metagen.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        found = registry.scan()
        default = default_run if default_run in found else _pick_default(found)
        hint = None if found else (f"no trained runs under {', '.join(r.name + '/' for r in registry.roots)}: "
                                   "make one with `make demo` (about 5 minutes), or pass `metagen serve --runs DIR`")
        return {"runs": [info.public() for info in found.values()], "default": default, "hint": hint}

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        try:
            form = await request.form(max_files=limits.max_files, max_fields=16,
                                      max_part_size=limits.max_text_chars * 4)
        except (MultiPartException, HTTPException) as e:  # Starlette may wrap the parser's error
            msg = str(getattr(e, "detail", e))
            if "files" in msg.lower():
                msg = f"too many files: at most {limits.max_files} support examples per request"
            raise DataError(msg) from None
        run = _field(form, "run", str, None)
        n = _field(form, "n", int, 16)
        seed = _field(form, "seed", int, 0)
        temperature = _field(form, "temperature", float, 1.0)
        if run is None:
            raise DataError("say which run to use: the form field 'run' (see GET /api/runs)")
        if not 1 <= n <= limits.max_samples:
            raise DataError(f"n must be between 1 and {limits.max_samples}, got {n}")
        if not (math.isfinite(temperature) and 0 < temperature <= 10):
            raise DataError(f"temperature must be in (0, 10], got {temperature}")
        uploads = []
        for item in form.getlist("support"):
            if not isinstance(item, UploadFile):
                continue
            data = await item.read(limits.max_file_bytes + 1)
            name = _safe_name(item.filename)
            if len(data) > limits.max_file_bytes:
                raise DataError(f"'{name}' is larger than {limits.max_file_bytes // 2**20} MiB; send a smaller image")
            uploads.append((name, data))
        text = _field(form, "text", str, "")
        return await run_in_threadpool(_queue_job, run, n, seed, temperature, uploads, text)

    def _queue_job(run: str, n: int, seed: int, temperature: float, uploads: list[tuple[str, bytes]],
                   text: str) -> dict[str, Any]:
        info = registry.get(run)
        learner, ckpt = registry.learner(info)
        if info.kind == "tunes":
            support = tune_support(uploads, text, ckpt)
        elif info.kind == "text":
            from metagen.data.text import split_entries

            texts = split_entries(text) + [t for _, data in uploads
                                           for t in split_entries(data.decode("utf-8", errors="replace"))]
            support = text_support(texts, ckpt)
        else:
            support = image_support(uploads, ckpt)
        job = jobs.submit(run, n, lambda job: generate(job, info, learner, ckpt, support, n, seed, temperature))
        return job.public()

    def _job(job_id: str) -> Job:
        job = jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job '{job_id[:40]}'; jobs are kept for the {jobs.keep} newest requests")
        return job

    def _result(job_id: str) -> Result:
        job = _job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}, not done; poll GET /api/jobs/{job_id}")
        return job.result

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str, wait: float = 0.0) -> dict[str, Any]:
        job = _job(job_id)
        if wait > 0:
            job.finished.wait(min(wait, limits.max_wait_s))
        out = job.public()
        if job.status == "done":
            res: Result = job.result
            base = f"/api/jobs/{job.id}"
            out["seconds"] = round(res.seconds, 3)
            out["zip"] = f"{base}/samples.zip"
            if res.kind == "image":
                out["samples"] = [f"{base}/sample/{i}.png" for i in range(len(res.samples))]
                out["grid"] = f"{base}/grid.png"
            else:
                out["texts"] = res.samples
        return out

    @app.get("/api/jobs/{job_id}/sample/{index}.png")
    def sample_png(job_id: str, index: int) -> Response:
        res = _result(job_id)
        if res.kind != "image" or not 0 <= index < len(res.samples):
            raise HTTPException(404, f"job {job_id} has no image sample {index}")
        return Response(res.samples[index], media_type="image/png")

    @app.get("/api/jobs/{job_id}/grid.png")
    def grid_png(job_id: str) -> Response:
        res = _result(job_id)
        if res.grid is None:
            raise HTTPException(404, f"job {job_id} made texts, not images")
        return Response(res.grid, media_type="image/png")

    @app.get("/api/jobs/{job_id}/samples.zip")
    def samples_zip(job_id: str) -> Response:
        job = _job(job_id)
        data = zip_result(_result(job_id), job.run)
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", job.run).strip("-") or "samples"
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}-samples.zip"'})

    return app


def _pick_default(found: dict[str, Any]) -> str | None:
    """The demo's spatial run if it is there, else the first image run, else the first run."""
    for run_id in found:
        if run_id.endswith("demo/spatial"):
            return run_id
    images = [k for k, v in found.items() if v.kind == "image"]
    return (images or list(found) or [None])[0]


def _field(form: Any, key: str, kind: type, default: Any) -> Any:
    value = form.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise DataError(f"form field '{key}' must be a value, not a file")
    try:
        return kind(value)
    except ValueError:
        raise DataError(f"form field '{key}' must be {kind.__name__}, got {value[:40]!r}") from None


def _safe_name(name: str | None) -> str:
    """An uploaded file's name as shown in messages: its last path part, printable, at most 80 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = one_line(base).strip()[:80]
    return base or "upload"
