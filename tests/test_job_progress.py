"""One progress bar for the whole job: overall fraction and total ETA, stage named inside."""

from __future__ import annotations

import numpy as np
import pytest

from blend123.backend.device import describe_device
from blend123.backend.progress import _OWN_CPU_BESIDE, FIXED_COST_STAGES, JOB_STAGES, ONE_WORKER_SECONDS, STAGE_SECONDS, StageClock, Way, load_pace, photo_fractions, photo_seconds, quiet_machine, unwrap_seconds, way_scale
from blend123.backend.server.stage_memory import _LEARN_RATE, _LEARN_RATE_SHOWN, StageMemory, _toward
from blend123.protocol.job_progress import ChainProgress, orbit_share
from blend123.protocol.messages import Orbit, Progress, Reconstruct

from .test_server import FAST


def _run_through(clock: StageClock, stages: list[str], seconds_of, steps=(0.0, 0.25, 0.5, 0.75, 1.0)):
    """Feed ``clock`` every stage at ``steps``; ``seconds_of(stage)`` is what it really takes.
    Yields (stage, fraction, overall, eta, seconds really left)."""
    total = sum(seconds_of(s) for s in stages)
    elapsed = 0.0
    for stage in stages:
        for fraction in steps:
            now = elapsed + fraction * seconds_of(stage)
            overall, eta = clock.update(stage, fraction, now)
            yield stage, fraction, overall, eta, total - now
        elapsed += seconds_of(stage)


def test_the_stage_clock_counts_the_stages_done_and_learns_the_pace():
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]  # no model: never reported
    total = sum(STAGE_SECONDS[s] for s in stages)
    # A machine twice as slow as the benchmark's, for every stage alike.
    seen = list(_run_through(StageClock("reconstruct"), stages, lambda s: 2.0 * STAGE_SECONDS[s]))
    overall = [o for _, _, o, _, _ in seen]
    assert overall == sorted(overall) and overall[-1] == 1.0
    assert all(eta >= 0 for _, _, o, eta, _ in seen if o > 0) and seen[-1][3] == 0.0
    first = next(eta for _, _, o, eta, _ in seen if eta > 0)
    assert abs(first / total - 1.0) < 0.1  # it starts from the benchmark's pace...
    late = [(eta, left) for stage, f, o, eta, left in seen if stage == "texture" and 0 < f < 1]
    # ...and ends nearer the machine's (a uniformly slow machine, not yet known, is taken to
    # be half a costly object: the output-sized stages get part of the pace until they run).
    assert all(abs(eta / left - 1.0) < 0.35 for eta, left in late), late
    # Told the machine's pace (its last job's), it is right from the start.
    seen = list(_run_through(StageClock("reconstruct", prior_pace=2.0), stages, lambda s: 2.0 * STAGE_SECONDS[s]))
    assert all(abs(eta / left - 1.0) < 0.05 for _, _, o, eta, left in seen if eta > 0 and left > 0.5)
    assert StageClock("reconstruct").update("carve", 0.0, 0.0) == (0.0, -1.0)  # no time yet: no pace


def test_the_machines_load_and_last_pace_set_where_the_estimate_starts():
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]
    total = sum(STAGE_SECONDS[s] for s in stages)
    _, eta = StageClock("reconstruct", prior_pace=1.5, load=1.5).update("carve", 0.0, 0.01)
    assert abs(eta / (1.5 * total) - 1.0) < 0.05
    # A stage on one thread: fair shares of the CPUs among the others' threads and the job's.
    assert load_pace(free_cpus=2.0, cpus=2) == 1.0  # quiet
    assert load_pace(free_cpus=0.0, cpus=2) == pytest.approx(1.7)  # two busy processes on the two CPUs
    assert 1.0 < load_pace(free_cpus=1.0, cpus=2) < 1.3  # one busy process leaves the job's thread a CPU
    assert load_pace(free_cpus=1.0, cpus=1) == 1.0  # a quiet one-CPU machine is as the benchmark
    assert load_pace(free_cpus=0.0, cpus=1) == pytest.approx(2.4 / 1.4)  # shared with a busy process
    assert load_pace(free_cpus=14.0, cpus=16) == 1.0
    # Only a machine whose CPUs are free teaches the stages' ratios: the counters never read
    # quite idle, and a half-busy one runs the stages planned otherwise.
    assert quiet_machine(1.9, 2) and quiet_machine(0.9, 1) and quiet_machine(3.0, 16)
    assert not quiet_machine(1.0, 2) and not quiet_machine(0.5, 1)


def test_fixed_cost_stages_take_only_part_of_an_objects_pace():
    # A costly object on the benchmark's machine: its own stages take 4x the benchmark's,
    # the output-sized ones (uv, texture, export) the benchmark's time.
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]
    object_stages = stages[: stages.index("refine") + 1]
    clock = StageClock("reconstruct", quiet=False)  # the uv stage not waiting on the fit: its whole weight
    for _ in _run_through(clock, object_stages, lambda s: 4.0 * STAGE_SECONDS[s]):
        pass
    _, eta = clock.update("uv", 0.0, 4.0 * sum(STAGE_SECONDS[s] for s in object_stages))
    fixed = sum(STAGE_SECONDS[s] for s in ("uv", "texture", "export"))
    assert clock.pace > 3.0 and fixed * 1.4 < eta < fixed * 2.5  # about sqrt(4) x, not 4 x


def test_the_running_stage_goes_by_its_own_pace_once_it_shows_one():
    clock = StageClock("orbit")
    w = STAGE_SECONDS["views"]
    clock.update("load model", 1.0, STAGE_SECONDS["load model"])  # the benchmark's pace so far
    clock.update("views", 0.0, STAGE_SECONDS["load model"])
    # The views come 3x slower than the benchmark's (a bigger model): late in the stage, its
    # own pace outweighs the job's.
    elapsed = STAGE_SECONDS["load model"] + 3.0 * 0.8 * w
    _, eta = clock.update("views", 0.8, elapsed)
    truth = 3.0 * 0.2 * w
    by_job_pace = 0.2 * w * clock.pace
    assert abs(eta - truth) < 0.6 * abs(by_job_pace - truth) and abs(eta / truth - 1.0) < 0.35


def test_a_plan_moves_the_estimate_and_never_the_bar_back():
    clock = StageClock("reconstruct")
    clock.update("carve", 1.0, STAGE_SECONDS["carve"])
    before, eta = clock.update("photo", 0.0, STAGE_SECONDS["carve"])
    clock.plan("photo", ONE_WORKER_SECONDS["photo"], Way.ONE_WORKER)
    clock.plan("uv", unwrap_seconds(50_000, beside=False), Way.AFTER_THE_FIT)
    after, planned = clock.update("photo", 0.0, STAGE_SECONDS["carve"] + 0.01)
    extra = ONE_WORKER_SECONDS["photo"] - STAGE_SECONDS["photo"] + unwrap_seconds(50_000, beside=False) - STAGE_SECONDS["uv"]
    assert after == before  # the work left grew: the bar holds
    assert planned - eta > 0.8 * extra
    assert unwrap_seconds(25_000, beside=False) == unwrap_seconds(50_000, beside=False) / 2
    assert unwrap_seconds(50_000, beside=True) == pytest.approx(STAGE_SECONDS["uv"])
    # Beside the fit, half the faces are unwrapped before the fit ends: the hand-over is left.
    assert unwrap_seconds(25_000, beside=True) < 0.2 * STAGE_SECONDS["uv"] < STAGE_SECONDS["uv"] < unwrap_seconds(60_000, beside=True)


def test_a_stage_planned_from_the_object_s_own_work_is_not_scaled_by_its_cost():
    """Photo carving plans itself from the work it sampled (``photo_seconds``): those are
    already this object's seconds, so the cost its views showed does not scale them again,
    and a job whose photo carving took its plan teaches the machine nothing about photo."""
    planned = photo_seconds(60_000, 900_000)
    assert planned > photo_seconds(60_000, 100_000) > photo_seconds(30_000, 100_000) > 0
    # The stage's own bar moves in proportion too: a small job's set-up is a larger share.
    small, large = photo_fractions([1500] * 20, 40_000), photo_fractions([3000] * 20, 2_000_000)
    assert small == sorted(small) and large == sorted(large) and small[-1] < 1.0 and large[-1] < 1.0
    assert small[0] > 3 * large[0] and small[1] - small[0] == pytest.approx(small[2] - small[1])
    costly = StageClock("reconstruct", object_cost=2.0)
    costly.plan("photo", planned, of_object=True)
    assert costly.weights["photo"] == pytest.approx(planned)
    costly.plan("photo", planned)  # the typical object's seconds: the object's cost applies
    assert costly.weights["photo"] == pytest.approx(2.0 * planned)
    costly.plan("photo", planned * 1.6, Way.ONE_WORKER, of_object=True)
    assert costly.weights["photo"] == pytest.approx(planned * 1.6)
    # Every stage took its weight at pace 1 on a costly object (photo its own plan): the
    # machine's pace and ratios stay 1.
    memory = StageMemory()
    memory.start_from(1.0)
    clock = memory.clock("reconstruct", object_cost=2.0)
    clock.plan("photo", planned, of_object=True)
    weights = dict(clock.weights)
    memory.learn(_run_stages(clock, lambda s: weights[s]))
    assert memory.pace == pytest.approx(1.0) and all(r == pytest.approx(1.0) for r in memory.ratios.values())
    assert set(memory.ratios) >= {"photo", "carve"}


def test_a_stage_missing_from_the_plan_is_added_where_it_runs():
    clock = StageClock("orbit")
    clock.update("load model", 1.0, 1.0)
    overall, _ = clock.update("warm up", 0.5, 2.0)
    assert clock.stages == ["load model", "warm up", "views"] and 0 < overall < 1
    assert clock.update("views", 1.0, 3.0) == (1.0, 0.0)


def test_the_chain_shares_one_bar_between_the_orbit_and_the_mesh():
    now = [0.0]
    chain = ChainProgress([0.25, 0.75], clock=lambda: now[0])
    # The backend's first estimate (the orbit at the pace it expects: 2 s) sets the pace of
    # the jobs to come: the whole chain in 8 s.
    now[0] = 0.01
    fraction, eta = chain.update(0, Progress("a", "load model", 0.0, eta_s=2.0, overall=0.0))
    assert fraction == 0.0 and abs(eta - 8.0) < 0.05
    # An orbit three times slower than expected (in the command's own backend it shares the
    # process with the import of torch) says so in its own ETA; the mesh stays at the
    # backend's expected 6 s, which its own clock corrects once it runs.
    now[0] = 3.0
    fraction, eta = chain.update(0, Progress("a", "views", 0.5, eta_s=3.0, overall=0.5))
    assert fraction == 0.125 and eta == pytest.approx(3.0 + 6.0)
    now[0] = 10.0
    fraction, eta = chain.update(1, Progress("b", "refine", 0.3, eta_s=7.0, overall=0.4))
    assert fraction == 0.25 + 0.75 * 0.4 and eta == 7.0  # the last job: its own ETA
    # An older backend without ``overall``: its stage fraction stands in.
    assert chain.update(1, Progress("b", "uv", 0.5, eta_s=-1.0))[0] == 0.25 + 0.75 * 0.5
    assert orbit_share("default") < 0.5 < orbit_share("sv3d-p")


def test_without_an_expected_pace_the_chain_goes_at_the_pace_it_shows():
    now = [0.0]
    chain = ChainProgress([0.5, 0.5], clock=lambda: now[0], expect=False)
    now[0] = 0.01
    assert chain.update(0, Progress("a", "views", 0.0, eta_s=1.0, overall=0.0))[1] == -1.0
    now[0] = 4.0
    fraction, eta = chain.update(0, Progress("a", "views", 0.5, eta_s=4.0, overall=0.5))
    assert fraction == 0.25 and eta == pytest.approx(4.0 + 0.5 * 4.0 / 0.25)


def test_the_proxy_orbits_share_is_the_backends_measure_of_its_machine():
    default = StageMemory()
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]
    orbit = STAGE_SECONDS["load model"] + STAGE_SECONDS["views"]
    assert default.proxy_orbit_share() == pytest.approx(orbit / (orbit + sum(STAGE_SECONDS[s] for s in stages)))
    # A machine whose reconstruction runs 1.5x slower than its proxy views, as measured.
    slow = StageMemory()
    proxy = StageClock("orbit")
    proxy.update("load model", 0.0, 0.0)
    proxy.update("views", 0.0, STAGE_SECONDS["load model"])
    proxy.finish(orbit)
    slow.learn(proxy)
    assert slow.proxy_orbit_share() == pytest.approx(default.proxy_orbit_share())
    for _ in range(20):  # each mesh job moves the machine's ratios part of the way
        slow.learn(_finished_clock(lambda s: 1.5 * STAGE_SECONDS[s]))
    assert slow.proxy_orbit_share() == pytest.approx(orbit / (orbit + 1.5 * sum(STAGE_SECONDS[s] for s in stages)), rel=0.01)
    # With no second CPU free, photo carving, the unwrap and the bake run on one: the mesh
    # weighs more against the orbit (one thread either way).
    one = {**STAGE_SECONDS, **ONE_WORKER_SECONDS, "uv": unwrap_seconds(50_000, beside=False)}
    busy = orbit / (orbit + sum(one[s] for s in stages))
    assert default.proxy_orbit_share(second_cpu=False) == pytest.approx(busy) and busy < 0.8 * default.proxy_orbit_share()
    # A machine whose one-worker bake took twice its plan weighs it so.
    default.ratios = {"texture (one worker)": 2.0}
    slower = orbit / (orbit + sum(one[s] for s in stages) + ONE_WORKER_SECONDS["texture"])
    assert default.proxy_orbit_share(second_cpu=False) == pytest.approx(slower)
    # The wait for the helper's unwrap (a plain "uv" ratio at its bound) says nothing of the
    # unwrap after the fit: it keeps its plan until the machine learns that way's own.
    default.ratios = {"texture (one worker)": 2.0, "uv": 0.05}
    assert default.proxy_orbit_share(second_cpu=False) == pytest.approx(slower, rel=0.01)
    assert way_scale({"uv": 0.05}, "uv", Way.AFTER_THE_FIT) == 1.0 and way_scale({"uv (after the fit)": 0.5}, "uv", Way.AFTER_THE_FIT) == 0.5
    assert way_scale({"photo": 1.3}, "photo", Way.ONE_WORKER) == 1.3
    # The bar takes the backend's share for the quick proxy, its own where there is none or
    # it makes no sense, and never for a diffusion model's orbit.
    assert ChainProgress.orbit_then_mesh("default", 0.09).shares == pytest.approx([0.09, 0.91])
    for share in (-1.0, 0.0, 0.9, float("nan")):
        assert ChainProgress.orbit_then_mesh("default", share).shares[0] == orbit_share("default")
    assert ChainProgress.orbit_then_mesh("sv3d-p", 0.09).shares[0] == orbit_share("sv3d-p")


def test_a_diffusion_orbit_starts_the_chain_from_no_expected_pace():
    # The backend weighs stages by the quick proxy's benchmark: a diffusion model's first
    # estimate would say its orbit takes a second.
    chain = ChainProgress.orbit_then_mesh("sv3d-p")
    assert chain.update(0, Progress("a", "views", 0.0, eta_s=1.1, overall=0.0))[1] == -1.0
    proxy = ChainProgress.orbit_then_mesh("default")
    assert proxy.update(0, Progress("a", "views", 0.0, eta_s=1.1, overall=0.0))[1] > 1.1


def test_only_jobs_the_benchmark_weighed_teach_the_worker_its_pace():
    from blend123.backend.server.worker import _weighed_by_the_benchmark
    from blend123.protocol.messages import GenerationSettings, NovelView

    image = np.zeros((8, 8, 4), np.uint8)
    assert _weighed_by_the_benchmark(Reconstruct(source_job="x"))
    assert _weighed_by_the_benchmark(Orbit(image, [0.0]))  # the quick proxy's views
    assert not _weighed_by_the_benchmark(Orbit(image, [0.0], settings=GenerationSettings(model="sv3d-p")))
    assert not _weighed_by_the_benchmark(NovelView(image, np.zeros((1, 3)), settings=GenerationSettings(model="zero123-xl")))
    assert not _weighed_by_the_benchmark(Reconstruct(source_job="x", sds_model="zero123-xl"))  # a diffusion model in the fit


def test_a_server_job_reports_a_monotone_whole_job_fraction_and_eta(server, client_factory, reference_image):
    client = client_factory(server.endpoint, timeout_s=60.0)
    orbit_id = client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))
    list(client.events(orbit_id))
    job_id = client.submit(Reconstruct(source_job=orbit_id, texture_size=64, max_faces=2000))
    progress = [e for e in client.events(job_id) if isinstance(e, Progress)]
    overall = [p.overall for p in progress]
    assert overall == sorted(overall) and overall[-1] == 1.0 and 0.0 <= overall[0] < 0.2
    # Every stage of the reconstruction shows up on the one bar, in order.
    stages = list(dict.fromkeys(p.stage for p in progress))
    assert stages == ["carve", "photo", "mesh", "refine", "uv", "texture", "export"]
    assert all(p.eta_s >= 0 for p in progress if p.overall > 0) and progress[-1].eta_s == 0.0


def test_the_worker_learns_its_pace_from_jobs_that_ran_alone(server, client_factory, reference_image):
    import threading

    client = client_factory(server.endpoint, timeout_s=60.0)
    worker = server.worker
    memory = worker.stage_memory
    assert memory.path == server.config.jobs_dir / "stage_seconds.json"
    server._warm_up.join(timeout=60)
    # A machine no job has timed starts from the speed probe's reading, not the benchmark's
    # 1.0 (on a CPU: a GPU backend keeps the benchmark's).
    on_cpu = describe_device().kind == "cpu"
    assert not memory.timed and (memory.pace != 1.0) == on_cpu and 0.1 <= memory.pace <= 10.0
    probed = memory.pace
    # A job beside the start-up's import of torch runs slower than the machine will.
    importing = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
    importing.start()
    worker.beside = importing
    list(client.events(client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))))
    assert memory.pace == probed and not memory.timed and not memory.path.exists()
    worker.beside = None
    list(client.events(client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))))
    assert memory.timed and memory.pace != probed and 0.0 < memory.pace < 50.0
    # Kept beside the jobs: a restarted backend starts from it.
    assert StageMemory.load(memory.path).pace == pytest.approx(memory.pace)
    # Beside busy processes (none of two CPUs free lately) a job teaches the pace, taken
    # back to an unloaded machine's, but not the stages' ratios.
    worker._load.cpus = 2
    worker._load.free = lambda: 0.0
    memory.ratios = {}
    list(client.events(client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))))
    assert memory.ratios == {}
    worker._load.free = lambda: 2.0
    list(client.events(client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))))
    assert set(memory.ratios) == {"load model", "views"}  # quiet: the stages it ran


def test_the_mesh_job_starts_from_what_its_orbit_showed_the_object_to_cost(server, client_factory, reference_image):
    import threading

    client = client_factory(server.endpoint, timeout_s=60.0)
    worker, memory = server.worker, server.worker.stage_memory
    server._warm_up.join(timeout=60)

    def orbit() -> tuple[str, list[float]]:
        job_id = client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))
        progress = [e for e in client.events(job_id) if isinstance(e, Progress)]
        assert all(p.object_cost < 0 for p in progress if p.stage != "views" or p.fraction < 0.25)
        return job_id, [p.object_cost for p in progress if p.object_cost > 0]

    # Beside the start-up's import of torch (a busy thread of the process) the views take
    # longer than the object makes them: their own thread's CPU time tells the cost, once
    # the machine's pace is known, and nothing does before.
    stop = threading.Event()
    importing = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    importing.start()
    worker.beside = importing
    known = (memory.timed, memory.probed)
    memory.timed = memory.probed = False
    worker._load.free = lambda: float(worker._load.cpus)  # a quiet machine
    unknown_id, shown = orbit()
    assert not shown and unknown_id not in worker._object_costs
    memory.probed = True
    worker._load.free = lambda: 0.0  # beside busy processes that CPU time grows too: nothing
    busy_id, shown = orbit()
    assert not shown and busy_id not in worker._object_costs
    worker._load.free = lambda: float(worker._load.cpus)
    beside_id, beside = orbit()
    stop.set()
    importing.join()
    memory.timed, memory.probed = known
    worker.beside = None
    orbit_id, alone = orbit()
    assert alone and beside and all(0.25 <= cost <= 4.0 for cost in alone + beside)
    # The same object alone and beside the busy thread: about the same cost.
    assert 0.5 < worker._object_costs[beside_id] / worker._object_costs[orbit_id] < 2.0, worker._object_costs
    assert set(worker._object_costs) == {beside_id, orbit_id}

    # Each mesh job's clock starts from its own orbit's cost; 1 where none was shown.
    started_from = []
    clock_of = memory.clock

    def clock(kind, load=1.0, quiet=True, object_cost=1.0):
        started_from.append(object_cost)
        return clock_of(kind, load, quiet, object_cost)

    memory.clock = clock
    for source in (orbit_id, beside_id, unknown_id):
        list(client.events(client.submit(Reconstruct(source_job=source, texture_size=64, max_faces=2000))))
    assert started_from == [worker._object_costs[orbit_id], worker._object_costs[beside_id], 1.0]


def test_a_wait_on_the_unwraps_helper_keeps_the_job_alive_and_sends_nothing(server, client_factory, reference_image, monkeypatch):
    # The uv stage waits for the helper's unwrap saying only that it is still at work: the
    # job stays cancellable and its last step fresh, and no event with a made-up fraction
    # moves the bar.
    from blend123.backend.progress import STILL_WORKING
    from blend123.backend.reconstruction import pipeline

    one_cpu = pipeline.CpuShare
    monkeypatch.setattr(pipeline, "CpuShare", lambda threads: one_cpu(1))  # the helper starts after the fit
    client = client_factory(server.endpoint, timeout_s=60.0)
    worker, calls = server.worker, []
    progress_fn = worker._progress_fn

    def recording(job, clock, cost_of=None):
        report = progress_fn(job, clock, cost_of)
        return lambda stage, fraction: calls.append((stage, fraction)) or report(stage, fraction)

    worker._progress_fn = recording
    orbit_id = client.submit(Orbit(reference_image, [10.0], views=6, settings=FAST))
    list(client.events(orbit_id))
    job_id = client.submit(Reconstruct(source_job=orbit_id, texture_size=64, max_faces=2000))
    sent = [e for e in client.events(job_id) if isinstance(e, Progress)]
    assert ("uv", STILL_WORKING) in calls  # it waited on the helper
    assert all(0.0 <= e.fraction <= 1.0 for e in sent) and {e.fraction for e in sent if e.stage == "uv"} <= {0.0, 1.0}


def _finished_clock(seconds_of, load: float = 1.0, plan: dict[str, tuple[float, Way]] | None = None, quiet: bool = True) -> StageClock:
    """A reconstruction's clock after every stage took ``seconds_of(stage)``; ``plan``: the
    stages planned, in benchmark seconds, and how they ran."""
    clock = StageClock("reconstruct", load=load, prior_pace=load, quiet=quiet)
    for stage, (seconds, way) in (plan or {}).items():
        clock.plan(stage, seconds, way)
    return _run_stages(clock, seconds_of)


def _run_stages(clock: StageClock, seconds_of) -> StageClock:
    """Run a reconstruction's stages (no model to load) on ``clock``, each taking
    ``seconds_of(stage)``, and finish it."""
    elapsed = 0.0
    for stage in [s for s in JOB_STAGES["reconstruct"] if s != "load model"]:
        clock.update(stage, 0.0, elapsed)
        elapsed += seconds_of(stage)
        clock.update(stage, 1.0, elapsed)
    clock.finish(elapsed)
    return clock


def _teach(memory: StageMemory, clock: StageClock):
    """``memory`` learns ``clock``; returns what the clock took a way's ratio for (before)."""
    scales, pace = memory.scales(), memory.pace
    memory.learn(clock)
    return lambda stage, way=Way.BENCHMARK: way_scale(scales, stage, way) * pace


def _moved(assumed: float, seen: float) -> float:
    """Where one mesh job moves a ratio the machine had measured: part of the way."""
    return _toward(assumed, seen, _LEARN_RATE)


def test_the_clock_times_each_stage_and_knows_which_were_planned():
    clock = _finished_clock(lambda s: 2.0 * STAGE_SECONDS[s], plan={"uv": (1.0, Way.AFTER_THE_FIT)})
    assert clock.stage_seconds == pytest.approx({s: 2.0 * STAGE_SECONDS[s] for s in JOB_STAGES["reconstruct"][1:]})
    assert clock.planned == {"uv": 1.0} and clock.ways == {"uv": Way.AFTER_THE_FIT}


def test_a_machine_whose_fit_and_bake_are_slow_learns_their_weights():
    # This machine: everything 1.3x the benchmark, the light fit and the bake 2x; the
    # proxy's orbit (load model, views) 0.8x, so its pace says nothing of the fit's.
    ratio = {"refine": 2.0, "texture": 2.0, "load model": 0.8, "views": 0.8}
    seconds_of = lambda s: STAGE_SECONDS[s] * ratio.get(s, 1.3)  # noqa: E731
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]
    total = sum(seconds_of(s) for s in stages)

    def first_estimate(memory: StageMemory) -> float:
        return memory.clock("reconstruct").update("carve", 0.0, 1e-3)[1]

    memory = StageMemory()
    orbit = StageClock("orbit")
    orbit.update("load model", 0.0, 0.0)
    orbit.update("views", 0.0, seconds_of("load model"))
    orbit.finish(seconds_of("load model") + seconds_of("views"))
    memory.learn(orbit)
    assert memory.pace == pytest.approx(0.8)
    assert first_estimate(memory) < 0.7 * total  # the orbit's pace alone: far short
    was = _teach(memory, _finished_clock(seconds_of))  # part of the way: objects differ
    assert memory.ratios["refine"] == pytest.approx(_moved(was("refine"), 2.0)) and memory.ratios["carve"] == pytest.approx(_moved(0.8, 1.3))
    for _ in range(30):  # Make Mesh again and again: the orbit's pace, and the stages it knows
        memory.learn(orbit)
        memory.learn(_finished_clock(seconds_of))
    assert memory.ratios["refine"] == pytest.approx(2.0, rel=0.01) and memory.ratios["carve"] == pytest.approx(1.3, rel=0.01)
    assert first_estimate(memory) == pytest.approx(total, rel=0.03)
    # A plan is in benchmark seconds, at the stage's own ratio on this machine.
    # (one worker: the stage's own ratio until the machine learns the way's)
    clock = memory.clock("reconstruct")
    clock.plan("photo", ONE_WORKER_SECONDS["photo"], Way.ONE_WORKER)
    assert clock.weights["photo"] * memory.pace == pytest.approx(ONE_WORKER_SECONDS["photo"] * memory.ratios["photo"])


def test_each_stage_teaches_the_ratio_of_the_way_it_ran():
    memory = StageMemory()
    memory.learn(_finished_clock(lambda s: 4.0 * STAGE_SECONDS[s], load=2.0, quiet=False))
    assert memory.ratios == {} and memory.pace == pytest.approx(2.0)  # the pace, unloaded; loaded stages say no ratio
    # The unwrap after the fit, forced by busy processes, teaches its own ratio (at the
    # load the job started at), not the one of the wait for the helper's unwrap.
    after = unwrap_seconds(50_000, beside=False)
    busy = _finished_clock(lambda s: 2.0 * 2.0 * after if s == "uv" else 2.0 * STAGE_SECONDS[s], load=2.0, quiet=False, plan={"uv": (after, Way.AFTER_THE_FIT)})
    memory.learn(busy)
    assert memory.ratios == {"uv (after the fit)": pytest.approx(2.0)}
    # On a quiet machine (a small mesh's unwrap after the fit) it teaches nothing: no load
    # explains it, and no other way's ratio learns from it.
    was = _teach(memory, _finished_clock(lambda s: 5.0 * after if s == "uv" else STAGE_SECONDS[s], plan={"uv": (after, Way.AFTER_THE_FIT)}))
    assert memory.ratios["uv (after the fit)"] == pytest.approx(2.0) and "uv" not in memory.ratios
    assert memory.ratios["photo"] == pytest.approx(_moved(was("photo"), 1.0))
    # The bake laying out its own texels runs two workers: beside busy processes it teaches
    # nothing, on a quiet machine its own ratio.
    here = STAGE_SECONDS["texture"] * 1.3
    memory.learn(_finished_clock(lambda s: 3.0 * here if s == "texture" else 2.0 * STAGE_SECONDS[s], load=2.0, quiet=False, plan={"texture": (here, Way.TEXELS_HERE)}))
    assert "texture (texels here)" not in memory.ratios
    texture = memory.ratios["texture"]
    was = _teach(memory, _finished_clock(lambda s: 1.2 * here if s == "texture" else STAGE_SECONDS[s], plan={"texture": (here, Way.TEXELS_HERE)}))
    assert memory.ratios["texture (texels here)"] == pytest.approx(_moved(was("texture", Way.TEXELS_HERE), 1.2))
    assert was("texture", Way.TEXELS_HERE) == pytest.approx(texture) and memory.ratios["texture"] == texture
    # A stage re-planned as the benchmark runs it (a CPU came free) teaches the plain ratio.
    photo = memory.ratios["photo"]
    memory.learn(_finished_clock(lambda s: 1.4 * STAGE_SECONDS[s] if s == "photo" else STAGE_SECONDS[s], plan={"photo": (STAGE_SECONDS["photo"], Way.BENCHMARK)}))
    assert memory.ratios["photo"] == pytest.approx(_moved(photo, 1.4))
    # The bake on one worker beside busy processes took 1.5x what the load explains: a
    # ratio of its own, learned at that load, and the next such bake is planned at it.
    one = ONE_WORKER_SECONDS["texture"]
    texture = memory.ratios["texture"]
    was = _teach(memory, _finished_clock(lambda s: 1.5 * 2.0 * one if s == "texture" else 2.0 * STAGE_SECONDS[s], load=2.0, quiet=False, plan={"texture": (one, Way.ONE_WORKER)}))
    learned = memory.ratios["texture (one worker)"]
    assert learned == pytest.approx(_moved(was("texture", Way.ONE_WORKER), 1.5)) and memory.ratios["texture"] == texture
    clock = memory.clock("reconstruct", load=2.0, quiet=False)
    clock.plan("texture", one, Way.ONE_WORKER)
    assert clock.weights["texture"] * clock.prior_pace == pytest.approx(learned * 2.0 * one)
    clock.plan("texture", STAGE_SECONDS["texture"])  # the CPU came free after all: the plain ratio
    assert clock.weights["texture"] * memory.pace == pytest.approx(texture * STAGE_SECONDS["texture"])


def test_stage_memory_survives_a_restart_and_ignores_a_damaged_file(tmp_path):
    path = tmp_path / "jobs" / "stage_seconds.json"
    memory = StageMemory.load(path)
    assert memory.ratios == {} and memory.pace == 1.0  # none yet
    memory.learn(_finished_clock(lambda s: 3.0 * STAGE_SECONDS[s] * (2.0 if s == "photo" else 1.0), plan={"photo": (2.0, Way.ONE_WORKER)}, load=1.5, quiet=False))
    was = _teach(memory, _finished_clock(lambda s: 3.0 * STAGE_SECONDS[s] * (2.0 if s == "photo" else 1.0)))
    memory.save()
    again = StageMemory.load(path)
    assert again.ratios == pytest.approx(memory.ratios) and again.pace == pytest.approx(memory.pace)
    assert again.timed and "photo (one worker)" in again.ratios
    # Photo carving took twice the other stages' share: its weight moved toward twice theirs.
    share = again.weights()["photo"] / again.weights()["carve"] / (STAGE_SECONDS["photo"] / STAGE_SECONDS["carve"])
    assert share == pytest.approx(_moved(was("photo"), 6.0) / _moved(was("carve"), 3.0)) and share > 1.05
    damaged = ("{not json", '{"version": 4, "pace": "fast", "ratios": {}}', '{"version": 4, "pace": 1.0, "ratios": {"photo": -3}}', "[]")
    damaged += ('{"version": 3, "pace": 1.0, "ratios": {}}',)  # kept in an older unit
    for damage in damaged:
        path.write_text(damage)
        fresh = StageMemory.load(path)
        assert fresh.ratios == {} and fresh.pace == 1.0 and not fresh.timed, damage
    path.unlink()
    path.mkdir()  # a file that cannot be replaced: the job is not failed for it
    memory.save()
    assert path.is_dir()


def test_one_object_does_not_set_a_measured_pace_alone():
    """A job's pace is part machine, part object: once the probe or a job measured the
    machine, a mesh job moves its pace part of the way, and an orbit, whose views showed
    what its object costs, a tenth; a backend with nothing measured takes the first job's
    whole."""

    def orbit_at(pace: float) -> StageClock:
        clock = StageClock("orbit")
        clock.update("load model", 0.0, 0.0)
        clock.update("views", 0.0, pace * STAGE_SECONDS["load model"])
        clock.finish(pace * (STAGE_SECONDS["load model"] + STAGE_SECONDS["views"]))
        return clock

    fresh = StageMemory()
    fresh.learn(orbit_at(1.4))
    assert fresh.pace == pytest.approx(1.4)
    probed = StageMemory()
    probed.start_from(0.7)
    probed.learn(orbit_at(1.4))  # a costlier object's orbit (the mug's: 2x the duck's)
    assert probed.pace == pytest.approx(_toward(0.7, 1.4, _LEARN_RATE_SHOWN)) and 0.7 < probed.pace < 0.75 and probed.timed
    probed.learn(_finished_clock(lambda s: 0.3 * STAGE_SECONDS[s]))  # a mesh job, object unknown
    assert probed.pace == pytest.approx(_moved(_toward(0.7, 1.4, _LEARN_RATE_SHOWN), 0.3)) and probed.pace < 0.7


def test_an_orbit_shows_what_its_object_costs_and_the_mesh_job_counts_it():
    """A quick-proxy orbit's views take what the object makes them take: the mesh job made
    from it starts from that cost (the object's stages in proportion, the fixed-cost ones
    half way in log space), the chain's later jobs move with it while the orbit runs, and
    the machine's pace learned from the mesh job is the machine's, not the object's."""
    orbit = StageClock("orbit", prior_pace=0.8)
    orbit.update("load model", 0.0, 0.01)
    orbit.update("views", 0.0, 0.2)
    assert orbit.object_cost_shown() is None  # not before a quarter of the views
    orbit.update("views", 0.2, 0.2 + 0.2 * 2.0 * 0.8 * STAGE_SECONDS["views"])
    assert orbit.object_cost_shown() is None
    orbit.update("views", 0.5, 0.2 + 0.5 * 2.0 * 0.8 * STAGE_SECONDS["views"])
    assert orbit.object_cost_shown() == pytest.approx(2.0)
    orbit.finish(0.2 + 2.0 * 0.8 * STAGE_SECONDS["views"])
    assert orbit.object_cost_shown() == pytest.approx(2.0)
    assert StageClock("orbit").object_cost_shown() is None  # no views ran
    stalled = StageClock("orbit", prior_pace=0.8)
    stalled.update("views", 0.0, 0.0)
    stalled.update("views", 1.0, 100.0)
    assert stalled.object_cost_shown() == 4.0  # bounded: a stall is no object

    # Beside a busy thread of the process the views waited for the GIL (twice as long by the
    # wall clock); their own thread's CPU time, over what it takes beside one, at the
    # machine's unloaded pace, tells the cost. Untold, it tells nothing.
    beside = StageClock("orbit", prior_pace=0.8 * 1.5, load=1.5)
    beside.update("views", 0.0, 0.0, cpu_s=3.0)
    cpu = 2.0 * 0.8 * STAGE_SECONDS["views"] * _OWN_CPU_BESIDE  # a cost of 2
    beside.update("views", 0.5, 2 * 0.5 * cpu, cpu_s=3.0 + 0.5 * cpu)
    assert beside.object_cost_shown(own_cpu=True) == pytest.approx(2.0)
    assert beside.object_cost_shown(own_cpu=True, pace=1.6) == pytest.approx(1.0)  # a slower machine than expected
    assert beside.object_cost_shown() == pytest.approx(2 * 2.0 * _OWN_CPU_BESIDE / 1.5)  # the wall clock's
    beside.finish(2 * cpu, cpu_s=3.0 + cpu)
    assert beside.object_cost_shown(own_cpu=True) == pytest.approx(2.0)
    assert orbit.object_cost_shown(own_cpu=True) is None

    plain, costly = StageClock("reconstruct", prior_pace=0.8), StageClock("reconstruct", prior_pace=0.8, object_cost=2.0)
    (_, plain_eta), (_, costly_eta) = plain.update("carve", 0.0, 0.01), costly.update("carve", 0.0, 0.01)
    mesh = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]
    fixed = sum(STAGE_SECONDS[s] for s in mesh if s in FIXED_COST_STAGES)
    objects = sum(STAGE_SECONDS[s] for s in mesh) - fixed
    assert costly_eta / plain_eta == pytest.approx((2.0 * objects + 2.0**0.5 * fixed) / (objects + fixed), rel=0.02)

    # The mesh job took what its object costs on a machine at pace 0.8: the machine's pace
    # stays 0.8, where a job of unknown object would have moved it part of the way to 1.3.
    took = lambda s: 0.8 * STAGE_SECONDS[s] * (2.0**0.5 if s in FIXED_COST_STAGES else 2.0)  # noqa: E731
    for cost, pace in ((2.0, 0.8), (1.0, _moved(0.8, sum(map(took, mesh)) / sum(STAGE_SECONDS[s] for s in mesh)))):
        memory = StageMemory()
        memory.start_from(0.8)
        memory.learn(_run_stages(memory.clock("reconstruct", object_cost=cost), took))
        assert memory.pace == pytest.approx(pace, rel=1e-6)
        assert all(ratio == pytest.approx(0.8, rel=1e-6) for ratio in memory.ratios.values()) == (cost == 2.0)

    # The client's one bar: while the orbit shows a costly object, the mesh job to come
    # is expected to take longer (its share at the expected pace, times the cost^0.79).
    chain, shown = ChainProgress([0.125, 0.875]), ChainProgress([0.125, 0.875])
    chain.update(0, Progress("j", "load model", 0.0, eta_s=8.0, overall=0.0))
    shown.update(0, Progress("j", "load model", 0.0, eta_s=8.0, overall=0.0))
    _, unknown = chain.update(0, Progress("j", "views", 0.5, eta_s=0.5, overall=0.6))
    _, known = shown.update(0, Progress("j", "views", 0.5, eta_s=0.5, overall=0.6, object_cost=2.0))
    assert unknown == pytest.approx(0.5 + 56.0) and known == pytest.approx(0.5 + 56.0 * 2.0**0.79)


def test_the_unwrap_beside_the_fit_ends_with_the_later_of_the_two():
    """The uv stage waits for what is left of the helper's unwrap: a light fit that stops
    early (its loss levelled off) leaves a longer wait, and the estimate says so."""

    def through_the_mesh(clock: StageClock) -> float:
        elapsed = 0.0
        for stage in ("carve", "photo", "mesh"):
            clock.update(stage, 0.0, elapsed)
            elapsed += STAGE_SECONDS[stage]
            clock.update(stage, 1.0, elapsed)
        return elapsed

    after = {"texture": STAGE_SECONDS["texture"], "export": STAGE_SECONDS["export"]}
    unwrap = STAGE_SECONDS["refine"] + STAGE_SECONDS["uv"]  # the unwrap beside the fit, as in the benchmark
    clock = StageClock("reconstruct")
    start = through_the_mesh(clock)
    fit = 0.5 * STAGE_SECONDS["refine"]  # twice as fast: stopped early
    clock.update("refine", 0.0, start)
    _, eta = clock.update("refine", 0.5, start + fit / 2)
    truth = unwrap - fit / 2 + sum(after.values())
    assert eta == pytest.approx(truth, rel=0.1)
    _, eta = clock.update("uv", 0.0, start + fit)
    assert eta == pytest.approx(unwrap - fit + sum(after.values()), rel=0.1)
    # A fit that outlasts the unwrap leaves the hand-over only.
    clock = StageClock("reconstruct")
    start = through_the_mesh(clock)
    clock.update("refine", 0.0, start)
    _, eta = clock.update("uv", 0.0, start + 2.0 * unwrap)
    assert eta < 0.5 * STAGE_SECONDS["uv"] * clock.pace + sum(after.values()) * clock.pace * 1.5
    # Beside busy processes, or without a helper (the unwrap after the fit), the uv stage
    # is its own plan.
    clock = StageClock("reconstruct", quiet=False)
    start = through_the_mesh(clock)
    clock.update("refine", 0.0, start)
    clock.update("refine", 0.5, start + fit / 2)
    _, eta = clock.update("uv", 0.0, start + fit)
    assert eta == pytest.approx((STAGE_SECONDS["uv"] + sum(after.values())) * clock.pace, rel=0.2)
    clock = StageClock("reconstruct")
    clock.plan("uv", unwrap_seconds(50_000, beside=False), Way.AFTER_THE_FIT)
    start = through_the_mesh(clock)
    clock.update("refine", 0.0, start)
    clock.update("refine", 0.5, start + fit / 2)
    _, eta = clock.update("uv", 0.0, start + fit)
    assert eta == pytest.approx(unwrap_seconds(50_000, beside=False) + sum(after.values()), rel=0.15)
