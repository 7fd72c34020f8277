"""The two ways a job's events reach the scene, through the same tracker and ``results``.

* UI: :func:`pump` runs from the timer on the main thread; it drains a bounded number of
  events per call (``Client.poll`` never blocks). No threads.
* Background (``bpy.app.background``, ``blender -b``, the ``bpy`` module): timers never
  fire there, so :func:`run_blocking` waits on ``Client.events`` instead.
"""

from __future__ import annotations

from typing import Callable

from . import results
from .core.jobs import JobInfo, Routed
from .errors import JobFailed
from .protocol.errors import TIMEOUT, ProtocolError
from .protocol.messages import Error, Message
from .reports import report
from .session import Session

#: Events applied per timer tick: keeps each tick short so the UI stays responsive.
EVENTS_PER_TICK = 8


def _connection_alarm(event: Message) -> bool:
    """The client's own "backend silent" alarm for a job: the connection's problem, not the
    job's end (the session reports it, and the job is resumed or reported lost later)."""
    return isinstance(event, Error) and event.code == TIMEOUT and bool(event.job_id)


def handle(s: Session, event: Message) -> Routed:
    """Route one event and apply it; a failure is reported and shown, never raised."""
    routed = s.tracker.route(event)
    try:
        follow_up = results.apply(routed)
        if follow_up is not None:
            report("INFO", f"{follow_up.purpose} job {follow_up.job_id[:8]} queued")
    except JobFailed as exc:
        s.tracker.set_error(exc.message, exc.hint)
        report("ERROR", exc.message, exc.hint)
    if routed.error:
        message, hint = results.ended_badly(routed)
        s.tracker.set_error(message, hint)
        report("ERROR", message, hint)
    return routed


def pump(s: Session, max_events: int = EVENTS_PER_TICK) -> int:
    """One timer tick: the connection's health, then at most ``max_events`` events."""
    if s.connecting:
        s.poll_connect()
        return 0
    events = s.check_health()
    if s.client is None or s.server is None:
        return 0
    received = s.client.poll(max_events)
    if any(not _connection_alarm(event) for event in received):
        s.heard()
    for event in events + received:
        if _connection_alarm(event):
            s.mark_lost()
            continue
        handle(s, event)
    for job_id in s.tracker.stale_live_jobs():  # latest wins: stop the others
        try:
            s.client.cancel(job_id)
        except ProtocolError:
            pass
        s.tracker.forget(job_id)
    return len(received)


def run_blocking(s: Session, info: JobInfo, on_event: Callable[[Message], None] | None = None) -> list[Routed]:
    """Wait for a job and apply its events (background mode). Raises JobFailed."""
    client = s.require()
    applied: list[Routed] = []
    try:
        for event in client.events(info.job_id):
            if on_event is not None:
                on_event(event)
            routed = s.tracker.route(event)
            follow_up = results.apply(routed)
            applied.append(routed)
            if routed.error:
                message, hint = results.ended_badly(routed)
                raise JobFailed(message, hint, str(getattr(event, "code", "")))
            if follow_up is not None:
                applied += run_blocking(s, follow_up, on_event)
    except ProtocolError as exc:
        # The backend went silent: label what arrived, and say the job did not finish here.
        routed = s.tracker.route(Error(exc.code, exc.message, "", job_id=info.job_id))
        message, _ = results.ended_badly(routed)
        s.tracker.forget(info.job_id)
        raise JobFailed(message, "check that the backend is running, then run the job again", str(exc.code)) from None
    return applied
