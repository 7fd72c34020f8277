"""Replay recorded progress through the ETA estimator: try an estimator change offline.

``bench_busy.py`` and ``bench_eta.py`` keep, for every Make Mesh through ``serve``, each
progress event as it came (seconds since the run started, the job's place in the chain,
the stage, its fraction). This feeds them through :class:`StageClock`, :class:`StageMemory`
and :class:`ChainProgress` as the worker and the panel do: the orbit's clock, whose views
show what the object costs, then the mesh job's clock starting from that cost, each job
learned once it ends, and the one bar's ETA against the time really left, from 10% done
until the last second (what the benchmarks measure). The runs of a report are replayed in
turn on one machine memory started from the recorded speed probe; ``bench_eta.py``'s
``fresh`` runs each on a memory of their own.

    python benchmarks/replay_eta.py benchmarks/results/eta.json [more.json ...] [--objects chair,donut]

Quiet runs only: a busy run's estimate also depends on the load the server read and the
ways its stages ran, which the events do not record. The orbits are taken to have run
alone, as a ``serve`` backend's do once it has imported torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from blend123.backend.progress import unwrap_seconds  # noqa: E402
from blend123.backend.reconstruction.pipeline import UNWRAP_BESIDE_FACES  # noqa: E402
from blend123.backend.server.stage_memory import StageMemory  # noqa: E402
from blend123.backend.server.worker import PACE_FROM_WORK_S  # noqa: E402
from blend123.protocol.job_progress import ChainProgress  # noqa: E402
from blend123.protocol.messages import Progress  # noqa: E402

Event = tuple[float, int, str, float]  # (seconds since the run started, job in the chain, stage, fraction)
#: The job started this long before its first event reached the client.
_START_S = 0.02
#: The run ended (its Done arrived) this long after its last progress event.
_END_S = 0.05


def replay_run(memory: StageMemory, events: list[Event], faces: int = 0) -> tuple[float, float, str]:
    """One Make Mesh on ``memory`` (which learns from it): the bar's (worst, mean) relative
    ETA error once 10% is done until the last second, and the stage of the worst.
    ``faces``: the mesh's, where the report kept them: the uv stage is planned for them
    once the mesh stage ends, as the pipeline plans it (the unwrap beside the fit)."""
    end = events[-1][0] + _END_S
    chain = ChainProgress.orbit_then_mesh("default", memory.proxy_orbit_share())
    errors: list[tuple[float, str]] = []
    object_cost = 1.0
    for job, kind in ((0, "orbit"), (1, "reconstruct")):
        own = [event for event in events if event[1] == job]
        if not own:
            continue
        clock = memory.clock(kind, object_cost=object_cost)
        start = own[0][0] - _START_S
        for t, _, stage, fraction in own:
            if faces >= UNWRAP_BESIDE_FACES and stage == "refine" and "uv" not in clock.planned:
                clock.plan("uv", unwrap_seconds(faces, beside=True))
            overall, eta = clock.update(stage, fraction, t - start)
            shown = clock.object_cost_shown() if job == 0 else None
            done, said = chain.update(job, Progress("", stage, fraction, eta, t - start, overall=overall, object_cost=shown or -1.0))
            left = end - t
            if done >= 0.1 and said >= 0 and left > 1.0:
                errors.append((abs(said - left) / left, stage))
        clock.finish(own[-1][0] - start)
        if job == 0:
            object_cost = clock.object_cost_shown() or 1.0
        if clock.worked_s >= PACE_FROM_WORK_S:
            memory.learn(clock)
    if not errors:
        return 0.0, 0.0, ""
    worst = max(errors)
    return worst[0], statistics.mean(error for error, _ in errors), worst[1]


def replay(runs: list[list[Event]], probe_pace: float | None, fresh: bool = False, faces: list[int] | None = None) -> list[tuple[float, float, str]]:
    """Each run's (worst, mean, stage of the worst), replayed in turn on one machine memory
    (``fresh``: each on its own), started from ``probe_pace``; ``faces``: each run's mesh's."""
    memory = None
    results = []
    for events, mesh_faces in zip(runs, faces or [0] * len(runs)):
        if memory is None or fresh:
            memory = StageMemory()
            memory.start_from(probe_pace)
        results.append(replay_run(memory, [tuple(event[:4]) for event in events], mesh_faces))
    return results


Recorded = tuple[str, list[Event], int]  # (object, events, the mesh's faces; 0: not kept)


def recorded(report: dict, objects: set[str] | None = None) -> dict[str, list[Recorded]]:
    """The quiet runs of a ``bench_busy.py`` or ``bench_eta.py`` report, by order."""
    if report.get("benchmark") == "eta":
        orders: dict[str, list[Recorded]] = {}
        for run in report["runs"]:
            if objects is None or run["object"] in objects:
                orders.setdefault(run["order"], []).append((run["object"], run["events"], run.get("faces", 0)))
        return orders
    quiet = report.get("runs", {}).get("quiet")
    return {"in turn": [(report.get("image", "?"), events, 0) for events in quiet["events"]]} if quiet else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_busy.py or bench_eta.py JSON reports")
    parser.add_argument("--objects", default="", help="only these objects (comma-separated names as the report has them)")
    args = parser.parse_args(argv)
    objects = {name.strip() for name in args.objects.split(",") if name.strip()} or None
    for path in args.results:
        report = json.loads(path.read_text())
        probe = report.get("speed_probe", {}).get("pace")
        for order, runs in recorded(report, objects).items():
            results = replay([events for _, events, _ in runs], probe, fresh=order == "fresh", faces=[faces for *_, faces in runs])
            print(f"{path.name}, {order}: the bar's ETA error after 10%, worst (stage) / mean per run:")
            for (name, *_), (worst, mean, stage) in zip(runs, results):
                print(f"  {name:15s} {worst:4.0%} ({stage or '-'}) / {mean:.0%}")
            worst = [result[0] for result in results]
            print(f"  worst {max(worst):.0%}, median {statistics.median(worst):.0%}, above 30% in {sum(w > 0.3 for w in worst)} of {len(worst)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
