"""A bounded queue of generation jobs run one at a time by a worker thread, with progress for the page."""

from __future__ import annotations

import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metagen.errors import MetagenError, one_line


class Busy(MetagenError):
    """The queue is full."""


@dataclass
class Job:
    id: str
    run: str
    total: int  # samples asked for
    status: str = "queued"  # queued -> running -> done | failed
    stage: str = "waiting"  # what it is doing now, for the page
    done: int = 0  # samples made so far
    error: str | None = None
    result: Any = None  # the finished outputs (see metagen.serve.generate)
    created: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "run": self.run, "status": self.status, "stage": self.stage, "done": self.done,
                "total": self.total, "error": self.error}


Work = Callable[[Job], Any]  # runs in the worker thread, updates job.stage / job.done, returns the result


class JobQueue:
    """Jobs wait in a FIFO of at most `max_pending`; finished ones are kept (the `keep` newest) for download."""

    def __init__(self, max_pending: int = 64, keep: int = 256) -> None:
        self.max_pending, self.keep = max_pending, keep
        self._queue: queue.Queue[tuple[Job, Work] | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="metagen-jobs", daemon=True)
        self._worker.start()

    def submit(self, run: str, total: int, work: Work) -> Job:
        with self._lock:
            pending = sum(j.status in ("queued", "running") for j in self._jobs.values())
            if pending >= self.max_pending:
                raise Busy(f"the server is busy ({pending} jobs waiting); try again in a few seconds")
            job = Job(uuid.uuid4().hex, run, total)
            self._jobs[job.id] = job
            self._forget_old()
        self._queue.put((job, work))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._queue.put(None)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished.is_set()]
        for job in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            job, work = item
            job.status, job.stage = "running", "starting"
            try:
                job.result = work(job)
                job.status, job.stage = "done", "done"
            except MetagenError as e:
                job.status, job.error = "failed", one_line(str(e))
            except Exception as e:  # a bug: the server keeps serving, the page shows what happened
                traceback.print_exc()
                job.status, job.error = "failed", one_line(f"internal error ({type(e).__name__}: {e})")
            finally:
                job.finished.set()
