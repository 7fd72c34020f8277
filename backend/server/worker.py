"""The worker thread: runs one job at a time and streams its events through the outbox.

It depends on the job queue, the job store and the outbox, not on the server. It cannot
die of a job: every exception ends that job with a clear error, a failure while reporting
a failure is logged and contained, and a full disk ends the job with ``disk_full`` and
removes its partial results. Should the thread stop anyway, the server's supervisor
starts a new one (:meth:`Server._supervise`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import zmq

from blend123.protocol import codec
from blend123.protocol.errors import BAD_IMAGE, DISK_FULL, INTERNAL, JOB_FAILED, UNKNOWN_JOB, ProtocolError
from blend123.protocol.job_phase import JobPhase
from blend123.protocol.messages import Done, Error, Message, NovelView, Orbit, Progress, Reconstruct
from blend123.protocol.settings import is_quick_proxy

from ..cpu_share import RecentLoad
from ..device import loaded_torch
from ..images import ImageError
from ..progress import STILL_WORKING, JobCancelled, StageClock, load_pace, quiet_machine
from ..synthesis.registry import ResidentModel, free_accelerator_memory
from ..tasks import TaskContext, run_task
from .jobs import Job, JobQueue
from .jobstore import JobStore, is_disk_full, is_job_id
from .outbox import Outbox
from .stage_memory import StageMemory

log = logging.getLogger("blend123.worker")

#: Benchmark seconds of work a job must do before its pace stands for the machine's.
PACE_FROM_WORK_S = 0.5
#: Orbits whose object's cost is remembered for the mesh jobs made from them.
_OBJECT_COSTS_KEPT = 64


def _weighed_by_the_benchmark(request: Message | None) -> bool:
    """Jobs whose stages ``STAGE_SECONDS`` measured: a reconstruction, the quick proxy's
    views. A diffusion model's views (or its SDS guidance in the fit) take far longer than
    their weight, so their pace says nothing of the machine's."""
    if isinstance(request, Reconstruct):
        return not request.sds_model
    return isinstance(request, (Orbit, NovelView)) and is_quick_proxy(request.settings.model)


@dataclass
class Outcome:
    state: JobPhase
    code: str = ""
    message: str = ""
    hint: str = ""


class Worker(threading.Thread):
    def __init__(
        self,
        queue: JobQueue,
        store: JobStore,
        outbox: Outbox,
        context: zmq.Context,
        wake_endpoint: str,
        *,
        progress_rate_hz: float = 20.0,
        models: ResidentModel | None = None,
        on_job_end: Callable[[Job], None] = lambda job: None,
        beside: threading.Thread | None = None,
        stage_memory: StageMemory | None = None,
        load: RecentLoad | None = None,
    ) -> None:
        super().__init__(name="blend123-worker", daemon=True)
        self.queue = queue
        self.store = store
        self.outbox = outbox
        self.models = models or ResidentModel()
        self.current: Job | None = None
        self.progress_rate_hz = progress_rate_hz
        self.on_job_end = on_job_end
        self._context = context
        self._wake_endpoint = wake_endpoint
        self._wake: zmq.Socket | None = None
        self._stopping = threading.Event()
        # For the progress bar's first estimate: how busy the machine is as a job starts,
        # and what its stages took in the jobs before (its pace, the stages' weights).
        self._load = load or RecentLoad()
        self.stage_memory = stage_memory or StageMemory()
        # What each recent quick-proxy orbit showed its object to cost, by job id: the mesh
        # job made from it starts from that (lost on a restart: it then starts from 1).
        self._object_costs: dict[str, float] = {}
        # Work the process does beside its jobs (importing torch and the speed probe at
        # start-up): a job that shared the CPU with it ran slower than the machine will.
        self.beside = beside

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        # This thread's own socket: ZeroMQ sockets are not shared between threads.
        self._wake = self._context.socket(zmq.PUSH)
        self._wake.linger = 0
        self._wake.connect(self._wake_endpoint)
        try:
            while not self._stopping.is_set():
                job = self.queue.take()
                if job is not None:
                    self._run(job)
        finally:
            if self._stopping.is_set():
                self.models.release()
            self._wake.close(0)

    # --- one job ------------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        if job.cancel_requested.is_set():
            self.finish(job, JobPhase.CANCELLED)
            return
        self.current = job
        outcome, peak = Outcome(JobPhase.FAILED, INTERNAL, "the job could not start", "see the backend's log"), 0
        try:
            outcome, peak = self._execute(job)
        except BaseException as exc:  # noqa: BLE001 - the worker must outlive any job
            log.exception("job %s failed outside its task", job.id)
            outcome = _outcome_of(exc)
        finally:
            self.current = None
            if outcome.state is JobPhase.FAILED:
                self.fail(job, outcome.code, outcome.message, outcome.hint)
            else:
                self.finish(job, outcome.state, peak)

    def _execute(self, job: Job) -> tuple[Outcome, int]:
        job.state, job.started = JobPhase.RUNNING, time.time()
        job.last_step = job.stage_started = time.monotonic()
        self._save(job)
        # Queued jobs wait on disk; the request comes back into memory only now.
        job.request = codec.decode(self.store.read_request(job.id)).message
        cuda = _cuda()
        if cuda:
            cuda.reset_peak_memory_stats()
        alone = self.beside is None or not self.beside.is_alive()
        free, cpus = self._load.free(), self._load.cpus
        memory = self.stage_memory
        source = job.request.source_job if isinstance(job.request, Reconstruct) else ""
        clock = memory.clock(job.kind, load_pace(free, cpus), quiet_machine(free, cpus), self._object_costs.get(source, 1.0))
        # Only an orbit that ran as the benchmark's did shows the object's cost: by the wall
        # clock alone; beside the start-up's imports (a command's own backend) by its own
        # thread's CPU time, once the machine's pace is known (timed, or probed), and only
        # on a quiet machine: beside busy processes that time grew too (the duck's `convert`
        # bar: 17-37% at worst over four runs against 17-24% without it).
        beside_ok = quiet_machine(free, cpus) and (memory.timed or memory.probed)
        shows_the_object = isinstance(job.request, Orbit) and _weighed_by_the_benchmark(job.request) and (alone or beside_ok)
        cost_of = functools.partial(clock.object_cost_shown, own_cpu=True, pace=memory.pace) if not alone else clock.object_cost_shown
        ctx = TaskContext(
            job_id=job.id,
            folder=self.store.folder(job.id),
            progress=self._progress_fn(job, clock, cost_of if shows_the_object else None),
            plan=clock.plan,
            emit=lambda msg: self.emit(job, msg),
            models=self.models,
            source_events=lambda job_id: self._source_events(job, job_id),
            source_request=lambda job_id: self._source_request(job, job_id),
        )
        # Decide the outcome first; announce it only once the job's memory is released,
        # so that a client seeing "done" or "cancelled" can rely on the GPU being free.
        try:
            run_task(job.request, ctx)
            outcome = Outcome(JobPhase.DONE)
            clock.finish(time.time() - job.started, time.thread_time())
            if alone and clock.worked_s >= PACE_FROM_WORK_S and _weighed_by_the_benchmark(job.request):
                memory.learn(clock)  # how fast this machine went, and where its time went
                memory.save()
            cost = cost_of() if shows_the_object else None
            if cost is not None:
                self._remember_object_cost(job.id, cost)
        except JobCancelled:
            outcome = Outcome(JobPhase.CANCELLED)
        except Exception as exc:
            outcome = _outcome_of(exc)
            if outcome.code == INTERNAL or outcome.code == JOB_FAILED:
                log.exception("job %s failed", job.id)
        peak = cuda.max_memory_allocated() if cuda else 0
        ctx = None  # drop the job's arrays before freeing accelerator memory
        job.request = None
        free_accelerator_memory()
        return outcome, peak

    def _remember_object_cost(self, job_id: str, cost: float) -> None:
        self._object_costs[job_id] = cost
        while len(self._object_costs) > _OBJECT_COSTS_KEPT:
            del self._object_costs[next(iter(self._object_costs))]  # the oldest

    def _progress_fn(self, job: Job, clock: StageClock, cost_of: Callable[[], float | None] | None = None):
        """The job's ``progress``: cancel, clock, events. ``cost_of``: what the object costs
        as the job shows it so far, for an orbit that shows it (else None)."""
        min_interval = 1.0 / self.progress_rate_hz
        last_sent = [0.0]

        def progress(stage: str, fraction: float) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled(job.id)
            now = time.monotonic()
            if fraction == STILL_WORKING:  # a wait with no steps to count: alive, no news
                job.last_step = now
                return
            new_stage = stage != job.stage
            if new_stage:
                job.stage, job.stage_started = stage, now
                self._save(job)
            job.fraction, job.last_step = fraction, now
            if new_stage or now - last_sent[0] >= min_interval or fraction >= 1.0:
                last_sent[0] = now
                elapsed = time.time() - job.started
                overall, eta = clock.update(stage, float(fraction), elapsed, time.thread_time())
                cost = cost_of() if cost_of else None
                self.emit(job, Progress(job.id, stage, float(fraction), eta, elapsed, overall=overall, object_cost=cost or -1.0))

        return progress

    def _source_events(self, job: Job, source_id: str) -> list[Message]:
        """The decoded results of the submitter's own earlier job (reconstruct from an orbit)."""
        self._check_source(job, source_id)
        return [codec.decode(frames).message for _, frames in self.store.events(source_id)]

    def _source_request(self, job: Job, source_id: str) -> Message:
        self._check_source(job, source_id)
        try:
            return codec.decode(self.store.read_request(source_id)).message
        except (OSError, ProtocolError, ValueError):
            raise ProtocolError(UNKNOWN_JOB, f"the inputs of job {source_id} are gone", "run the orbit again") from None

    def _check_source(self, job: Job, source_id: str) -> None:
        record = self.store.read(source_id) if is_job_id(source_id) else None
        if record is None or record.owner != job.owner.hex():
            raise ProtocolError(UNKNOWN_JOB, f"no job {source_id[:40]!r} of yours on this backend", "run an orbit first and pass its job id")

    # --- events -------------------------------------------------------------------------------

    def emit(self, job: Job, msg: Message) -> None:
        """Number, store (results) and post an event; raises OSError when it cannot be stored."""
        msg.seq = job.next_seq()
        frames = codec.encode(msg)
        if isinstance(msg, Progress):
            self.outbox.post(job.id, msg.seq, frames)
        else:
            self.store.append_event(job.id, msg.seq, frames)
            self.outbox.post(job.id, msg.seq, None)
        self._wake_up()

    def finish(self, job: Job, state: JobPhase, peak_memory: int = 0) -> None:
        job.state, job.request = state, None
        self._end(job, Done(job.id, state.value, time.time() - (job.started or job.created), peak_memory))

    def fail(self, job: Job, code: str, message: str, hint: str) -> None:
        job.state, job.error, job.request = JobPhase.FAILED, message, None
        self._end(job, Error(code, message, hint, job_id=job.id), discard=code == DISK_FULL)

    def _end(self, job: Job, msg: Done | Error, discard: bool = False) -> None:
        """Store and announce a job's end; whatever fails here, subscribers still hear of it.

        ``discard``: remove the job's partial results (on a full disk they help nobody, and
        the space they hold is what the next job needs).
        """
        msg.seq = job.next_seq()
        frames = codec.encode(msg)
        stored = False
        if not discard:
            try:
                self.store.append_event(job.id, msg.seq, frames)
                stored = True
            except OSError as exc:
                log.error("could not store the end of job %s: %s", job.id, exc)
                discard = is_disk_full(exc)
        if discard:
            self.store.delete(job.id)
        else:
            if job.state in (JobPhase.FAILED, JobPhase.CANCELLED):
                self.store.drop_request(job.id)  # nobody will run it again
            job.stored_bytes = self.store.size_bytes(job.id)  # counts against its owner's disk quota
            try:
                self._save(job)
            except OSError as exc:
                log.error("could not record the end of job %s: %s", job.id, exc)
        # Announced last: a client that sees the end finds the job's record final.
        self.outbox.post(job.id, msg.seq, None if stored else frames, ends_job=True)
        with contextlib.suppress(Exception):
            self.on_job_end(job)
        self._wake_up()

    def _save(self, job: Job) -> None:
        self.store.write(job.record())

    def _wake_up(self) -> None:
        if threading.current_thread() is self and self._wake is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._wake.send(b"", zmq.NOBLOCK)


def _outcome_of(exc: BaseException) -> Outcome:
    """How a job that raised ``exc`` ended, in words a user can act on."""
    if isinstance(exc, JobCancelled):
        return Outcome(JobPhase.CANCELLED)
    if isinstance(exc, ProtocolError):
        return Outcome(JobPhase.FAILED, exc.code, exc.message, exc.hint)
    if isinstance(exc, ImageError):
        return Outcome(JobPhase.FAILED, BAD_IMAGE, exc.message, exc.hint)
    if is_disk_full(exc):
        return Outcome(
            JobPhase.FAILED, DISK_FULL, "the backend's disk is full",
            "free space on the disk that holds the backend's jobs folder (or lower --keep-days / --max-jobs-gb), then submit again",
        )
    if isinstance(exc, MemoryError):
        return Outcome(JobPhase.FAILED, JOB_FAILED, "the backend ran out of memory", "use a smaller resolution, fewer views or a smaller texture")
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return Outcome(JobPhase.FAILED, JOB_FAILED, "the GPU ran out of memory", "close other GPU programs or lower the resolution")
    if isinstance(exc, Exception):
        return Outcome(JobPhase.FAILED, JOB_FAILED, f"{type(exc).__name__}: {exc}", "see the backend's log for details")
    return Outcome(JobPhase.FAILED, INTERNAL, f"the worker was stopped by {type(exc).__name__}", "see the backend's log")


def _cuda():
    torch = loaded_torch()
    return torch.cuda if torch is not None and torch.cuda.is_available() else None
