"""The server loop: a ROUTER socket in front of one job queue and one GPU worker.

Threads and what they own:

* the **socket thread** (:meth:`Server.serve_forever`) owns the ROUTER socket: it decodes
  requests, answers the quick ones, queues jobs, delivers events through the
  :class:`~.outbox.Outbox`, and supervises the worker (a stopped worker is replaced);
* the **worker thread** (:mod:`.worker`) runs one job at a time; it talks to the socket
  thread only through the outbox and an inproc wake-up socket (ZeroMQ sockets are never
  shared between threads).

Who is asking: every request is attributed to an :func:`identity` (the CURVE public key
on a remote backend, the client's token on loopback). Jobs belong to the identity that
submitted them: nobody else can see, fetch or cancel them, and quotas are per identity.

Nothing a client sends can stop the loop: every request is decoded strictly, and any
failure becomes an ``error`` reply carrying the request's id.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import uuid
from typing import Any

import zmq

from blend123.protocol import codec
from blend123.protocol.errors import DISK_FULL, INTERNAL, QUEUE_FULL, TOO_LARGE, UNKNOWN_JOB, UNKNOWN_TYPE, ProtocolError
from blend123.protocol.job_phase import JobPhase
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
    ModelInfo,
    NovelView,
    Orbit,
    Ping,
    Pong,
    Reconstruct,
)
from blend123.protocol.version import PROTOCOL_VERSION, __version__

from ..cpu_share import RecentLoad, second_cpu_free
from ..device import describe_device
from ..speed_probe import probe_pace, quick_pace
from ..synthesis.registry import ResidentModel, check_model, model_infos
from ..tasks import warm_up as warm_up_imports
from .config import ServerConfig
from .jobs import Job, JobQueue
from .jobstore import JobStore, is_disk_full, is_job_id
from .outbox import Outbox
from .security import load_server_keys, secure_socket
from .stage_memory import StageMemory
from .worker import Worker

log = logging.getLogger("blend123.server")

WAKE_ENDPOINT = "inproc://blend123-wake-{}"
# Messages handled per loop turn before outgoing events get their turn.
MAX_REQUESTS_PER_TURN = 64
# Messages queued per client pipe before the outbox waits for the client to read.
SEND_HWM = 1000


def identity(routing_id: bytes, user_id: str | None, client_token: str) -> bytes:
    """Who sent a request: the CURVE key when authenticated, else the client's token, else
    its connection. Hashed, so identities are fixed-size and never echo client bytes."""
    if user_id:
        source = b"curve:" + user_id.encode()
    elif client_token:
        source = b"token:" + client_token.encode()
    else:
        source = b"peer:" + routing_id
    return hashlib.blake2b(source, digest_size=16).digest()


class Server:
    def __init__(self, config: ServerConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.store = JobStore(config.jobs_dir)
        self.outbox = Outbox(self.store)
        self.queue = JobQueue()
        self.models = ResidentModel()
        # What this machine's stages took in earlier jobs, for the progress bar's first estimate.
        self.stage_memory = StageMemory.load(config.stage_memory_file)
        self.load = RecentLoad()  # the CPUs others leave free lately: for jobs' estimates and hello
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._peers: dict[bytes, tuple[float, bytes]] = {}  # routing id -> (last seen, identity)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._wake_endpoint = WAKE_ENDPOINT.format(uuid.uuid4().hex)
        self._auth = None
        self._monitor: zmq.Socket | None = None
        self.socket: zmq.Socket | None = None
        self.worker: Worker | None = None
        self._warm_up: threading.Thread | None = None  # importing torch, then the speed probe, beside the first jobs
        self._probe_lock = threading.Lock()
        self._probed = False
        self.worker_restarts = 0
        self.endpoint = ""  # the bound endpoint, with the real port for tcp://...:0

    # --- life cycle -----------------------------------------------------------------------

    def bind(self) -> str:
        """Lock the jobs folder, create and bind the sockets.

        Raises :class:`~.jobstore.JobsFolderBusy` when another server uses the folder,
        ConfigurationError for unsafe set-ups, zmq.ZMQError when the address is taken.
        """
        self.store.lock()
        keys = load_server_keys(self.config.curve_secret_key, self.config.curve_clients_dir)
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_total_bytes)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full client pipe says so (see .outbox)
        if self.config.bind.startswith("tcp://["):
            sock.ipv6 = True
        try:
            self._auth = secure_socket(sock, self.context, self.config.bind, keys)
            sock.bind(self.config.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) if self.config.bind.startswith("tcp://") else self.config.bind
        except Exception:
            sock.close(0)
            if self._auth:
                self._auth.stop()
            self.store.unlock()
            raise
        self.socket = sock
        self._monitor = _handshake_monitor(sock, self.context) if keys is not None else None
        pruned = self.store.prune(self.config.keep_days)
        if pruned:
            log.info("deleted %d job folder(s) older than %g days or left incomplete", pruned, self.config.keep_days)
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.warning("%d job(s) from an earlier run were interrupted", interrupted)
        self._enforce_size_cap()
        return self.endpoint

    def serve_forever(self) -> None:
        if self.socket is None:
            self.bind()
        wake = self.context.socket(zmq.PULL)
        wake.linger = 0
        wake.bind(self._wake_endpoint)
        # torch and the reconstruction load beside the first job rather than before it: a
        # quick-proxy orbit needs neither, and hello (or the first reconstruction) waits
        # only for what is left of the import.
        self._quick_probe()
        warm_up = self._warm_up = threading.Thread(target=self._prepare, name="blend123-warm-up", daemon=True)
        warm_up.start()
        self._start_worker()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self.config.heartbeat_s
        self._ready.set()
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(5 if self.outbox.has_pending else 100))
                if self.socket in ready:
                    self._handle_requests()
                if wake in ready:
                    while wake.poll(0):
                        wake.recv(zmq.NOBLOCK)
                if self._monitor is not None and self._monitor in ready:
                    self._log_refusals()
                self._flush()
                self._supervise()
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._heartbeat()
                    self.load.sample()  # a span of a heartbeat: no wait for the counters
                    next_heartbeat = now + self.config.heartbeat_s
        finally:
            self.queue.close()
            self.worker.stop()
            self.worker.join(timeout=10)
            warm_up.join(timeout=30)  # never leave an import of torch running at exit
            self.models.release()
            self._flush()
            wake.close(0)
            if self._monitor is not None:
                self.socket.disable_monitor()
                self._monitor.close(0)
            self.socket.close(0)
            if self._auth:
                self._auth.stop()
            self.store.unlock()

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

    def _log_refusals(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            if event["event"] in _HANDSHAKE_FAILED:
                peer = event.get("endpoint", b"")
                log.warning("refused a CURVE handshake on %s (a client without an allowed key, or with the wrong server key)",
                            peer.decode(errors="replace") if isinstance(peer, bytes) else peer)

    # --- the worker and its supervisor ----------------------------------------------------------

    def _prepare(self) -> None:
        """The warm-up thread: the imports, then the speed probe."""
        warm_up_imports()
        self.probe_speed()

    def _quick_probe(self) -> None:
        """Before the imports, on a machine no job has timed: the numpy-only probe's pace
        (25 ms), for the first job, which runs beside the import of torch. Not where the
        whole probe has read the machine already (``serve`` probes before serving), nor
        over a GPU's setting-aside of the CPU's reading."""
        with self._probe_lock:
            if self._probed or self.stage_memory.timed:
                return
            try:
                pace = quick_pace()
            except Exception as exc:  # an estimate is not worth a backend
                log.warning("the quick speed probe failed (%s)", exc)
                return
            self.stage_memory.start_from(pace)
            _log_pace("quick speed probe", pace, "until the whole speed probe reads it after the imports")

    def probe_speed(self) -> None:
        """On a machine no job has timed yet, the first estimate starts from the speed
        probe's pace (once; a GPU's pace is not the CPU's: none there, and the quick probe's
        reading of the CPU is set aside). Needs torch loaded."""
        with self._probe_lock:
            if self._probed or self.stage_memory.timed:
                return
            self._probed = True
            try:
                if describe_device().kind == "cpu":
                    pace = probe_pace()
                    self.stage_memory.start_from(pace)
                    _log_pace("speed probe", pace)
                else:
                    self.stage_memory.forget_probe()
            except Exception as exc:  # an estimate is not worth a backend: keep the benchmark's pace
                log.warning("the speed probe failed (%s): first estimates keep the pace they started from", exc)

    def _start_worker(self) -> None:
        self.worker = Worker(
            self.queue, self.store, self.outbox, self.context, self._wake_endpoint,
            progress_rate_hz=self.config.progress_rate_hz, models=self.models, on_job_end=lambda job: self._enforce_size_cap(),
            beside=self._warm_up, stage_memory=self.stage_memory, load=self.load,
        )
        self.worker.start()

    def _supervise(self) -> None:
        """A worker thread that stopped (it should not) is replaced, and its job failed."""
        if self.worker is None or self.worker.is_alive() or self._stop.is_set():
            return
        lost = self.worker.current
        self.worker_restarts += 1
        log.error("the worker thread stopped; starting a new one (restart %d)", self.worker_restarts)
        if lost is not None and lost.active:
            self.worker.fail(lost, INTERNAL, "the backend's worker stopped while running this job", "submit it again; see the backend's log")
        self._start_worker()

    def _enforce_size_cap(self) -> None:
        cap = int(self.config.max_jobs_gb * (1 << 30))
        if cap > 0:
            active = {j.id for j in list(self.jobs.values()) if j.active}
            removed = self.store.enforce_size_cap(cap, keep=active)
            if removed:
                log.info("deleted %d oldest finished job(s) to keep the jobs folder under %g GB", removed, self.config.max_jobs_gb)

    # --- requests -----------------------------------------------------------------------------

    def _handle_requests(self) -> None:
        for _ in range(MAX_REQUESTS_PER_TURN):
            frames = _recv_bounded(self.socket, self.config.limits.max_frames + 2)
            if frames is None:
                return
            peer = frames[0].bytes
            request_id = ""
            try:
                if len(frames) < 2:
                    raise ProtocolError(TOO_LARGE, "message has too many frames or none", f"send at most {self.config.limits.max_frames} array frames")
                envelope = codec.decode(frames[1:], self.config.limits)
                request_id = envelope.request_id
                who = identity(peer, _user_id(frames), envelope.client)
                self._peers[peer] = (time.monotonic(), who)
                self._dispatch(peer, who, envelope.message, request_id, frames[1:])
            except ProtocolError as exc:
                request_id = request_id or exc.request_id
                # Debug level: a client must not be able to flood the log with its mistakes.
                log.debug("refused a request from peer %s: %s", peer.hex()[:8], exc.message)
                self._send(peer, Error(exc.code, exc.message, exc.hint), request_id)
            except Exception as exc:  # a bug must not take the server down with it
                log.exception("request failed")
                self._send(peer, Error(INTERNAL, f"the backend failed on this request: {type(exc).__name__}: {exc}", "see the backend's log"), request_id)

    def _dispatch(self, peer: bytes, who: bytes, msg: Message, request_id: str, raw: list[Any]) -> None:
        if isinstance(msg, Hello):
            self._send(peer, self._hello_reply(), request_id)
        elif isinstance(msg, Ping):
            self._send(peer, self._pong(who, msg.jobs, peer), request_id)
        elif isinstance(msg, (NovelView, Orbit, Reconstruct)):
            self._submit(peer, who, msg, request_id, raw)
        elif isinstance(msg, Cancel):
            self._send(peer, self._cancel(who, msg.job_id), request_id)
        elif isinstance(msg, JobStatus):
            self._send(peer, self._job_state(who, msg.job_id), request_id)
        elif isinstance(msg, FetchResult):
            self._fetch(peer, who, msg, request_id)
        else:
            raise ProtocolError(UNKNOWN_TYPE, f"{msg.TYPE!r} is not a request", "servers answer hello, ping, novel_view, orbit, reconstruct, cancel, job_status, fetch_result")

    def _hello_reply(self) -> HelloReply:
        from ..matting import status as matting_status

        device = describe_device()
        matting = matting_status()
        limits = self.config.limits
        return HelloReply(
            server_version=__version__,
            protocol_version=PROTOCOL_VERSION,
            device=device.kind,
            models=(models := model_infos()),
            memory_mode=next((m.memory_mode for m in models if m.name == "sv3d-p"), ""),
            gpu_name=device.name,
            gpu_free_bytes=device.free_bytes,
            gpu_total_bytes=device.total_bytes,
            limits={
                "max_queue": self.config.max_queue,
                "max_jobs_per_client": self.config.max_jobs_per_client,
                "max_client_bytes": self.config.max_client_bytes,
                "max_client_disk_bytes": self.config.max_client_disk_bytes,
                "max_message_bytes": limits.max_total_bytes,
                "max_frames": limits.max_frames,
            },
            matting=ModelInfo("matting", "matting", matting.available, matting.detail, matting.hint),
            proxy_orbit_share=self.proxy_orbit_share(device.kind),
        )

    def proxy_orbit_share(self, device_kind: str) -> float:
        """The quick proxy's orbit's share of Make Mesh with the CPUs other processes leave now."""
        second_cpu = second_cpu_free(self.load.free(), self.load.cpus)
        return self.stage_memory.proxy_orbit_share(second_cpu, photo_on_cpu=device_kind == "cpu")

    def _pong(self, who: bytes, asked: list[str], peer: bytes = b"") -> Pong:
        """A pong for ``who``: it names only ``who``'s own jobs. A job whose events are still
        on their way to ``peer`` counts as running, so its end is never announced early."""
        running = self.worker.current if self.worker else None
        mine = running is not None and running.owner == who
        since = time.monotonic() - running.last_step if running and running.last_step else 0.0
        states = {job_id: self._state_name(who, job_id) for job_id in asked[:64]}
        for job_id, state in states.items():
            if state not in ("queued", "running", "unknown") and peer in self.outbox.subscribers(job_id):
                states[job_id] = JobPhase.RUNNING.value
        return Pong(
            time.time(), running.id if mine else "", len(self.queue), since, states,
            worker_alive=bool(self.worker and self.worker.is_alive()), worker_restarts=self.worker_restarts,
        )

    def _state_name(self, who: bytes, job_id: str) -> str:
        try:
            return self._job_state(who, job_id).state
        except ProtocolError:
            return "unknown"

    def _submit(self, peer: bytes, who: bytes, msg: Message, request_id: str, raw: list[Any]) -> None:
        if isinstance(msg, (NovelView, Orbit)):
            check_model(msg.settings.model)
        if isinstance(msg, Reconstruct) and msg.source_job:
            self._check_source(who, msg.source_job)
        if len(self.queue) >= self.config.max_queue:
            raise ProtocolError(QUEUE_FULL, f"the backend's queue is full ({self.config.max_queue} jobs)", "wait for queued jobs to finish, then submit again")
        mine = [j for j in self.jobs.values() if j.owner == who and j.active]
        if len(mine) >= self.config.max_jobs_per_client:
            raise ProtocolError(QUEUE_FULL, f"you already have {len(mine)} jobs queued or running", "wait for one to finish or cancel one")
        size = sum(_nbytes(f) for f in raw)
        in_flight = sum(j.request_bytes for j in mine)
        if in_flight + size > self.config.max_client_bytes:
            raise ProtocolError(
                QUEUE_FULL, f"your queued jobs already hold {in_flight >> 20} MiB of inputs (limit {self.config.max_client_bytes >> 20} MiB)",
                "wait for a job to finish, or send smaller images",
            )
        on_disk = self.store.owner_bytes(who.hex())
        if on_disk + size > self.config.max_client_disk_bytes:
            raise ProtocolError(
                QUEUE_FULL, f"your jobs already hold {on_disk >> 20} MiB on the backend (limit {self.config.max_client_disk_bytes >> 20} MiB)",
                "wait for old jobs to be pruned (--keep-days), or ask whoever runs the backend to raise --max-client-disk-gb",
            )
        job = Job(uuid.uuid4().hex, msg.TYPE, who, request_bytes=size)
        try:
            self.store.create(job.record(), raw)
        except OSError as exc:
            if is_disk_full(exc):
                raise ProtocolError(DISK_FULL, "the backend's disk is full: the job was not queued", "free space on the backend's disk (or lower --keep-days / --max-jobs-gb), then submit again") from None
            raise
        self._remember(job)
        self.outbox.subscribe(peer, job.id, 0)
        position = self.queue.put(job)
        self._send(peer, Accepted(job.id, job.kind, position), request_id)

    def _check_source(self, who: bytes, job_id: str) -> None:
        state = self._job_state(who, job_id)
        if state.kind not in (Orbit.TYPE, NovelView.TYPE) or state.state != JobPhase.DONE:
            raise ProtocolError(UNKNOWN_JOB, f"job {job_id} is a {state.kind} job in state {state.state!r}", "reconstruct from a finished orbit job")

    def _cancel(self, who: bytes, job_id: str) -> JobState:
        state = self._job_state(who, job_id)  # refuses other identities' jobs
        job = self.jobs.get(job_id)
        if job is not None and job.active:
            job.cancel_requested.set()
            if self.queue.remove(job):  # never started: finish it here
                self.worker.finish(job, JobPhase.CANCELLED)
            state = self._job_state(who, job_id)
        return state

    def _job_state(self, who: bytes, job_id: str) -> JobState:
        """The state of ``who``'s job ``job_id``; another identity's job is reported unknown,
        exactly as a job that does not exist, so job ids reveal nothing."""
        job = self.jobs.get(job_id)
        if job is not None and job.owner == who:
            return JobState(job.id, job.kind, job.state.value, job.stage, job.fraction, job.seq, max(0, self.queue.position(job)), job.error)
        record = self.store.read(job_id) if job is None and is_job_id(job_id) else None
        if record is None or record.owner != who.hex():
            raise ProtocolError(UNKNOWN_JOB, f"no job {job_id[:40]!r} of yours on this backend", "the job id may be from another backend or another client, or its folder was deleted")
        return JobState(job_id, record.kind, record.state.value, record.stage, record.fraction, record.last_seq, 0, record.error)

    def _fetch(self, peer: bytes, who: bytes, msg: FetchResult, request_id: str) -> None:
        state = self._job_state(who, msg.job_id)
        self._send(peer, state, request_id)
        job = self.jobs.get(msg.job_id)
        ended = job is None or not job.active
        end_seq = None
        if ended:
            seqs = self.store.event_seqs(msg.job_id)
            end_seq = seqs[-1] if seqs else 0
        self.outbox.subscribe(peer, msg.job_id, msg.after_seq, end_seq)

    def _remember(self, job: Job) -> None:
        self.jobs[job.id] = job
        # Forget the oldest finished jobs; their folders still answer status and fetch.
        while len(self.jobs) > self.config.jobs_in_memory:
            oldest = next((j for j in self.jobs.values() if not j.active), None)
            if oldest is None:
                break
            del self.jobs[oldest.id]

    # --- sending ------------------------------------------------------------------------------

    def _send(self, peer: bytes, msg: Message, request_id: str = "") -> None:
        self.outbox.reply(self.socket, peer, codec.encode(msg, request_id))

    def _flush(self) -> None:
        self.outbox.flush(self.socket)

    def _heartbeat(self) -> None:
        """Each client that follows a live job gets a pong naming its own jobs' states."""
        now = time.monotonic()
        followed: dict[bytes, list[str]] = collections.defaultdict(list)
        for job in list(self.jobs.values()):
            if job.active:
                for peer in self.outbox.subscribers(job.id):
                    followed[peer].append(job.id)
        for peer, job_ids in followed.items():
            seen, who = self._peers.get(peer, (0.0, b""))
            if who and now - seen < self.config.client_timeout_s:
                self._send(peer, self._pong(who, job_ids, peer))
        # Forget silent clients that follow nothing, so the table cannot grow forever.
        for peer, (seen, _) in list(self._peers.items()):
            if now - seen > self.config.client_timeout_s and peer not in followed:
                del self._peers[peer]


_HANDSHAKE_FAILED = {
    getattr(zmq, name) for name in ("EVENT_HANDSHAKE_FAILED_AUTH", "EVENT_HANDSHAKE_FAILED_PROTOCOL", "EVENT_HANDSHAKE_FAILED_NO_DETAIL")
    if hasattr(zmq, name)
}


def _handshake_monitor(sock: zmq.Socket, context: zmq.Context) -> zmq.Socket:
    """A PAIR socket receiving ``sock``'s failed handshakes, so that refusals get logged."""
    endpoint = f"inproc://blend123-server-monitor-{uuid.uuid4().hex}"
    sock.monitor(endpoint, sum(_HANDSHAKE_FAILED))
    monitor = context.socket(zmq.PAIR)
    monitor.linger = 0
    monitor.connect(endpoint)
    return monitor


def _recv_bounded(sock: zmq.Socket, max_frames: int) -> list[zmq.Frame] | None:
    """One multipart message, or None when none is waiting. A message with more than
    ``max_frames`` frames is drained cheaply and returned as its routing frame alone."""
    try:
        first = sock.recv(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    frames = [first]
    while frames[-1].more:
        if len(frames) >= max_frames:
            rest = frames[-1]
            while rest.more:  # discard the rest: the fastest way pyzmq has (~0.5 us a frame)
                rest = sock.recv(copy=False)
            return [first]
        frames.append(sock.recv(copy=False))
    return frames


def _user_id(frames: list[zmq.Frame]) -> str | None:
    """The CURVE public key (Z85) the ZAP handler attached to the message, if any."""
    try:
        return frames[1].get("User-Id") or None
    except (zmq.ZMQError, IndexError):
        return None


def _nbytes(frame: Any) -> int:
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf).nbytes


def _log_pace(probe: str, pace: float | None, until: str = "") -> None:
    """What the first estimates start from, for a user wondering why they say what they say."""
    if pace is None:
        log.warning("the %s's reading made no sense: it was ignored", probe)
    else:
        log.info("%s: this machine takes %.3g s per second of the benchmark machine's; first estimates start from it%s",
                 probe, pace, f", {until}" if until else "")
