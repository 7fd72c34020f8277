"""Jobs in memory and the queue in front of the single GPU worker."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from blend123.protocol.job_phase import JobPhase
from blend123.protocol.messages import Message

from .jobstore import JobRecord


@dataclass
class Job:
    id: str
    kind: str
    owner: bytes  # the submitting identity (see ``app.Identity``); only it may see the job
    # The decoded request while the job runs. Queued jobs keep theirs on disk only, so a
    # long queue of large images does not pin memory.
    request: Message | None = None
    request_bytes: int = 0
    stored_bytes: int = 0
    state: JobPhase = JobPhase.QUEUED
    stage: str = ""
    fraction: float = 0.0
    seq: int = 0
    error: str = ""
    created: float = field(default_factory=time.time)
    started: float = 0.0
    stage_started: float = 0.0
    last_step: float = 0.0
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.state.active

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id, kind=self.kind, state=self.state, owner=self.owner.hex(), stage=self.stage,
            fraction=self.fraction, last_seq=self.seq, error=self.error, created=self.created,
            started=self.started, request_bytes=self.request_bytes, stored_bytes=self.stored_bytes,
        )


class JobQueue:
    """FIFO of queued jobs; the worker blocks on :meth:`take`."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job) -> int:
        """Queue ``job``; returns its position (0 = next)."""
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
            return len(self._jobs) - 1

    def take(self, timeout: float = 0.5) -> Job | None:
        with self._cond:
            if not self._jobs and not self._closed:
                self._cond.wait(timeout)
            return self._jobs.popleft() if self._jobs else None

    def remove(self, job: Job) -> bool:
        with self._cond:
            try:
                self._jobs.remove(job)
                return True
            except ValueError:
                return False

    def position(self, job: Job) -> int:
        with self._cond:
            try:
                return self._jobs.index(job)
            except ValueError:
                return -1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
