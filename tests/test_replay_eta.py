"""benchmarks/replay_eta.py: recorded progress replayed through the ETA estimator."""

from __future__ import annotations

from benchmarks.replay_eta import replay
from blend123.backend.progress import JOB_STAGES, STAGE_SECONDS


def _run(pace: float, slow: dict[str, float] | None = None, steps: int = 20) -> list[tuple[float, int, str, float]]:
    """A chain's events: the orbit, then the mesh job, each stage's fraction rising evenly
    over its benchmark seconds times ``pace`` (times ``slow[stage]``)."""
    events, t = [], 0.0
    for job, kind in ((0, "orbit"), (1, "reconstruct")):
        for stage in JOB_STAGES[kind]:
            seconds = STAGE_SECONDS[stage] * pace * (slow or {}).get(stage, 1.0)
            for i in range(steps + 1):
                events.append((t + seconds * i / steps, job, stage, i / steps))
            t += seconds
    return events


def test_a_machine_at_the_probes_pace_replays_close_and_a_surprise_does_not():
    steady = replay([_run(0.7), _run(0.7)], probe_pace=0.7)
    assert all(worst < 0.05 for worst, _ in steady), steady
    # A light fit three times its weight: the first run's estimate misses, the next one,
    # from what the machine learned, does far better.
    surprised = replay([_run(0.7, {"refine": 3.0}), _run(0.7, {"refine": 3.0})], probe_pace=0.7)
    assert surprised[0][0] > 0.2 and surprised[1][0] < 0.5 * surprised[0][0], surprised
