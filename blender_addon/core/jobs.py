"""Bookkeeping of running jobs and of the live preview: plain Python, no bpy.

The UI path feeds :meth:`JobTracker.route` with whatever ``Client.poll`` returned; the
tracker says which events to apply to the scene and keeps the progress and errors the
panel shows. The live preview keeps only its newest request: results of older ones are
dropped (and the older jobs cancelled) so a moving camera never shows a stale view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..protocol.job_progress import ChainProgress
from ..protocol.messages import Done, Error, Message, Progress

#: Job purposes.
PREVIEW, LIVE, ORBIT, MESH = "preview", "live", "orbit", "mesh"


@dataclass
class JobInfo:
    job_id: str
    purpose: str
    #: What the scene side needs to place results (camera name, frame, collection...).
    context: dict[str, Any] = field(default_factory=dict)
    stage: str = "queued"
    fraction: float = 0.0
    eta_s: float = -1.0
    results: int = 0
    #: Lived through a lost connection and is still known to the backend: Resume fetches it.
    resumable: bool = False
    #: Jobs that follow one another on one progress bar (Make Mesh: orbit, then mesh), and
    #: this job's place among them.
    chain: ChainProgress | None = None
    step: int = 0


@dataclass
class Routed:
    """What to do with one event: apply it (``job`` set), or nothing (stale, bookkeeping)."""

    event: Message
    job: JobInfo | None
    finished: bool = False
    error: str = ""


class JobTracker:
    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.live_job: str = ""  # the newest live-preview job; results of others are stale
        self.last_error: str = ""
        self.last_hint: str = ""

    def add(self, job_id: str, purpose: str, chain: ChainProgress | None = None, step: int = 0, **context: Any) -> JobInfo:
        info = JobInfo(job_id, purpose, dict(context), chain=chain, step=step)
        self.jobs[job_id] = info
        if purpose == LIVE:
            self.live_job = job_id
        return info

    def stale_live_jobs(self) -> list[str]:
        """Older live-preview jobs still running: cancel them, nobody waits for them."""
        return [j for j, info in self.jobs.items() if info.purpose == LIVE and j != self.live_job]

    def is_stale(self, job_id: str) -> bool:
        info = self.jobs.get(job_id)
        return info is not None and info.purpose == LIVE and job_id != self.live_job

    def route(self, event: Message) -> Routed:
        job_id = getattr(event, "job_id", "")
        info = self.jobs.get(job_id)
        if info is None:
            if isinstance(event, Error) and not job_id:  # not a job's error: the connection's
                self.set_error(event.message, event.hint)
            return Routed(event, None)
        stale = self.is_stale(job_id)
        if isinstance(event, Progress):
            info.stage = event.stage
            if info.chain is not None:
                info.fraction, info.eta_s = info.chain.update(info.step, event)
            else:  # the whole job's fraction; an older backend sends the stage's only
                info.fraction = float(event.overall if event.overall >= 0 else event.fraction)
                info.eta_s = float(event.eta_s)
            return Routed(event, None)
        if isinstance(event, (Done, Error)):
            del self.jobs[job_id]
            if isinstance(event, Error):
                if stale:
                    return Routed(event, None, finished=True)
                self.set_error(event.message, event.hint)
                return Routed(event, info, finished=True, error=event.message)
            return Routed(event, None if stale else info, finished=True)
        if stale:
            return Routed(event, None)
        info.results += 1
        return Routed(event, info)

    def set_error(self, message: str, hint: str = "") -> None:
        self.last_error, self.last_hint = message, hint

    def clear_error(self) -> None:
        self.last_error = self.last_hint = ""

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def summary(self) -> tuple[str, float, float]:
        """(label, fraction, eta) of the job the progress bar shows (the oldest running)."""
        current = [info for job_id, info in self.jobs.items() if not self.is_stale(job_id)]
        if not current:
            return "", 0.0, -1.0
        info = current[0]
        return f"{info.purpose}: {info.stage}", info.fraction, info.eta_s


def format_eta(eta_s: float) -> str:
    if eta_s < 0:
        return ""
    if eta_s < 60:
        return f"{eta_s:.0f} s left"
    return f"{eta_s / 60:.0f} min left"


@dataclass
class LivePreview:
    """Debounce camera motion: request once the camera has rested for ``debounce_s``.

    ``key`` is anything comparable describing the camera (its matrix and lens, rounded).
    """

    debounce_s: float = 0.35
    _seen_key: Any = None
    _seen_at: float = 0.0
    _requested_key: Any = None

    def observe(self, key: Any, now: float) -> bool:
        """True when a request for ``key`` should be sent now."""
        if key != self._seen_key:
            self._seen_key, self._seen_at = key, now
            return False
        if key == self._requested_key or now - self._seen_at < self.debounce_s:
            return False
        self._requested_key = key
        return True

    def reset(self) -> None:
        self._seen_key = self._requested_key = None
