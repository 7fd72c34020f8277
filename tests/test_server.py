"""The backend server over real loopback sockets: jobs, streaming, cancel, resume, limits."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from blend123.protocol.errors import QUEUE_FULL, TIMEOUT, UNKNOWN_JOB, UNKNOWN_MODEL, ProtocolError
from blend123.protocol.messages import Done, Error, GenerationSettings, NovelView, Orbit, Ping, Pong, Progress, View
from blend123.protocol.version import PROTOCOL_VERSION

FAST = GenerationSettings(resolution=64)


def orbit_request(image, views=21):
    return Orbit(image, [10.0], views=views, settings=FAST)


def test_hello_describes_the_backend(server, client_factory, monkeypatch):
    client = client_factory(server.endpoint)
    # The CPUs other processes leave free lately: all of them, then none.
    monkeypatch.setattr(server.load, "cpus", 2)
    monkeypatch.setattr(server.load, "free", lambda: 2.0)
    reply = client.hello()
    assert reply.protocol_version == PROTOCOL_VERSION and reply.server_version
    assert reply.device in ("cpu", "cuda")
    default = next(m for m in reply.models if m.name == "default")
    assert default.available and "proxy" in default.description
    assert reply.limits["max_queue"] == server.config.max_queue
    # The orbit's share by the machine's stage timings; with no second CPU free the mesh
    # runs photo carving (on the CPU), the unwrap and the bake on one, and weighs more.
    on_cpu = reply.device == "cpu"
    assert reply.proxy_orbit_share == pytest.approx(server.stage_memory.proxy_orbit_share(True, on_cpu)) and 0.05 < reply.proxy_orbit_share < 0.3
    monkeypatch.setattr(server.load, "free", lambda: 0.0)
    busy = client.hello().proxy_orbit_share
    assert busy == pytest.approx(server.stage_memory.proxy_orbit_share(False, on_cpu)) and busy < 0.8 * reply.proxy_orbit_share
    # Background removal for photos is listed, available or with what to install.
    assert reply.matting is not None and (reply.matting.available or "matting" in reply.matting.hint)


def test_novel_view_job_streams_progress_then_views_then_done(server, client_factory, reference_image):
    client = client_factory(server.endpoint)
    poses = np.array([[0.0, 90.0, 0.0], [20.0, -45.0, 0.0]])
    job_id = client.submit(NovelView(reference_image, poses, FAST))
    events = list(client.events(job_id))
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Done" and events[-1].state == "done"
    assert "Progress" in kinds
    views = [e for e in events if isinstance(e, View)]
    assert [v.index for v in views] == [0, 1]
    assert views[0].image.shape == (64, 64, 4) and views[0].image.dtype == np.uint8
    assert views[0].azimuth == 90.0 and views[1].elevation == 20.0
    np.testing.assert_allclose(views[0].c2w[:3, 3], [2, 0, 0], atol=1e-5)  # relative +90: camera on +X
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Inputs and results are kept in the jobs folder.
    folder = server.store.folder(job_id)
    assert (folder / "request.bin").is_file() and (folder / "views" / "view_001.png").is_file()
    transforms = json.loads((folder / "transforms.json").read_text())
    assert len(transforms["frames"]) == 2 and np.array(transforms["frames"][0]["transform_matrix"]).shape == (4, 4)
    assert client.status(job_id).state == "done"


def test_cancel_stops_a_running_job_within_one_step(server, client_factory, reference_image):
    client = client_factory(server.endpoint)
    job_id = client.submit(orbit_request(reference_image))
    views_before_cancel = 0
    after_cancel: list = []
    cancelled = False
    for event in client.events(job_id):
        if cancelled:
            after_cancel.append(event)
        elif isinstance(event, View):
            views_before_cancel += 1
            if views_before_cancel == 2:
                client.cancel(job_id)
                cancelled = True
    assert isinstance(after_cancel[-1], Done) and after_cancel[-1].state == "cancelled"
    # The view in flight may finish, nothing after it.
    assert sum(isinstance(e, View) for e in after_cancel) <= 1
    assert client.status(job_id).state == "cancelled"
    # The worker let go of the job: a new one runs straight away.
    assert server.worker.current is None or server.worker.current.id != job_id
    follow_up = client.submit(NovelView(reference_image, np.zeros((1, 3)), FAST))
    assert isinstance(list(client.events(follow_up))[-1], Done)


def test_cancel_of_a_queued_job_never_runs_it(server, client_factory, reference_image):
    client = client_factory(server.endpoint)
    first = client.submit(orbit_request(reference_image))
    second = client.submit(orbit_request(reference_image))
    state = client.cancel(second)
    assert state.state == "cancelled"
    second_events = list(client.events(second))
    assert [type(e) for e in second_events] == [Done] and second_events[0].state == "cancelled"
    client.cancel(first)
    assert list(client.events(first))[-1].state == "cancelled"


def test_a_client_that_disconnects_fetches_the_result_later(server, client_factory, reference_image):
    first = client_factory(server.endpoint)
    job_id = first.submit(orbit_request(reference_image))
    for event in first.events(job_id):
        if isinstance(event, View):
            break  # got one view, then "Blender crashed"
    first.close()

    # Blender comes back with the token it saved: the same client to the backend.
    second = client_factory(server.endpoint, token=first.token)
    deadline = time.monotonic() + 60
    while second.status(job_id).state != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state = second.resume(job_id)
    assert state.state == "done"
    events = list(second.events(job_id))
    views = [e for e in events if isinstance(e, View)]
    assert sorted(v.index for v in views) == list(range(21))
    assert isinstance(events[-1], Done)


def test_resume_mid_job_misses_nothing_and_repeats_nothing(server, client_factory, reference_image):
    client = client_factory(server.endpoint)
    job_id = client.submit(orbit_request(reference_image))
    seen = []
    for event in client.events(job_id):
        if isinstance(event, View):
            seen.append(event.index)
            if len(seen) == 3:
                break
    # Reconnect on the same client object (e.g. after a network drop) and pick up from there.
    client.resume(job_id)
    for event in client.events(job_id):
        if isinstance(event, View):
            seen.append(event.index)
    assert seen == list(range(21))


def test_twenty_clients_at_once_none_lost(server_factory, client_factory, reference_image):
    server = server_factory(max_queue=12)
    outcomes: dict[int, str] = {}

    def one_client(i: int) -> None:
        client = client_factory(server.endpoint, timeout_s=60)
        try:
            job_id = client.submit(NovelView(reference_image, np.array([[0.0, 18.0 * i, 0.0]]), FAST))
        except ProtocolError as exc:
            outcomes[i] = f"refused:{exc.code}:{exc.hint}"
            return
        events = list(client.events(job_id))
        views = [e for e in events if isinstance(e, View)]
        outcomes[i] = "done" if isinstance(events[-1], Done) and len(views) == 1 else f"lost:{events[-1]}"

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 20
    done = [i for i, o in outcomes.items() if o == "done"]
    refused = [o for o in outcomes.values() if o.startswith("refused")]
    assert len(done) + len(refused) == 20, outcomes
    assert len(done) >= 12
    assert all(o.startswith(f"refused:{QUEUE_FULL}:") and o.split(":", 2)[2] for o in refused)


def test_per_client_job_limit(server_factory, client_factory, reference_image):
    server = server_factory(max_jobs_per_client=2)
    client = client_factory(server.endpoint)
    jobs = [client.submit(orbit_request(reference_image)) for _ in range(2)]
    with pytest.raises(ProtocolError) as err:
        client.submit(orbit_request(reference_image))
    assert err.value.code == QUEUE_FULL
    other = client_factory(server.endpoint)  # someone else is not affected
    other_job = other.submit(NovelView(reference_image, np.zeros((1, 3)), FAST))
    for job in jobs:
        client.cancel(job)
    assert isinstance(list(other.events(other_job))[-1], Done)


def test_bad_requests_get_errors_and_the_server_carries_on(server, client_factory, reference_image):
    client = client_factory(server.endpoint)
    with pytest.raises(ProtocolError) as err:
        client.submit(NovelView(reference_image, np.zeros((1, 3)), GenerationSettings(model="zero123-nope")))
    assert err.value.code == UNKNOWN_MODEL and "default" in err.value.hint
    with pytest.raises(ProtocolError) as err:
        client.status("f" * 32)
    assert err.value.code == UNKNOWN_JOB
    # An image with no subject fails inside the job: an error event that says what to do.
    blank = np.full((64, 64, 4), 255, np.uint8)
    job_id = client.submit(NovelView(blank, np.zeros((1, 3)), FAST))
    events = list(client.events(job_id))
    assert isinstance(events[-1], Error) and events[-1].job_id == job_id and events[-1].hint
    assert events[-1].code == "bad_image"
    assert client.status(job_id).state == "failed"
    assert client.hello().server_version


def test_the_client_notices_a_dead_backend(serve_process, client_factory, reference_image):
    backend = serve_process()
    client = client_factory(backend.address, timeout_s=30.0, heartbeat_s=0.2)
    job_id = client.submit(orbit_request(reference_image))
    client.timeout_s = 2.0
    backend.proc.kill()  # no goodbye: a crash, or the network gone
    started = time.monotonic()
    with pytest.raises(ProtocolError) as err:
        for _ in client.events(job_id):
            pass
    assert err.value.code == TIMEOUT
    assert time.monotonic() - started < 6


def test_poll_never_blocks_and_heartbeats_arrive(server, client_factory, reference_image):
    client = client_factory(server.endpoint, heartbeat_s=0.2)
    job_id = client.submit(orbit_request(reference_image))
    started = time.monotonic()
    assert isinstance(client.poll(), list)
    assert time.monotonic() - started < 1.0  # a blocking poll would wait out the 10 s timeout
    got_done = False
    deadline = time.monotonic() + 60
    while not got_done and time.monotonic() < deadline:
        for event in client.poll():
            got_done |= isinstance(event, Done) and event.job_id == job_id
            assert not isinstance(event, Error), event
        time.sleep(0.02)
    assert got_done and job_id not in client.active_jobs


def test_results_survive_a_backend_restart(tmp_path, client_factory, reference_image):
    from blend123.backend.server import Server, ServerConfig
    from blend123.backend.server.app import identity

    jobs_dir = tmp_path / "jobs"
    first = Server(ServerConfig(bind="tcp://127.0.0.1:0", jobs_dir=jobs_dir))
    thread = first.start_in_thread()
    client = client_factory(first.endpoint)
    job_id = client.submit(NovelView(reference_image, np.zeros((1, 3)), FAST))
    assert isinstance(list(client.events(job_id))[-1], Done)
    first.stop()
    thread.join(10)
    # A job of this client's that the first backend never finished, and a finished one from long ago.
    stale, old = "a" * 32, "b" * 32
    owner = identity(b"", None, client.token).hex()
    for job, state, created in ((stale, "running", time.time()), (old, "done", time.time() - 30 * 86400)):
        (jobs_dir / job / "events").mkdir(parents=True)
        (jobs_dir / job / "job.json").write_text(json.dumps({"id": job, "kind": "orbit", "state": state, "created": created, "owner": owner}))

    second = Server(ServerConfig(bind="tcp://127.0.0.1:0", jobs_dir=jobs_dir, keep_days=14))
    second.start_in_thread()
    try:
        later = client_factory(second.endpoint, token=client.token)
        assert later.resume(job_id).state == "done"
        events = list(later.events(job_id))
        assert [type(e).__name__ for e in events] == ["View", "Done"]
        interrupted = later.status(stale)
        assert interrupted.state == "interrupted" and "submit it again" in interrupted.error
        assert not (jobs_dir / old).exists()
    finally:
        second.stop()


def test_the_server_keeps_each_jobs_request_for_its_owner_only(server, client_factory, reference_image):
    from blend123.protocol import codec
    from blend123.protocol.messages import Reconstruct

    client = client_factory(server.endpoint)
    job_id = client.submit(Orbit(reference_image, [10.0], views=2, settings=GenerationSettings(reference_elevation=15.0, resolution=64)))
    list(client.events(job_id))
    stored = codec.decode(server.store.read_request(job_id)).message
    assert isinstance(stored, Orbit) and stored.settings.reference_elevation == 15.0
    assert np.array_equal(stored.image, reference_image)
    # Another client cannot build on it: its orbit is not theirs.
    stranger = client_factory(server.endpoint)
    with pytest.raises(ProtocolError) as err:
        stranger.submit(Reconstruct(source_job=job_id))
    assert err.value.code == UNKNOWN_JOB


def test_another_client_can_neither_see_nor_fetch_nor_cancel_a_job(server, client_factory, reference_image):
    owner = client_factory(server.endpoint)
    job_id = owner.submit(orbit_request(reference_image))
    stranger = client_factory(server.endpoint)
    for attempt in (stranger.status, stranger.resume, stranger.cancel):
        with pytest.raises(ProtocolError) as refused:
            attempt(job_id)
        assert refused.value.code == UNKNOWN_JOB
    # The stranger's pings do not reveal the job either.
    assert stranger.ping().running_job == ""
    assert stranger._request(Ping([job_id]), Pong).jobs == {job_id: "unknown"}
    # The owner's job ran on, untouched.
    assert isinstance(list(owner.events(job_id))[-1], Done) and owner.status(job_id).state == "done"
    folder = server.store.folder(job_id)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "job.json").stat().st_mode & 0o777 == 0o600
    assert server.store.root.stat().st_mode & 0o077 == 0


def test_a_refused_request_is_answered_at_once_with_the_servers_reason(server, client_factory, reference_image):
    client = client_factory(server.endpoint, timeout_s=30)
    started = time.monotonic()
    with pytest.raises(ProtocolError) as refused:
        client.submit(Orbit(reference_image, [10.0], views=0, settings=FAST))
    assert time.monotonic() - started < 2.0
    assert refused.value.code == "bad_request" and "views" in refused.value.message


def test_each_client_has_a_disk_quota_and_others_are_not_held_to_it(server_factory, client_factory, reference_image):
    server = server_factory(max_client_disk_bytes=600_000)
    greedy = client_factory(server.endpoint)
    first = greedy.submit(Orbit(reference_image, [10.0], views=4, settings=GenerationSettings(resolution=256)))
    assert isinstance(list(greedy.events(first))[-1], Done)
    assert server.store.read(first).stored_bytes > 300_000  # four 256 px views and their PNGs
    with pytest.raises(ProtocolError) as refused:
        greedy.submit(Orbit(reference_image, [10.0], views=4, settings=GenerationSettings(resolution=256)))
    assert refused.value.code == QUEUE_FULL and "MiB on the backend" in refused.value.message
    other = client_factory(server.endpoint)
    job = other.submit(NovelView(reference_image, np.zeros((1, 3)), FAST))
    assert isinstance(list(other.events(job))[-1], Done)
