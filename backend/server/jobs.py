"""Jobs and the queue in front of the single GPU worker."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from blend123.protocol.messages import Message

ACTIVE_STATES = ("queued", "running")


@dataclass
class Job:
    id: str
    kind: str
    request: Message | None  # dropped once the job ends: finished jobs must not pin images
    owner: bytes  # the client's key (CURVE public key, or its routing id on loopback)
    subscribers: set[bytes] = field(default_factory=set)  # routing ids that get the stream
    state: str = "queued"
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
        return self.state in ACTIVE_STATES

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


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
