"""The backend under faults and abuse, as real `blend123 serve` processes meet them.

Each scenario is bounded in count and time, and asserts what users rely on: the server
keeps answering an honest client's ping within a second, its memory stays within 1 GiB of
idle, finished results fetch intact, and every waiting client gets an end or an error.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest
import zmq

from blend123.protocol import codec
from blend123.protocol.client import Client
from blend123.backend.cli import run_job
from blend123.protocol.errors import DISK_FULL, JOB_LOST, TIMEOUT, UNKNOWN_JOB, ProtocolError
from blend123.protocol.messages import Done, Error, FetchResult, GenerationSettings, Hello, NovelView, Orbit, View

from .conftest import ServeProcess

SMALL = GenerationSettings(resolution=64)
PING_LIMIT_S = 1.0
MEMORY_SLACK = 1 << 30


HONEST = zmq.Context()  # its own I/O thread, as another process would have


def ping_seconds(address: str) -> float:
    """How long an honest client waits for its pong."""
    with Client(address, timeout_s=10, context=HONEST) as honest:
        started = time.monotonic()
        honest.ping()
        return time.monotonic() - started


def rss(proc: subprocess.Popen) -> int:
    return psutil.Process(proc.pid).memory_info().rss


def one_view(client: Client, image: np.ndarray) -> list:
    job_id = client.submit(NovelView(image, np.zeros((1, 3)), SMALL))
    return list(client.events(job_id))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for a jobs folder (needs the right to mount, as root has)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()[:100]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_ends_the_job_keeps_earlier_results_and_the_server_runs_on(small_disk, reference_image):
    backend = ServeProcess([], small_disk / "jobs")
    try:
        with Client(backend.address, timeout_s=30, heartbeat_s=0.2) as client:
            earlier = one_view(client, reference_image)
            assert isinstance(earlier[-1], Done)
            earlier_id = earlier[-1].job_id
            # 21 views at 512 px do not fit in what is left of 4 MiB.
            big = client.submit(Orbit(reference_image, [10.0], settings=GenerationSettings(resolution=512)))
            events = list(client.events(big))
            assert isinstance(events[-1], Error) and events[-1].code == DISK_FULL, events[-1]
            assert "free space" in events[-1].hint
            assert ping_seconds(backend.address) < PING_LIMIT_S
            # The partial job is gone, the earlier one is intact, and jobs run again at once.
            assert not (small_disk / "jobs" / big).exists()
            client.resume(earlier_id)
            replay = list(client.events(earlier_id))
            assert any(isinstance(e, View) for e in replay) or client.status(earlier_id).state == "done"
            again = one_view(client, reference_image)
            assert isinstance(again[-1], Done) and again[-1].state == "done"
    finally:
        backend.stop()


def test_kill_9_mid_job_then_restart_ends_the_waiting_client_with_job_lost(tmp_path, reference_image):
    jobs = tmp_path / "jobs"
    backend = ServeProcess([], jobs)
    client = Client(backend.address, timeout_s=60, heartbeat_s=0.2)
    try:
        job_id = client.submit(Orbit(reference_image, [10.0], settings=GenerationSettings(resolution=256)))
        stream = client.events(job_id)
        next(e for e in stream if isinstance(e, View))
        backend.proc.kill()
        backend.proc.wait(10)
        restarted = ServeProcess([], jobs, port=backend.port)
        try:
            started = time.monotonic()
            rest = list(stream)
            assert isinstance(rest[-1], Error) and rest[-1].code == JOB_LOST, rest[-1]
            assert time.monotonic() - started < 15
            assert client.status(job_id).state == "interrupted"
        finally:
            restarted.stop()
    finally:
        client.close()
        backend.stop()


def test_a_command_whose_backend_dies_says_where_to_look_and_what_to_run(tmp_path, reference_image, capsys):
    """The client's advice to resume the job needs a job id and a command the command line
    has not: a command tells the user which backend to check and to run it again. While
    the backend is silent, its bar says so instead of freezing at its last time left."""
    backend = ServeProcess([], tmp_path / "jobs")
    client = Client(backend.address, timeout_s=2.0, heartbeat_s=0.2)
    try:
        events = run_job(client, Orbit(reference_image, [10.0], settings=GenerationSettings(resolution=512)), quiet=False)
        next(e for e in events if isinstance(e, View))
        assert "no answer from the backend" not in capsys.readouterr().err  # at work: it answers
        backend.proc.kill()
        backend.proc.wait(10)
        with pytest.raises(ProtocolError) as failed:
            list(events)
        error = failed.value
        assert error.code == TIMEOUT and "has not answered" in error.message, error
        assert backend.address in error.hint and "run the command again" in error.hint and "resume" not in error.hint
        assert "no answer from the backend for 1 s (giving up at 2 s)" in capsys.readouterr().err
    finally:
        client.close()
        backend.stop()


def test_a_corrupted_jobs_folder_is_reported_and_skipped(tmp_path, reference_image):
    jobs = tmp_path / "jobs"
    backend = ServeProcess([], jobs)
    with Client(backend.address, timeout_s=30) as client:
        good = one_view(client, reference_image)[-1].job_id
        token = client.token
    backend.stop()
    # Damage: malformed records of every kind, a partial folder, a truncated end event.
    for content in ("null", "[]", '{"id": "%s", "created": "yesterday"}', "{not json"):
        job = uuid.uuid4().hex
        (jobs / job / "events").mkdir(parents=True)
        (jobs / job / "job.json").write_text(content.replace("%s", job))
    (jobs / uuid.uuid4().hex).mkdir()
    events = sorted((jobs / good / "events").glob("*.bin"))
    events[-1].write_bytes(events[-1].read_bytes()[:7])  # the Done event, cut short
    restarted = ServeProcess([], jobs)
    try:
        assert restarted.proc.poll() is None
        with Client(restarted.address, timeout_s=30, heartbeat_s=0.2, token=token) as client:
            assert client.resume(good).state == "done"
            replay = list(client.events(good))  # the readable view, then an end all the same
            assert any(isinstance(e, View) for e in replay) and isinstance(replay[-1], Done)
    finally:
        restarted.stop()
    assert "skipping the unreadable" in restarted.output()


def test_a_client_that_never_reads_cannot_blow_up_the_servers_memory(serve_process, reference_image):
    backend = serve_process()
    with Client(backend.address, timeout_s=60) as owner:
        job_id = owner.submit(Orbit(reference_image, [10.0], settings=GenerationSettings(resolution=512)))
        assert isinstance(list(owner.events(job_id))[-1], Done)
        idle = rss(backend.proc)
        # The same identity, a socket that asks for the 21 x 1 MiB job 30 times and never reads.
        context = zmq.Context.instance()
        greedy = context.socket(zmq.DEALER)
        greedy.linger = 0
        greedy.rcvhwm = 1
        greedy.connect(backend.address)
        for _ in range(30):
            greedy.send_multipart(codec.encode(FetchResult(job_id), uuid.uuid4().hex, owner.token))
        time.sleep(2.0)
        assert ping_seconds(backend.address) < PING_LIMIT_S
        assert rss(backend.proc) - idle < MEMORY_SLACK
        # The owner, from a fresh session, still fetches every view intact.
        with Client(backend.address, timeout_s=60, token=owner.token) as again:
            again.resume(job_id)
            views = [e for e in again.events(job_id) if isinstance(e, View)]
        assert len({v.index for v in views}) == 21 and all(v.image.shape == (512, 512, 4) for v in views)
        greedy.close(0)


def _seconds_to_discard(context: zmq.Context, frames: int) -> float:
    """How long this machine takes to hand a message of ``frames`` empty frames over a
    loopback socket pair and discard it, as the server does, with nothing else to do (the
    receiver in a context of its own, as the server's I/O thread is its own)."""
    own = zmq.Context()
    receiver = own.socket(zmq.ROUTER)
    receiver.linger = 0
    port = receiver.bind_to_random_port("tcp://127.0.0.1")
    sender = context.socket(zmq.DEALER)
    sender.linger = 0
    sender.sndhwm = 0
    sender.connect(f"tcp://127.0.0.1:{port}")
    try:
        sender.send_multipart([b""] * frames)
        started = time.monotonic()
        assert receiver.poll(30_000)
        frame = receiver.recv(copy=False)
        while frame.more:
            frame = receiver.recv(copy=False)
        return time.monotonic() - started
    finally:
        sender.close(0)
        receiver.close(0)
        own.term()


def test_200_sockets_and_a_million_frames_do_not_stall_the_server(serve_process):
    backend = serve_process()
    idle = rss(backend.proc)
    context = zmq.Context.instance()
    crowd = []
    for _ in range(200):
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(backend.address)
        sock.send_multipart(codec.encode(Hello("crowd"), "x"))
        crowd.append(sock)
    assert ping_seconds(backend.address) < PING_LIMIT_S
    # ZeroMQ hands a multipart message over whole: while the server discards the million
    # frames other requests wait: 0.5-1 s on one host, 2.5-3.7 s on a slower one, about as
    # long as a bare socket pair takes for it there. Before, the same message stalled
    # everyone for ten times that (5-17 s on the first host). The bound is the bare pair's
    # time on this machine (the slower of two readings: one reading swung 2-3.5 s on one
    # host), with room for a server that shares the CPUs with this test.
    bare = max(_seconds_to_discard(context, 1_000_000) for _ in range(2))
    bound = max(2.0, 2.5 * bare + 0.5)
    flood = context.socket(zmq.DEALER)
    flood.linger = 0
    flood.sndhwm = 0
    flood.connect(backend.address)
    flood.send_multipart([b""] * 1_000_000)
    started = time.monotonic()
    longest = 0.0
    while time.monotonic() - started < 3:  # the server drains it; an honest ping goes on meanwhile
        longest = max(longest, ping_seconds(backend.address))
    assert longest < bound, f"an honest ping waited {longest:.2f} s (bound {bound:.2f} s)"
    assert flood.poll(5000), "the million-frame message got no error reply"
    reply = codec.decode(flood.recv_multipart()).message
    assert isinstance(reply, Error) and reply.code == "too_large"
    assert rss(backend.proc) - idle < MEMORY_SLACK
    for sock in [*crowd, flood]:
        sock.close(0)


def test_a_hostile_server_cannot_hang_or_crash_the_client():
    """A ROUTER that never answers, then sends garbage, absurd sequence numbers and
    undecodable frames between real events: the client neither hangs nor loses events."""
    context = zmq.Context.instance()
    evil = context.socket(zmq.ROUTER)
    evil.linger = 0
    port = evil.bind_to_random_port("tcp://127.0.0.1")
    client = Client(f"tcp://127.0.0.1:{port}", timeout_s=3, heartbeat_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(ProtocolError) as silent:
            client.hello()
        assert silent.value.code == "timeout" and time.monotonic() - started < 6
        assert evil.poll(1000)
        peer = evil.recv_multipart()[0]
        job_id = "f" * 32
        client._active.add(job_id)  # as after a submit
        image = np.zeros((8, 8, 4), np.uint8)
        c2w = np.eye(4, dtype=np.float32)
        evil.send_multipart([peer, *codec.encode(View(job_id, 0, 2, 0, 0, 2, c2w, 0.6, image, seq=2))])
        evil.send_multipart([peer, b"\xc1 not msgpack"])
        evil.send_multipart([peer, *codec.encode(View(job_id, 9, 9, 0, 0, 2, c2w, 0.6, image, seq=2**62))])
        evil.send_multipart([peer, msgpack.packb({"v": 99, "t": "view", "id": "", "b": {}})])
        evil.send_multipart([peer, *codec.encode(View(job_id, 1, 2, 0, 0, 2, c2w, 0.6, image, seq=3))])
        evil.send_multipart([peer, *codec.encode(Done(job_id, "done", seq=4))])
        got: list = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(isinstance(e, Done) for e in got):
            got.extend(client.poll(max_events=2))
        assert [e.index for e in got if isinstance(e, View)] == [0, 9, 1]
        assert isinstance(got[-1], Done)
    finally:
        client.close()
        evil.close(0)


def test_another_identity_cannot_fetch_or_cancel_on_a_serve_process(serve_process, reference_image):
    backend = serve_process()
    with Client(backend.address, timeout_s=30) as owner, Client(backend.address, timeout_s=30) as other:
        job_id = owner.submit(Orbit(reference_image, [10.0], settings=SMALL))
        for attempt in (other.cancel, other.resume, other.status):
            with pytest.raises(ProtocolError) as refused:
                attempt(job_id)
            assert refused.value.code == UNKNOWN_JOB
        assert other.ping().running_job == ""
        assert isinstance(list(owner.events(job_id))[-1], Done)
    jobs_dir = Path(backend.jobs_dir)
    assert jobs_dir.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (jobs_dir / job_id).rglob("*") if p.is_file())
    assert json.loads((jobs_dir / job_id / "job.json").read_text())["owner"]
