"""A job's life cycle, as both ends name it."""

from __future__ import annotations

import enum


class JobPhase(str, enum.Enum):
    """Where a job is in its life; the values are what travels on the wire and is stored."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The backend stopped (or its worker died) before the job finished.
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value

    @property
    def active(self) -> bool:
        return self in (JobPhase.QUEUED, JobPhase.RUNNING)
