"""The server loop: a ROUTER socket in front of one job queue and one GPU worker.

Threads and what they own:

* the **socket thread** (:meth:`Server.serve_forever`) owns the ROUTER socket: it decodes
  requests, answers the quick ones, queues jobs, and sends whatever the worker produced;
* the **worker thread** (:mod:`.worker`) runs one job at a time and hands its events to
  the socket thread through a deque plus an inproc wake-up socket (ZeroMQ sockets must
  never be shared between threads).

Nothing a client sends can stop the loop: every request is decoded strictly and any
failure becomes an ``error`` reply.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any

import zmq

from blend123.protocol import codec
from blend123.protocol.errors import QUEUE_FULL, UNKNOWN_JOB, UNKNOWN_TYPE, ProtocolError
from blend123.protocol.messages import (
    Accepted,
    Cancel,
    Error,
    FetchResult,
    Hello,
    HelloReply,
    JobState,
    JobStatus,
    Message,
    NovelView,
    Orbit,
    Ping,
    Pong,
    Reconstruct,
)
from blend123.protocol.version import PROTOCOL_VERSION, __version__

from ..device import describe_device
from ..synthesis.registry import check_model, model_infos
from .config import ServerConfig
from .jobs import Job, JobQueue
from .jobstore import JobStore, is_job_id
from .security import load_server_keys, secure_socket
from .worker import Worker

log = logging.getLogger("blend123.server")

WAKE_ENDPOINT = "inproc://blend123-wake-{}"
# Messages handled per loop turn before outgoing events get their turn.
MAX_REQUESTS_PER_TURN = 64


class Server:
    def __init__(self, config: ServerConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.store = JobStore(config.jobs_dir)
        self.queue = JobQueue()
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.outbox: collections.deque[tuple[str, list[Any]]] = collections.deque()
        self._clients: dict[bytes, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._wake_endpoint = WAKE_ENDPOINT.format(uuid.uuid4().hex)
        self._auth = None
        self.socket: zmq.Socket | None = None
        self.worker: Worker | None = None
        self.endpoint = ""  # the bound endpoint, with the real port for tcp://...:0

    # --- life cycle -----------------------------------------------------------------------

    def bind(self) -> str:
        """Create and bind the sockets (raises ConfigurationError for unsafe setups)."""
        keys = load_server_keys(self.config.curve_secret_key, self.config.curve_clients_dir)
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_total_bytes)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        try:
            self._auth = secure_socket(sock, self.context, self.config.bind, keys)
            bind = self.config.bind
            if bind.startswith("tcp://") and bind.endswith(":0"):
                sock.bind(bind)
                self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                sock.bind(bind)
                self.endpoint = bind
        except Exception:
            sock.close(0)
            if self._auth:
                self._auth.stop()
            raise
        self.socket = sock
        pruned = self.store.prune(self.config.keep_days)
        if pruned:
            log.info("deleted %d job folder(s) older than %g days", pruned, self.config.keep_days)
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.warning("%d job(s) from an earlier run were interrupted", interrupted)
        return self.endpoint

    def serve_forever(self) -> None:
        if self.socket is None:
            self.bind()
        wake = self.context.socket(zmq.PULL)
        wake.linger = 0
        wake.bind(self._wake_endpoint)
        self.worker = Worker(self, self._wake_endpoint)
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        describe_device()  # import torch now, not while the first client waits for hello
        next_heartbeat = time.monotonic() + self.config.heartbeat_s
        self._ready.set()
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if self.socket in ready:
                    self._handle_requests()
                if wake in ready:
                    while wake.poll(0):
                        wake.recv(zmq.NOBLOCK)
                self._flush_outbox()
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + self.config.heartbeat_s
        finally:
            self.queue.close()
            self.worker.stop()
            self.worker.join(timeout=10)
            self._flush_outbox()
            wake.close(0)
            self.socket.close(0)
            if self._auth:
                self._auth.stop()

    def start_in_thread(self) -> threading.Thread:
        """Run the server in a daemon thread (the command line and tests); returns it bound."""
        self.bind()
        thread = threading.Thread(target=self.serve_forever, name="blend123-server", daemon=True)
        thread.start()
        self._ready.wait(10)
        return thread

    def stop(self) -> None:
        self._stop.set()
        for job in list(self.jobs.values()):
            job.cancel_requested.set()

    # --- requests -----------------------------------------------------------------------------

    def _handle_requests(self) -> None:
        for _ in range(MAX_REQUESTS_PER_TURN):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = frames[0].bytes
            self._clients[identity] = time.monotonic()
            client_key = _client_key(frames)
            request_id = ""
            try:
                envelope = codec.decode(frames[1:], self.config.limits)
                request_id = envelope.request_id
                self._dispatch(identity, client_key, envelope.message, request_id, frames[1:])
            except ProtocolError as exc:
                self._send(identity, Error(exc.code, exc.message, exc.hint), request_id)
            except Exception as exc:  # a bug must not take the server down with it
                log.exception("request failed")
                self._send(identity, Error("internal", f"the backend failed on this request: {type(exc).__name__}: {exc}", "see the backend's log"), request_id)

    def _dispatch(self, identity: bytes, client_key: bytes, msg: Message, request_id: str, raw: list[Any]) -> None:
        if isinstance(msg, Hello):
            self._send(identity, self._hello_reply(), request_id)
        elif isinstance(msg, Ping):
            self._send(identity, self._pong(), request_id)
        elif isinstance(msg, (NovelView, Orbit, Reconstruct)):
            self._submit(identity, client_key, msg, request_id, raw)
        elif isinstance(msg, Cancel):
            self._send(identity, self._cancel(msg.job_id), request_id)
        elif isinstance(msg, JobStatus):
            self._send(identity, self._job_state(msg.job_id), request_id)
        elif isinstance(msg, FetchResult):
            self._fetch(identity, msg, request_id)
        else:
            raise ProtocolError(UNKNOWN_TYPE, f"{msg.TYPE!r} is not a request", "servers answer hello, ping, novel_view, orbit, reconstruct, cancel, job_status, fetch_result")

    def _hello_reply(self) -> HelloReply:
        device = describe_device()
        limits = self.config.limits
        return HelloReply(
            server_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            device=device.kind,
            models=model_infos(),
            gpu_name=device.name,
            gpu_free_bytes=device.free_bytes,
            gpu_total_bytes=device.total_bytes,
            limits={
                "max_queue": self.config.max_queue,
                "max_jobs_per_client": self.config.max_jobs_per_client,
                "max_message_bytes": limits.max_total_bytes,
                "max_frames": limits.max_frames,
            },
        )

    def _pong(self) -> Pong:
        running = self.worker.current if self.worker else None
        since = time.monotonic() - running.last_step if running and running.last_step else 0.0
        return Pong(time.time(), running.id if running else "", len(self.queue), since)

    def _submit(self, identity: bytes, client_key: bytes, msg: Message, request_id: str, raw: list[Any]) -> None:
        if isinstance(msg, (NovelView, Orbit)):
            check_model(msg.settings.model)
        if isinstance(msg, Reconstruct) and msg.source_job:
            self._check_source(msg.source_job)
        if len(self.queue) >= self.config.max_queue:
            raise ProtocolError(QUEUE_FULL, f"the backend's queue is full ({self.config.max_queue} jobs)", "wait for queued jobs to finish, then submit again")
        mine = sum(1 for j in self.jobs.values() if j.owner == client_key and j.active)
        if mine >= self.config.max_jobs_per_client:
            raise ProtocolError(QUEUE_FULL, f"you already have {mine} jobs queued or running", "wait for one to finish or cancel one")
        job = Job(uuid.uuid4().hex, msg.TYPE, msg, client_key, {identity})
        self.store.create(job.id, job.kind, raw)
        self._remember(job)
        position = self.queue.put(job)
        self._send(identity, Accepted(job.id, job.kind, position), request_id)

    def _check_source(self, job_id: str) -> None:
        state = self._job_state(job_id)
        if state.kind not in (Orbit.TYPE, NovelView.TYPE) or state.state != "done":
            raise ProtocolError(UNKNOWN_JOB, f"job {job_id} is a {state.kind} job in state {state.state!r}", "reconstruct from a finished orbit job")

    def _cancel(self, job_id: str) -> JobState:
        job = self.jobs.get(job_id)
        if job is not None and job.active:
            job.cancel_requested.set()
            if self.queue.remove(job):  # never started: finish it here
                self.worker.finish(job, "cancelled")
        return self._job_state(job_id)

    def _job_state(self, job_id: str) -> JobState:
        job = self.jobs.get(job_id)
        if job is not None:
            return JobState(job.id, job.kind, job.state, job.stage, job.fraction, job.seq, max(0, self.queue.position(job)), job.error)
        state = self.store.read_state(job_id) if is_job_id(job_id) else None
        if state is None:
            raise ProtocolError(UNKNOWN_JOB, f"no job {job_id[:40]!r} on this backend", "the job id may be from another backend, or its folder was deleted")
        return JobState(job_id, state.get("kind", ""), state.get("state", ""), state.get("stage", ""), float(state.get("fraction", 0.0)), int(state.get("last_seq", 0)), 0, state.get("error", ""))

    def _fetch(self, identity: bytes, msg: FetchResult, request_id: str) -> None:
        state = self._job_state(msg.job_id)
        self._send(identity, state, request_id)
        for _, frames in self.store.events(msg.job_id, msg.after_seq):
            self._send_frames(identity, frames)
        job = self.jobs.get(msg.job_id)
        if job is not None and job.active:
            job.subscribers.add(identity)

    def stored_results(self, job_id: str) -> list[Message]:
        """The decoded result events of a job, from the jobs folder (worker thread)."""
        if not is_job_id(job_id):
            raise ProtocolError(UNKNOWN_JOB, f"not a job id: {job_id[:40]!r}")
        return [codec.decode(frames).message for _, frames in self.store.events(job_id)]

    def stored_request(self, job_id: str) -> Message:
        """The request a job was submitted with, from the jobs folder (worker thread)."""
        if not is_job_id(job_id):
            raise ProtocolError(UNKNOWN_JOB, f"not a job id: {job_id[:40]!r}")
        try:
            frames = self.store.read_request(job_id)
        except OSError:
            raise ProtocolError(UNKNOWN_JOB, f"no job {job_id} on this backend", "the job id may be from another backend, or its folder was deleted") from None
        return codec.decode(frames).message

    def _remember(self, job: Job) -> None:
        self.jobs[job.id] = job
        # Forget the oldest finished jobs; their folders still answer status and fetch.
        while len(self.jobs) > self.config.jobs_in_memory:
            oldest = next((j for j in self.jobs.values() if not j.active), None)
            if oldest is None:
                break
            del self.jobs[oldest.id]

    # --- sending ------------------------------------------------------------------------------

    def _send(self, identity: bytes, msg: Message, request_id: str = "") -> None:
        self._send_frames(identity, codec.encode(msg, request_id))

    def _send_frames(self, identity: bytes, frames: list[Any]) -> None:
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.Again:  # that client is not reading: drop, it can fetch_result later
            pass

    def _flush_outbox(self) -> None:
        while self.outbox:
            job_id, frames = self.outbox.popleft()
            job = self.jobs.get(job_id)
            for identity in job.subscribers if job else ():
                self._send_frames(identity, frames)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        pong = codec.encode(self._pong())
        listening = {i for job in self.jobs.values() if job.active for i in job.subscribers}
        for identity in listening:
            if now - self._clients.get(identity, 0.0) < self.config.client_timeout_s:
                self._send_frames(identity, pong)
        # Forget silent clients that have nothing running, so the table cannot grow forever.
        for identity, seen in list(self._clients.items()):
            if now - seen > self.config.client_timeout_s and identity not in listening:
                del self._clients[identity]

    def publish(self, job: Job, msg: Message, persist: bool) -> None:
        """Called by the worker thread: encode, store if a result, queue for sending."""
        frames = codec.encode(msg)
        if persist:
            self.store.append_event(job.id, getattr(msg, "seq"), frames)
        self.outbox.append((job.id, frames))


def _client_key(frames: list[zmq.Frame]) -> bytes:
    """The CURVE public key of the sender when authenticated, else its routing id."""
    try:
        user = frames[1].get("User-Id")
    except (zmq.ZMQError, IndexError):
        user = None
    return user.encode() if user else frames[0].bytes
