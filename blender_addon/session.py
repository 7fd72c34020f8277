"""The session with the backend: the client, what the backend said, its health, the jobs.

One per Blender session (:func:`session`). It connects (starting a local backend when the
preferences ask to), submits, cancels and resumes jobs, and watches the backend's health:
:meth:`Session.check_health` pings it with a short timeout while connected, so a dead
backend shows in the panel within seconds even when no job runs, and it reconnects by
itself when the backend answers again (ZeroMQ keeps reconnecting the same socket, so the
client keeps the sequence numbers it needs to resume).

It changes nothing in the scene: ``results`` does that, driven by ``dispatch``.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import bpy

from . import preferences
from .core.backend_process import BackendStartError, LocalBackend, serve_command
from .core.jobs import JobInfo, JobTracker, LivePreview
from .errors import JobFailed
from .protocol.client import Client, CurveClientKeys
from .protocol.errors import JOB_LOST, TIMEOUT, ProtocolError
from .protocol.job_progress import ChainProgress
from .protocol.job_phase import JobPhase
from .protocol.messages import Error, HelloReply, Message
from .reports import report

T = TypeVar("T")

#: How long a local backend may take to start answering (it imports torch).
LOCAL_START_S = 60.0
#: Health pings: every PING_EVERY_S while healthy, PING_RETRY_S after a miss; each blocks
#: the UI for at most PING_TIMEOUT_S (a live backend answers in milliseconds, even
#: mid-job). After LOST_AFTER_S without an answer the backend counts as lost: a dead
#: backend shows in the panel at most ~3.5 s after it died. While lost, one ping every
#: RECONNECT_EVERY_S, so a backend that is down costs the UI little.
PING_EVERY_S = 1.0
PING_RETRY_S = 0.5
PING_TIMEOUT_S = 0.25
LOST_AFTER_S = 2.5
RECONNECT_EVERY_S = 2.0
#: Requests that must not freeze the UI on a lost backend (cancel, job status).
SHORT_REQUEST_S = 2.0
#: A hello asked only to refresh what the backend measures (``fresh_server``).
_FRESH_HELLO_S = 0.5
#: What the panel and the reports say about a job the backend no longer has.
LOST_JOB_HINT = "the backend no longer has this job (it restarted or its worker failed): start the job again"


class Session:
    """One per Blender session: the client, what the backend said, the running jobs."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.server: HelloReply | None = None
        self.status = "not connected"
        self.hint = ""
        self.lost = False  # connected once, the backend has stopped answering
        self.tracker = JobTracker()
        self.live = LivePreview()
        self.local = LocalBackend()
        #: Scenes already told why the Standard view transform matters (once per session).
        self.told_view_transform: set[str] = set()
        self._connect_deadline = 0.0  # > 0 while waiting for a local backend to answer
        self._address = ""
        self._last_answer = 0.0
        self._next_ping = 0.0

    # --- connection -------------------------------------------------------------------------------

    def models(self):
        return list(self.server.models) if self.server else []

    @property
    def connecting(self) -> bool:
        """True while a just-started local backend is being waited for (by the timer)."""
        return bool(self._connect_deadline)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.server is not None and not self.lost

    @property
    def watching(self) -> bool:
        """True while the timer must run for the connection alone (health pings, reconnect)."""
        return self.client is not None and (self.server is not None or self.connecting)

    def connect(
        self, context: bpy.types.Context | None = None, *, wait_s: float | None = None, timeout_s: float = 30.0, address: str = ""
    ) -> bool:
        """Say hello to the backend; start a local one first if the preferences ask to.

        Returns True once connected. In the UI a starting local backend is waited for by
        the timer; with ``wait_s`` (background mode) this call waits for it.
        """
        prefs = preferences.get(context)
        self.disconnect()
        self._address = address = address or prefs.address
        try:
            keys = None
            if prefs.client_secret_key or prefs.server_public_key:
                if not (prefs.client_secret_key and prefs.server_public_key):
                    raise ProtocolError("bad_keys", "a protected backend needs both the client secret key and the server public key", "set both key files in the blend123 preferences")
                keys = CurveClientKeys.from_files(bpy.path.abspath(prefs.client_secret_key), bpy.path.abspath(prefs.server_public_key))
            if prefs.start_local and not self.local.running:
                jobs = preferences.jobs_folder(context)
                self.local.start(serve_command(address, bpy.path.abspath(prefs.python_executable) if prefs.python_executable else "", str(jobs / "backend")), jobs / "backend.log")
            self.client = Client(address, keys=keys, timeout_s=timeout_s)
        except (ProtocolError, BackendStartError, OSError) as exc:
            self._fail(getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))
            return False
        if self.local.running:
            self._connect_deadline = time.monotonic() + LOCAL_START_S
            self.status, self.hint = "starting the local backend...", ""
            if wait_s is None and not bpy.app.background:
                return False  # the timer (started by the caller) waits for it: poll_connect()
            deadline = time.monotonic() + (wait_s if wait_s is not None else LOCAL_START_S)
            while time.monotonic() < deadline:
                if self._try_hello(1.0):
                    return True
            return self._try_hello(1.0, final=True)
        # A backend that is up answers hello in milliseconds: don't freeze the UI for long.
        return self._try_hello(min(timeout_s, 5.0, wait_s if wait_s is not None else 3.0), final=True)

    def poll_connect(self) -> None:
        """One timer tick while a local backend starts: hello once, briefly."""
        if not self._connect_deadline or self.client is None:
            return
        if not self._try_hello(0.05) and (time.monotonic() > self._connect_deadline or not self.local.running):
            self._try_hello(0.05, final=True)
            self._connect_deadline = 0.0

    def _with_timeout(self, timeout_s: float, call: Callable[[], T]) -> T:
        """Run one request with a short timeout (the UI must not freeze on a dead backend)."""
        client = self.client
        saved, client.timeout_s = client.timeout_s, timeout_s
        try:
            return call()
        finally:
            client.timeout_s = saved

    def _try_hello(self, timeout_s: float, final: bool = False) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            self.server = self._with_timeout(timeout_s, lambda: client.hello("blend123-blender"))
        except ProtocolError as exc:
            if final:
                hint = exc.hint
                if self.local.log_path and self.local.running:
                    hint = f"the local backend has not answered yet; see {self.local.log_path}"
                elif self.local.log_path and not self.local.running:
                    hint = f"the local backend stopped; see {self.local.log_path}"
                self._fail(exc.message, hint or "start the backend with `blend123 serve`, or tick 'Start a local backend' in the preferences")
            return False
        self._connect_deadline = 0.0
        self.lost = False
        self.status, self.hint = f"connected to {self._address}", ""
        self._last_answer = time.monotonic()
        self._next_ping = self._last_answer + PING_EVERY_S
        return True

    def _fail(self, message: str, hint: str) -> None:
        self.status, self.hint = f"not connected: {message}", hint
        self.server = None
        self.lost = False
        if self.client is not None:
            self.client.close()
            self.client = None

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client, self.server = None, None
        self.status, self.hint = "not connected", ""
        self.lost = False
        self._connect_deadline = 0.0

    def fresh_server(self) -> HelloReply | None:
        """The backend's hello as of now, for what moves between jobs (the quick proxy
        orbit's share of Make Mesh follows the CPUs other programs leave it: Blender may
        have started rendering since the session connected); the last one when it does not
        answer within a blink, so the UI never waits on it."""
        if self.client is not None and not self.lost:
            try:
                self.server = self._with_timeout(_FRESH_HELLO_S, lambda: self.client.hello("blend123-blender"))
            except ProtocolError:
                pass  # the hello from the connection stands
        return self.server

    def require(self, context: bpy.types.Context | None = None) -> Client:
        """The connected client, connecting on demand; JobFailed says why not."""
        if self.lost:
            raise JobFailed(self.status, self.hint)
        if not self.connected:
            self.connect(context, wait_s=LOCAL_START_S if bpy.app.background else None)
        if not self.connected:
            raise JobFailed(self.status, self.hint or "press Connect in the blend123 panel")
        return self.client

    # --- health -----------------------------------------------------------------------------------

    def heard(self) -> None:
        """Something arrived from the backend: it is alive (no ping needed for a while), or,
        if it was lost, back: reconnect at the next tick, not after the reconnect interval."""
        if self.lost:
            self._next_ping = 0.0
        else:
            self._last_answer = time.monotonic()

    def check_health(self) -> list[Message]:
        """Ping when due; notice a lost backend, and reconnect once it answers again.

        Returns ``job_lost`` errors for tracked jobs the backend no longer has after a
        reconnect, for the caller to route like any job's error.
        """
        if self.client is None or self.server is None:
            return []
        now = time.monotonic()
        if now < self._next_ping:
            return []
        try:
            self._with_timeout(PING_TIMEOUT_S, self.client.ping)
        except ProtocolError:
            now = time.monotonic()
            self._next_ping = now + (RECONNECT_EVERY_S if self.lost else PING_RETRY_S)
            if not self.lost and now - self._last_answer >= LOST_AFTER_S:
                self.mark_lost()
            return []
        self._last_answer = time.monotonic()
        self._next_ping = self._last_answer + PING_EVERY_S
        return self._reconnected() if self.lost else []

    def mark_lost(self) -> None:
        """The backend stopped answering: say so (red panel) and what to do."""
        if self.lost or self.client is None:
            return
        self.lost = True
        silent = time.monotonic() - self._last_answer
        self.status = f"backend lost: no answer from {self._address} for {silent:.0f} s"
        if self.local.process is not None and not self.local.running:
            self.hint = f"the local backend stopped (see {self.local.log_path}): press Connect to start it again"
        else:
            self.hint = "start `blend123 serve` again or check the network: blend123 reconnects by itself"
        for info in self.tracker.jobs.values():
            info.stage = "waiting for the backend"
        report("ERROR", self.status, self.hint)

    def _reconnected(self) -> list[Message]:
        """The backend answers again: hello (it may be a new process), then ask about our jobs."""
        try:
            self.server = self._with_timeout(SHORT_REQUEST_S, lambda: self.client.hello("blend123-blender"))
        except ProtocolError:
            return []  # not quite back: the next ping tries again
        self.lost = False
        self.status, self.hint = f"connected to {self._address}", ""
        lost: list[Message] = []
        alive: list[JobInfo] = []
        for info in list(self.tracker.jobs.values()):
            try:
                state = self._with_timeout(SHORT_REQUEST_S, lambda job_id=info.job_id: self.client.status(job_id))
            except ProtocolError as exc:
                if exc.code == TIMEOUT:
                    continue  # ask again at the next reconnect; the job keeps waiting
                lost.append(Error(JOB_LOST, f"{info.purpose} job {info.job_id[:8]} is gone from the backend: {exc.message}", LOST_JOB_HINT, job_id=info.job_id))
                continue
            if state.state == JobPhase.INTERRUPTED:
                lost.append(Error(JOB_LOST, f"{info.purpose} job {info.job_id[:8]} was interrupted on the backend", LOST_JOB_HINT, job_id=info.job_id))
            else:  # running, queued, or it ended while we were away: Resume fetches the rest
                info.resumable = True
                info.stage = "on the backend: press Resume"
                alive.append(info)
        report("INFO", f"backend at {self._address} is back", f"{len(alive)} job(s) can be resumed" if alive else "")
        return lost

    @property
    def resumable(self) -> list[JobInfo]:
        return [info for info in self.tracker.jobs.values() if info.resumable]

    def resume(self, info: JobInfo) -> None:
        """Fetch what was missed of a job that lived through a lost connection; keep receiving it."""
        client = self.require()
        try:
            client.resume(info.job_id)
        except ProtocolError as exc:
            raise JobFailed(exc.message, exc.hint, str(exc.code)) from None
        info.resumable = False
        info.stage = "resumed"

    # --- jobs -------------------------------------------------------------------------------------

    def submit(self, request: Message, purpose: str, chain: ChainProgress | None = None, step: int = 0, **ctx) -> JobInfo:
        client = self.require()
        try:
            job_id = client.submit(request)
        except ProtocolError as exc:
            if exc.code == TIMEOUT:
                self.mark_lost()
            raise JobFailed(exc.message, exc.hint, str(exc.code)) from None
        self.heard()
        self.tracker.clear_error()
        return self.tracker.add(job_id, purpose, chain, step, **ctx)

    def cancel_all(self) -> int:
        n = 0
        for job_id in list(self.tracker.jobs):
            try:
                if self.client is not None:
                    self._with_timeout(SHORT_REQUEST_S, lambda job_id=job_id: self.client.cancel(job_id))
                n += 1
            except ProtocolError:
                self.tracker.forget(job_id)
        return n

    def shutdown(self) -> None:
        self.disconnect()
        self.local.stop()


_SESSION: Session | None = None


def session() -> Session:
    global _SESSION
    if _SESSION is None:
        _SESSION = Session()
    return _SESSION


def drop_session() -> None:
    global _SESSION
    if _SESSION is not None:
        _SESSION.shutdown()
    _SESSION = None
