"""The client side of the protocol, free of bpy: used by the Blender add-on and the CLI.

One DEALER socket per client. Two ways to consume a job's stream:

* :meth:`Client.poll` never blocks: call it from a ``bpy.app.timers`` callback and handle
  the few events it returns;
* :meth:`Client.events` blocks and yields one job's events until it ends: for headless
  use (``blender -b``, the command line), where timers never fire.

The client keeps the last sequence number seen per job, so after a disconnect
:meth:`Client.resume` asks for exactly what was missed (duplicates are dropped). It pings
the backend while jobs are running and reports a dead or hung backend as an ``error``
event with code ``timeout`` instead of waiting forever.
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import zmq

from . import codec
from .errors import TIMEOUT, ProtocolError
from .messages import (
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
)

#: The backend's default address: loopback only.
DEFAULT_ADDRESS = "tcp://127.0.0.1:5123"


@dataclass(frozen=True)
class CurveClientKeys:
    """CURVE keys for a remote backend: this client's key pair and the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str | Path, server_public_file: str | Path) -> CurveClientKeys:
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(client_secret_file))
        if not secret:
            raise ProtocolError("bad_keys", f"{client_secret_file} holds no secret key", "pass the client's *.key_secret file")
        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        return cls(public, secret, server_public)


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
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.limits = limits
        self.server: HelloReply | None = None
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.linger = 0
        # A stable routing id: replies still find us after the TCP connection comes back.
        self._socket.setsockopt(zmq.ROUTING_ID, uuid.uuid4().bytes)
        if keys is not None:
            self._socket.curve_secretkey = keys.secret
            self._socket.curve_publickey = keys.public
            self._socket.curve_serverkey = keys.server_public
        self._socket.connect(address)
        self._pending: collections.deque[Message] = collections.deque()
        self._last_seq: dict[str, int] = {}
        self._active: set[str] = set()
        self._last_heard = time.monotonic()
        self._last_ping = 0.0

    # --- requests with a reply ----------------------------------------------------------------

    def hello(self, client: str = "blend123") -> HelloReply:
        self.server = self._request(Hello(client), HelloReply)
        return self.server

    def ping(self) -> Pong:
        return self._request(Ping(), Pong)

    def submit(self, request: Message) -> str:
        """Queue a job (novel_view, orbit or reconstruct); returns its id."""
        accepted = self._request(request, Accepted)
        self._active.add(accepted.job_id)
        self._last_seq.setdefault(accepted.job_id, 0)
        return accepted.job_id

    def cancel(self, job_id: str) -> JobState:
        return self._request(Cancel(job_id), JobState)

    def status(self, job_id: str) -> JobState:
        return self._request(JobStatus(job_id), JobState)

    def resume(self, job_id: str) -> JobState:
        """Fetch what was missed of ``job_id`` and keep receiving its stream."""
        after = self._last_seq.get(job_id, 0)
        state = self._request(FetchResult(job_id, after), JobState)
        self._active.add(job_id)
        self._last_seq.setdefault(job_id, 0)
        return state

    # --- the event stream ---------------------------------------------------------------------

    def poll(self, max_events: int = 16) -> list[Message]:
        """Up to ``max_events`` job events, without blocking (for ``bpy.app.timers``)."""
        out: list[Message] = []
        while self._pending and len(out) < max_events:
            out.append(self._pending.popleft())
        while len(out) < max_events:
            msg = self._receive(0)
            if msg is None:
                break
            if self._accept_event(msg):
                out.append(msg)
        out.extend(self._keep_alive())
        return out

    def events(self, job_id: str) -> Iterator[Message]:
        """Yield ``job_id``'s events until it ends (blocking, for headless use).

        Raises ProtocolError with code ``timeout`` if the backend stays silent for
        ``timeout_s``. Other jobs' events are kept for :meth:`poll`.
        """
        self._active.add(job_id)
        kept: list[Message] = []
        try:
            while True:
                for alarm in self._keep_alive():
                    if alarm.job_id == job_id:
                        raise alarm.to_exception()
                    kept.append(alarm)
                if self._pending:
                    msg = self._pending.popleft()
                else:
                    msg = self._receive(self.heartbeat_s)
                    if msg is None or not self._accept_event(msg):
                        continue
                if getattr(msg, "job_id", None) != job_id:
                    kept.append(msg)
                    continue
                yield msg
                if job_ended(msg):
                    return
        finally:
            self._pending.extend(kept)

    @property
    def active_jobs(self) -> set[str]:
        return set(self._active)

    def last_seq(self, job_id: str) -> int:
        return self._last_seq.get(job_id, 0)

    def close(self) -> None:
        self._socket.close(0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _request(self, msg: Message, expect: type) -> Message:
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + self.timeout_s
        self._send(codec.encode(msg, request_id), deadline)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProtocolError(
                    TIMEOUT,
                    f"no answer from the backend at {self.address} within {self.timeout_s:.0f} s",
                    "start it with `blend123 serve` or check the address",
                )
            envelope = self._receive_envelope(remaining)
            if envelope is None:
                continue
            reply = envelope.message
            if envelope.request_id == request_id:
                if isinstance(reply, Error):
                    raise reply.to_exception()
                if not isinstance(reply, expect):
                    raise ProtocolError("bad_reply", f"expected {expect.TYPE}, got {reply.TYPE}")
                return reply
            if self._accept_event(reply):
                self._pending.append(reply)

    def _send(self, frames: list, deadline: float) -> None:
        """Send a request, waiting at most until ``deadline`` for a connection to queue it on.

        A DEALER has nowhere to queue while it has no connection: before the first one is
        up, or after the backend refused our CURVE handshake. A plain send would then
        block forever (and freeze Blender); this raises a timeout instead.
        """
        while True:
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0:
                break
            self._socket.poll(min(wait_ms, 100), zmq.POLLOUT)  # may wake early: loop until the deadline
        raise ProtocolError(
            TIMEOUT,
            f"could not reach the backend at {self.address} within {self.timeout_s:.0f} s",
            "start it with `blend123 serve`, check the address, and for a remote backend check the CURVE keys",
        )

    def _receive(self, timeout_s: float) -> Message | None:
        envelope = self._receive_envelope(timeout_s)
        return envelope.message if envelope else None

    def _receive_envelope(self, timeout_s: float) -> codec.Envelope | None:
        if not self._socket.poll(int(timeout_s * 1000)):
            return None
        frames = self._socket.recv_multipart(copy=False)
        self._last_heard = time.monotonic()
        return codec.decode(frames, self.limits)

    def _accept_event(self, msg: Message) -> bool:
        """Track sequence numbers; False for heartbeats and for duplicates of replayed events."""
        if isinstance(msg, Pong):
            return False
        job_id = getattr(msg, "job_id", "")
        seq = getattr(msg, "seq", 0)
        if job_id and seq:
            if seq <= self._last_seq.get(job_id, 0):
                return False
            self._last_seq[job_id] = seq
        if job_id and job_ended(msg):
            self._active.discard(job_id)
        return True

    def _keep_alive(self) -> list[Message]:
        """Ping while jobs run; turn a silent backend into a timeout error per job."""
        if not self._active:
            return []
        now = time.monotonic()
        if now - self._last_ping >= self.heartbeat_s:
            self._last_ping = now
            try:
                self._socket.send_multipart(codec.encode(Ping()), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass  # no connection to queue on: the silence below reports it
        silent = now - self._last_heard
        if silent < self.timeout_s:
            return []
        self._last_heard = now  # report once per timeout period, not on every poll
        hint = "check that the backend is running; the job goes on there: resume it once it answers"
        return [Error(TIMEOUT, f"the backend has not answered for {silent:.0f} s", hint, job_id=j) for j in sorted(self._active)]
