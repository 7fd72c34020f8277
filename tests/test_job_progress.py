"""One progress bar for the whole job: overall fraction and total ETA, stage named inside."""

from __future__ import annotations

import numpy as np

from blend123.backend.progress import JOB_STAGES, STAGE_SECONDS, StageClock
from blend123.protocol.job_progress import ChainProgress, orbit_share
from blend123.protocol.messages import Orbit, Progress, Reconstruct

from .test_server import FAST


def test_the_stage_clock_counts_the_stages_done_and_extrapolates_the_pace():
    clock = StageClock("reconstruct")
    stages = [s for s in JOB_STAGES["reconstruct"] if s != "load model"]  # no model: never reported
    total = sum(STAGE_SECONDS[s] for s in stages)  # the skipped stage drops out of the plan
    # A machine twice as slow as the benchmark's: ETA = twice the weight still to do.
    elapsed, last = 0.0, 0.0
    for stage in stages:
        for fraction in (0.0, 0.5, 1.0):
            elapsed = 2.0 * (sum(STAGE_SECONDS[s] for s in stages[: stages.index(stage)]) + fraction * STAGE_SECONDS[stage])
            overall, eta = clock.update(stage, fraction, elapsed)
            assert overall >= last
            last = overall
            if eta < 0:  # no time has passed: no pace to go by
                assert overall == 0.0
                continue
            done = overall * total
            # The pace seen so far, starting from the benchmark's (1 s per second of weight).
            np.testing.assert_allclose(eta, (total - done) * (elapsed + 2.0) / (done + 2.0), rtol=1e-6)
            if 3.0 < done < total:
                assert abs(eta / (2.0 * (total - done)) - 1.0) < 0.2  # and soon the machine's own
    assert last == 1.0


def test_a_stage_missing_from_the_plan_is_added_where_it_runs():
    clock = StageClock("orbit")
    clock.update("load model", 1.0, 1.0)
    overall, _ = clock.update("warm up", 0.5, 2.0)
    assert clock.stages == ["load model", "warm up", "views"] and 0 < overall < 1
    assert clock.update("views", 1.0, 3.0) == (1.0, 0.0)


def test_the_chain_shares_one_bar_between_the_orbit_and_the_mesh():
    now = [0.0]
    chain = ChainProgress([0.25, 0.75], clock=lambda: now[0])
    now[0] = 2.0
    fraction, eta = chain.update(0, Progress("a", "views", 0.5, eta_s=2.0, overall=0.5))
    assert fraction == 0.125
    assert eta == 2.0 + 0.75 * 2.0 / 0.125  # the orbit's own ETA, then the mesh at the pace so far
    now[0] = 10.0
    fraction, eta = chain.update(1, Progress("b", "refine", 0.3, eta_s=7.0, overall=0.4))
    assert fraction == 0.25 + 0.75 * 0.4 and eta == 7.0  # the last job: its own ETA
    # An older backend without ``overall``: its stage fraction stands in.
    assert chain.update(1, Progress("b", "uv", 0.5, eta_s=-1.0))[0] == 0.25 + 0.75 * 0.5
    assert orbit_share("default") < 0.5 < orbit_share("sv3d-p")


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
