"""The worker thread: runs one job at a time and streams its events to the socket thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import zmq

from blend123.protocol.errors import BAD_IMAGE, JOB_FAILED, ProtocolError
from blend123.protocol.messages import Done, Error, Message, Progress

from ..images import ImageError
from ..progress import JobCancelled
from ..synthesis.registry import ResidentModel, free_accelerator_memory
from ..tasks import TaskContext, run_task
from .jobs import Job

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("blend123.worker")


class Worker(threading.Thread):
    def __init__(self, server: Server, wake_endpoint: str) -> None:
        super().__init__(name="blend123-worker", daemon=True)
        self.server = server
        self.models = ResidentModel()
        self.current: Job | None = None
        self._wake_endpoint = wake_endpoint
        self._wake: zmq.Socket | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        # This thread's own socket: ZeroMQ sockets are not shared between threads.
        self._wake = self.server.context.socket(zmq.PUSH)
        self._wake.linger = 0
        self._wake.connect(self._wake_endpoint)
        try:
            while not self._stopping.is_set():
                job = self.server.queue.take()
                if job is not None:
                    self._run(job)
        finally:
            self.models.release()
            self._wake.close(0)

    # --- one job ------------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        if job.cancel_requested.is_set():
            self.finish(job, "cancelled")
            return
        self.current = job
        job.state, job.started = "running", time.time()
        job.last_step = job.stage_started = time.monotonic()
        self._save_state(job)
        cuda = _cuda()
        if cuda:
            cuda.reset_peak_memory_stats()
        ctx = TaskContext(
            job_id=job.id,
            folder=self.server.store.folder(job.id),
            progress=self._progress_fn(job),
            emit=lambda msg: self.emit(job, msg),
            models=self.models,
            source_events=self.server.stored_results,
            source_request=self.server.stored_request,
        )
        # Decide the outcome first; announce it only once the job's memory is released,
        # so that a client seeing "done" or "cancelled" can rely on the GPU being free.
        outcome: tuple[str, ...]
        try:
            run_task(job.request, ctx)
            outcome = ("done",)
        except JobCancelled:
            outcome = ("cancelled",)
        except ProtocolError as exc:
            outcome = ("failed", exc.code, exc.message, exc.hint)
        except ImageError as exc:
            outcome = ("failed", BAD_IMAGE, exc.message, exc.hint)
        except MemoryError:
            outcome = ("failed", JOB_FAILED, "the backend ran out of memory", "use a smaller resolution, fewer views or a smaller texture")
        except Exception as exc:
            log.exception("job %s failed", job.id)
            if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                outcome = ("failed", JOB_FAILED, "the GPU ran out of memory", "close other GPU programs or lower the resolution")
            else:
                outcome = ("failed", JOB_FAILED, f"{type(exc).__name__}: {exc}", "see the backend's log for details")
        peak = cuda.max_memory_allocated() if cuda else 0
        ctx = None  # drop the job's arrays before freeing accelerator memory
        free_accelerator_memory()
        self.current = None
        if outcome[0] == "failed":
            self.fail(job, *outcome[1:])
        else:
            self.finish(job, outcome[0], peak)

    def _progress_fn(self, job: Job):
        min_interval = 1.0 / self.server.config.progress_rate_hz
        last_sent = [0.0]

        def progress(stage: str, fraction: float) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled(job.id)
            now = time.monotonic()
            if stage != job.stage:
                job.stage, job.stage_started = stage, now
                self._save_state(job)
            job.fraction, job.last_step = fraction, now
            if now - last_sent[0] >= min_interval or fraction >= 1.0:
                last_sent[0] = now
                spent = now - job.stage_started
                eta = spent * (1.0 - fraction) / fraction if fraction > 0.0 else -1.0
                self.emit(job, Progress(job.id, stage, float(fraction), eta, time.time() - job.started))

        return progress

    # --- events -------------------------------------------------------------------------------

    def emit(self, job: Job, msg: Message) -> None:
        msg.seq = job.next_seq()
        self.server.publish(job, msg, persist=not isinstance(msg, Progress))
        if threading.current_thread() is self:
            self._wake.send(b"", zmq.NOBLOCK)

    def finish(self, job: Job, state: str, peak_memory: int = 0) -> None:
        job.state, job.request = state, None  # the inputs live on in the jobs folder
        self.emit(job, Done(job.id, state, time.time() - (job.started or job.created), peak_memory))
        self._save_state(job)

    def fail(self, job: Job, code: str, message: str, hint: str) -> None:
        job.state, job.error, job.request = "failed", message, None
        self.emit(job, Error(code, message, hint, job_id=job.id))
        self._save_state(job)

    def _save_state(self, job: Job) -> None:
        self.server.store.write_state(
            job.id,
            {"id": job.id, "kind": job.kind, "state": job.state, "stage": job.stage, "fraction": job.fraction,
             "last_seq": job.seq, "error": job.error, "created": job.created, "started": job.started},
        )


def _cuda():
    import sys

    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None
