"""The client side of the protocol, free of bpy: used by the Blender add-on and the CLI.

One DEALER socket per client. Two ways to consume a job's stream:

* :meth:`Client.poll` never blocks: call it from a ``bpy.app.timers`` callback and handle
  the few events it returns;
* :meth:`Client.events` blocks and yields one job's events until it ends: for headless
  use (``blender -b``, the command line), where timers never fire.

The client keeps the last sequence number seen per job, so after a disconnect
:meth:`Client.resume` asks for exactly what was missed (duplicates are dropped). While
jobs run it pings the backend naming them; the pong says which are still alive, so a job
lost to a backend restart ends at once with an ``error`` event of code ``job_lost``, and
a backend that stays silent ends its jobs with code ``timeout`` instead of waiting forever.

A socket monitor tells a refused CURVE handshake (``bad_keys``) and a closed port apart
from a backend that is merely slow.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import zmq

from . import codec
from .errors import BAD_KEYS, BAD_REPLY, BAD_REQUEST, JOB_LOST, TIMEOUT, ProtocolError
from .job_phase import JobPhase
from .messages import (
    JOB_EVENTS,
    Accepted,
    Cancel,
    Done,
    Error,
    FetchResult,
    Hello,
    HelloReply,
    JobState,
    JobStatus,
    Message,
    Ping,
    Pong,
    Progress,
)

log = logging.getLogger("blend123.client")

#: Seconds without any connection after which a request reports "nothing is listening".
CONNECT_GRACE_S = 3.0
_HANDSHAKE_FAILED = {
    getattr(zmq, name) for name in ("EVENT_HANDSHAKE_FAILED_AUTH", "EVENT_HANDSHAKE_FAILED_PROTOCOL", "EVENT_HANDSHAKE_FAILED_NO_DETAIL")
    if hasattr(zmq, name)
}

#: The backend's default address: loopback only.
DEFAULT_ADDRESS = "tcp://127.0.0.1:5123"
#: Heartbeats a backend may miss before :meth:`Client.events` reports its silence: at two,
#: a backend busy beside two other processes (an xatlas unwrap in its own process, since
#: moved to a helper) was reported silent while at work; five leaves room for such stalls.
_SILENT_HEARTBEATS = 5


@dataclass(frozen=True)
class CurveClientKeys:
    """CURVE keys for a remote backend: this client's key pair and the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str | Path, server_public_file: str | Path) -> CurveClientKeys:
        public, secret = _load_certificate(client_secret_file, "client secret key", "pass the client's *.key_secret file")
        if not secret:
            raise ProtocolError(BAD_KEYS, f"{client_secret_file} holds no secret key", "pass the client's *.key_secret file")
        server_public, _ = _load_certificate(server_public_file, "backend public key", "pass the backend's *.key file")
        return cls(public, secret, server_public)


def _load_certificate(path: str | Path, what: str, hint: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as exc:
        raise ProtocolError(BAD_KEYS, f"cannot read the {what} {path}: {exc.strerror or exc}", hint) from None
    except Exception:  # pyzmq raises ValueError, IndexError... for a malformed file
        raise ProtocolError(BAD_KEYS, f"{path} is not a CURVE key file", f"{hint}, as written by `blend123 keys`") from None
    if not public or len(public) != 40:
        raise ProtocolError(BAD_KEYS, f"{path} holds no valid public key", f"{hint}, as written by `blend123 keys`")
    return public, secret


def job_ended(msg: Message) -> bool:
    """True for the event that closes a job's stream."""
    return isinstance(msg, Done) or (isinstance(msg, Error) and bool(msg.job_id))


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        keys: CurveClientKeys | None = None,
        context: zmq.Context | None = None,
        timeout_s: float = 10.0,
        heartbeat_s: float = 1.0,
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        token: str = "",
    ) -> None:
        check_address(address)
        self.address = address
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.limits = limits
        # Names this client to a loopback backend across reconnects: its jobs are its own.
        self.token = token or uuid.uuid4().hex
        self.server: HelloReply | None = None
        self.last_pong: Pong | None = None
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.linger = 0
        self._socket.setsockopt(zmq.MAXMSGSIZE, limits.max_total_bytes)
        # A stable routing id: replies still find us after the TCP connection comes back.
        self._socket.setsockopt(zmq.ROUTING_ID, uuid.uuid4().bytes)
        if keys is not None:
            self._socket.curve_secretkey = keys.secret
            self._socket.curve_publickey = keys.public
            self._socket.curve_serverkey = keys.server_public
        if address.startswith("tcp://["):
            self._socket.ipv6 = True
        # Our own endpoint name: pyzmq's default one reuses the socket's file descriptor
        # number, which a closed client's lingering monitor may still hold.
        monitor_endpoint = f"inproc://blend123-monitor-{uuid.uuid4().hex}"
        self._socket.monitor(monitor_endpoint, zmq.EVENT_ALL)
        self._monitor = self._context.socket(zmq.PAIR)
        self._monitor.linger = 0
        self._monitor.connect(monitor_endpoint)
        self._connected = address.startswith("inproc://")  # inproc reports no connection events
        self._refused = ""
        self._down_since = time.monotonic()
        try:
            self._socket.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise ProtocolError(BAD_REQUEST, f"cannot connect to {address!r}: {exc}", "give an address like tcp://127.0.0.1:5123") from None
        self._pending: collections.deque[Message] = collections.deque()
        self._last_seq: dict[str, int] = {}
        self._seen: dict[str, set[int]] = {}  # result events received, per job
        self._active: set[str] = set()
        self._refetched: set[str] = set()
        self._last_heard = time.monotonic()
        self._last_ping = 0.0

    # --- requests with a reply ----------------------------------------------------------------

    def hello(self, client: str = "blend123") -> HelloReply:
        self.server = self._request(Hello(client), HelloReply)
        return self.server

    def ping(self) -> Pong:
        pong = self._request(Ping(sorted(self._active)[:64]), Pong)
        self._pending.extend(self._check_jobs(pong))
        return pong

    def submit(self, request: Message) -> str:
        """Queue a job (novel_view, orbit or reconstruct); returns its id.

        The request is checked here first, against the same bounds the backend applies,
        so a mistyped value is refused before any image travels.
        """
        request.validate()
        accepted = self._request(request, Accepted)
        self._active.add(accepted.job_id)
        self._last_seq.setdefault(accepted.job_id, 0)
        return accepted.job_id

    def cancel(self, job_id: str) -> JobState:
        return self._request(Cancel(job_id), JobState)

    def status(self, job_id: str) -> JobState:
        return self._request(JobStatus(job_id), JobState)

    def resume(self, job_id: str) -> JobState:
        """Fetch what was missed of ``job_id`` and keep receiving its stream.

        A job the backend no longer runs and that never ended (``interrupted``) is not
        followed: the returned state says so.
        """
        after = self._last_seq.get(job_id, 0)
        state = self._request(FetchResult(job_id, after), JobState)
        if state.state != JobPhase.INTERRUPTED:
            self._active.add(job_id)
            self._last_seq.setdefault(job_id, 0)
        return state

    # --- the event stream ---------------------------------------------------------------------

    def poll(self, max_events: int = 16) -> list[Message]:
        """Up to ``max_events`` job events, without blocking (for ``bpy.app.timers``).

        Never loses an event: a message that cannot be decoded is logged and skipped, and
        what was accepted before it is returned.
        """
        out: list[Message] = []
        while self._pending and len(out) < max_events:
            out.append(self._pending.popleft())
        while len(out) < max_events:
            try:
                envelope = self._receive_envelope(0)
            except ProtocolError as exc:
                log.warning("skipped a message from the backend: %s", exc)
                continue
            if envelope is None:
                break
            self._route(envelope, out)
        out.extend(self._keep_alive())
        return out

    def events(self, job_id: str, on_silence: Callable[[float], None] | None = None) -> Iterator[Message]:
        """Yield ``job_id``'s events until it ends (blocking, for headless use).

        Ends with an ``error`` event of code ``job_lost`` when the backend no longer runs
        the job, and raises ProtocolError with code ``timeout`` if the backend stays silent
        for ``timeout_s``. Other jobs' events are kept for :meth:`poll`. ``on_silence`` hears
        how many seconds the backend has been silent, once it has missed five heartbeats
        (a backend at work answers every ping), so a progress bar can say so before the
        timeout.
        """
        self._active.add(job_id)
        kept: list[Message] = []
        try:
            while True:
                for alarm in self._keep_alive():
                    self._pending.append(alarm)
                if self._pending:
                    msg = self._pending.popleft()
                else:
                    try:
                        envelope = self._receive_envelope(min(self.heartbeat_s, 0.25))
                    except ProtocolError as exc:
                        log.warning("skipped a message from the backend: %s", exc)
                        continue
                    if envelope is not None:
                        self._route(envelope, self._pending)
                    elif on_silence is not None and self.silent_s > _SILENT_HEARTBEATS * self.heartbeat_s:
                        on_silence(self.silent_s)
                    continue
                if getattr(msg, "job_id", None) != job_id:
                    kept.append(msg)
                    continue
                if isinstance(msg, Error) and msg.code == TIMEOUT:
                    raise msg.to_exception()
                yield msg
                if job_ended(msg):
                    return
        finally:
            self._pending.extendleft(reversed(kept))

    @property
    def silent_s(self) -> float:
        """Seconds since the backend last said anything."""
        return time.monotonic() - self._last_heard

    @property
    def active_jobs(self) -> set[str]:
        return set(self._active)

    def last_seq(self, job_id: str) -> int:
        return self._last_seq.get(job_id, 0)

    def close(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._monitor.close(0)
            self._monitor = None
        self._socket.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _request(self, msg: Message, expect: type) -> Message:
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout_s
        self._send(codec.encode(msg, request_id, self.token), deadline)
        while True:
            self._check_connection()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._silence_error()
            try:
                envelope = self._receive_envelope(min(remaining, 0.1))
            except ProtocolError as exc:
                if exc.request_id == request_id:
                    raise
                log.warning("skipped a message from the backend: %s", exc)
                continue
            if envelope is None:
                continue
            reply = envelope.message
            if envelope.request_id == request_id:
                if isinstance(reply, Error):
                    raise reply.to_exception()
                if not isinstance(reply, expect):
                    raise ProtocolError(BAD_REPLY, f"expected {expect.TYPE}, got {reply.TYPE}")
                return reply
            self._route(envelope, self._pending)

    def _route(self, envelope: codec.Envelope, out) -> None:
        """Sort an unrequested message: job events go to ``out``, pongs are checked,
        replies to requests we gave up on are dropped."""
        msg = envelope.message
        if isinstance(msg, Pong):
            out.extend(self._check_jobs(msg))
        elif isinstance(msg, JOB_EVENTS) and msg.job_id and self._accept_event(msg):
            out.append(msg)

    def _send(self, frames: list, deadline: float) -> None:
        """Send a request, waiting at most until ``deadline`` for a connection to queue it on.

        A DEALER has nowhere to queue while it has no connection: before the first one is
        up, or after the backend refused our CURVE handshake. A plain send would then
        block forever (and freeze Blender); this raises instead.
        """
        while True:
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            self._check_connection()
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0:
                break
            self._socket.poll(min(wait_ms, 100), zmq.POLLOUT)  # may wake early: loop until the deadline
        raise self._silence_error()

    def _check_connection(self) -> None:
        """Read the socket monitor; raise at once when the backend refused our handshake,
        or when nothing has listened at the address for CONNECT_GRACE_S."""
        while self._monitor is not None and self._monitor.poll(0):
            from zmq.utils.monitor import recv_monitor_message

            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            if event in (zmq.EVENT_CONNECTED, getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", -1)):
                self._connected, self._refused = True, ""
            elif event == zmq.EVENT_DISCONNECTED and self._connected:
                self._connected, self._down_since = False, time.monotonic()
            elif event in _HANDSHAKE_FAILED:
                self._refused = "handshake"
        if self._refused:
            raise ProtocolError(
                BAD_KEYS,
                f"the backend at {self.address} refused our key (the CURVE handshake failed)",
                "give this client's secret key and the backend's public key (--client-key, --server-key), "
                "and make sure the backend lists this client's public key in its --curve-clients folder",
            )
        if not self._connected and time.monotonic() - self._down_since > CONNECT_GRACE_S and self.timeout_s > CONNECT_GRACE_S:
            raise ProtocolError(
                TIMEOUT, f"nothing is listening at {self.address}",
                "start the backend with `blend123 serve`, or check the address and port",
            )

    def _silence_error(self) -> ProtocolError:
        if not self._connected:
            return ProtocolError(TIMEOUT, f"could not reach the backend at {self.address} within {self.timeout_s:.0f} s",
                                 "start it with `blend123 serve`, check the address, and for a remote backend check the CURVE keys")
        return ProtocolError(TIMEOUT, f"no answer from the backend at {self.address} within {self.timeout_s:.0f} s",
                             "the backend is connected but busy or hung: look at its log, or restart it")

    def _receive_envelope(self, timeout_s: float) -> codec.Envelope | None:
        if not self._socket.poll(int(timeout_s * 1000)):
            return None
        frames = self._socket.recv_multipart(copy=False)
        self._last_heard = time.monotonic()
        return codec.decode(frames, self.limits)

    def _accept_event(self, msg: Message) -> bool:
        """Track sequence numbers; False for duplicates of replayed events.

        Results are deduplicated by their exact sequence number, so one event with an
        absurd ``seq`` cannot hide the events after it; progress only by being older than
        the last progress seen.
        """
        job_id, seq = msg.job_id, msg.seq
        if seq:
            if isinstance(msg, Progress):
                if seq <= self._last_seq.get(job_id, 0):
                    return False
            else:
                seen = self._seen.setdefault(job_id, set())
                if seq in seen:
                    return False
                seen.add(seq)
            self._last_seq[job_id] = max(seq, self._last_seq.get(job_id, 0)) if seq < (1 << 40) else self._last_seq.get(job_id, 0)
        if job_ended(msg):
            self._active.discard(job_id)
            self._seen.pop(job_id, None)
        return True

    def _check_jobs(self, pong: Pong) -> list[Message]:
        """What a pong says of our jobs: a lost job ends now; one that ended without our
        seeing its end is fetched again."""
        self.last_pong = pong
        out: list[Message] = []
        for job_id, state in pong.jobs.items():
            if job_id not in self._active:
                continue
            if state in (JobPhase.INTERRUPTED, "unknown"):
                self._active.discard(job_id)
                what = "was interrupted on the backend" if state == JobPhase.INTERRUPTED else "is not known to the backend (it restarted, or the job was deleted)"
                out.append(Error(JOB_LOST, f"job {job_id} {what}", "submit it again", job_id=job_id))
            elif state in (JobPhase.DONE, JobPhase.FAILED, JobPhase.CANCELLED) and job_id in self._refetched:
                # Ended, fetched again, and still no end event: the backend cannot read it.
                # End the stream from the state, so nobody waits for an event that will not come.
                self._active.discard(job_id)
                if state == JobPhase.FAILED:
                    out.append(Error(JOB_LOST, f"job {job_id} failed on the backend; its error could not be read", "see the backend's log", job_id=job_id))
                else:
                    out.append(Done(job_id, str(state)))
            elif state in (JobPhase.DONE, JobPhase.FAILED, JobPhase.CANCELLED):
                # Its end event may still be on the way; if it was dropped, this replays it.
                self._refetched.add(job_id)
                frames = codec.encode(FetchResult(job_id, self._last_seq.get(job_id, 0)), "", self.token)
                try:
                    self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    self._refetched.discard(job_id)
        return out

    def _keep_alive(self) -> list[Message]:
        """Ping while jobs run; turn a silent backend into a timeout error per job."""
        if not self._active:
            return []
        now = time.monotonic()
        if now - self._last_ping >= self.heartbeat_s:
            self._last_ping = now
            try:
                self._socket.send_multipart(codec.encode(Ping(sorted(self._active)[:64]), "", self.token), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass  # no connection to queue on: the silence below reports it
        silent = now - self._last_heard
        if silent < self.timeout_s:
            return []
        self._last_heard = now  # report once per timeout period, not on every poll
        hint = "check that the backend is running; if it comes back with the job, resume it"
        return [Error(TIMEOUT, f"the backend has not answered for {silent:.0f} s", hint, job_id=j) for j in sorted(self._active)]


def check_address(address: str) -> None:
    """Refuse an address ZeroMQ cannot connect to, with the fix (no traceback later)."""
    schemes = ("tcp://", "ipc://", "inproc://")
    if not isinstance(address, str) or not address.startswith(schemes):
        raise ProtocolError(BAD_REQUEST, f"{address!r} is not a backend address", "write it as tcp://HOST:PORT, e.g. tcp://127.0.0.1:5123")
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProtocolError(BAD_REQUEST, f"{address!r} has no valid host and port", "write it as tcp://HOST:PORT, e.g. tcp://127.0.0.1:5123 or tcp://[::1]:5123")
