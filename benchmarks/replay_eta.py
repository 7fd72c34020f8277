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

    python benchmarks/replay_eta.py benchmarks/results/eta.json [more.json ...] [--objects chair,donut] [--floor] [--spread]

``--floor`` sets beside each run the noise floor: the worst error of a bar that knew the
object's stage seconds from its other runs in the reports given (their medians), so knew
all a run can teach about its object and nothing of this run's host hour.

``--spread`` prints, for each object, how far its stages' seconds moved from run to run
(coefficient of variation, each run's divided by its report's speed probe reading): what
no estimator can know before a stage runs.

Quiet runs only: a busy run's estimate also depends on the load the server read and the
ways its stages ran, which the events do not record. The orbits are taken to have run
alone, as a ``serve`` backend's do once it has imported torch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from blend123.backend.progress import JOB_STAGES, Way, photo_seconds, unwrap_seconds  # noqa: E402
from blend123.backend.server.stage_memory import StageMemory  # noqa: E402
from blend123.backend.server.worker import PACE_FROM_WORK_S  # noqa: E402
from blend123.protocol.job_progress import ChainProgress  # noqa: E402
from blend123.protocol.messages import Progress  # noqa: E402

Event = tuple[float, int, str, float]  # (seconds since the run started, job in the chain, stage, fraction)
#: The job started this long before its first event reached the client.
_START_S = 0.02
#: The run ended (its Done arrived) this long after its last progress event.
_END_S = 0.05


def replay_run(memory: StageMemory, events: list[Event], faces: int = 0, photo_work: dict | None = None) -> tuple[float, float, str]:
    """One Make Mesh on ``memory`` (which learns from it): the bar's (worst, mean) relative
    ETA error once 10% is done until the last second, and the stage of the worst.
    ``faces``: the mesh's, where the report kept them: the uv stage is planned for them
    once the carve stage ends, as the pipeline plans it from the hull's foreseen faces (the
    unwrap beside the fit; ``mesh.surface_faces``, within 1% of the mesh's on the recorded objects).
    ``photo_work``: what photo carving sampled of its work (rays, compared), where the
    report kept it: the stage is planned from it as it starts, as the pipeline plans it."""
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
            if faces and job == 1 and stage not in ("load model", "carve") and "uv" not in clock.planned:
                clock.plan("uv", unwrap_seconds(faces, beside=True))
            if photo_work and stage == "photo" and "photo" not in clock.planned:
                clock.plan("photo", photo_seconds(photo_work["rays"], photo_work["compared"]), Way.BENCHMARK, of_object=True)
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


def stage_seconds(events: list[Event]) -> dict[tuple[int, str], float]:
    """Each (job, stage)'s seconds in a recorded run, in the order they ran."""
    end = events[-1][0] + _END_S
    seconds: dict[tuple[int, str], float] = {}
    for (t, job, stage, _), (later, *_) in zip(events, [*events[1:], (end,)]):
        seconds[(job, stage)] = seconds.get((job, stage), 0.0) + later - t
    return seconds


def knowing_the_object(events: list[Event], typical: dict[tuple[int, str], float]) -> tuple[float, float, str]:
    """The (worst, mean, stage of the worst) ETA error of a bar that knew each of the
    object's stage seconds (``typical``: say, the medians of its other runs) and nothing of
    this run, measured as :func:`replay_run` measures: what the host's own noise leaves an
    estimator that had learned all there is to know about the object."""
    end = events[-1][0] + _END_S
    order = list(typical)
    total = sum(typical.values())
    errors: list[tuple[float, str]] = []
    for t, job, stage, fraction in events:
        if (job, stage) not in typical or total <= 0:
            continue
        at = order.index((job, stage))
        said = (1.0 - fraction) * typical[(job, stage)] + sum(typical[key] for key in order[at + 1 :])
        left = end - t
        if 1.0 - said / total >= 0.1 and left > 1.0:
            errors.append((abs(said - left) / left, stage))
    if not errors:
        return 0.0, 0.0, ""
    worst = max(errors)
    return worst[0], statistics.mean(error for error, _ in errors), worst[1]


def noise_floor(run: Recorded, pool: list[Recorded]) -> tuple[float, float, str] | None:
    """:func:`knowing_the_object` for ``run`` with the medians of the other runs of its
    object in ``pool`` (a run recorded twice counts once); None with fewer than two others.
    Their seconds are taken as they came: rescaling them by each report's speed probe
    left the floor higher (29 runs of 160 above 30% against 27), the probe reads the host's
    hour no better than the runs do."""
    name, events = run[:2]
    others = {json.dumps(other[1]) for other in pool if other[0] == name} - {json.dumps(events)}
    if len(others) < 2:
        return None
    seconds = [stage_seconds(json.loads(other)) for other in others]
    typical = {key: statistics.median(s.get(key, 0.0) for s in seconds) for key in stage_seconds(events)}
    return knowing_the_object(events, typical)


def replay(
    runs: list[list[Event]], probe_pace: float | None, fresh: bool = False, faces: list[int] | None = None, photo_work: list[dict] | None = None
) -> list[tuple[float, float, str]]:
    """Each run's (worst, mean, stage of the worst), replayed in turn on one machine memory
    (``fresh``: each on its own), started from ``probe_pace``; ``faces``: each run's mesh's,
    ``photo_work``: each run's photo carving's sampled work ({} where not kept)."""
    memory = None
    results = []
    for events, mesh_faces, work in zip(runs, faces or [0] * len(runs), photo_work or [{}] * len(runs)):
        if memory is None or fresh:
            memory = StageMemory()
            memory.start_from(probe_pace)
        results.append(replay_run(memory, [tuple(event[:4]) for event in events], mesh_faces, work))
    return results


#: (object, events, the mesh's faces (0: not kept), photo carving's sampled work ({}: not kept))
Recorded = tuple[str, list[Event], int, dict]


def recorded(report: dict, objects: set[str] | None = None) -> dict[str, list[Recorded]]:
    """The quiet runs of a ``bench_busy.py`` or ``bench_eta.py`` report, by order."""
    if report.get("benchmark") == "eta":
        orders: dict[str, list[Recorded]] = {}
        for run in report["runs"]:
            if "events" in run and (objects is None or run["object"] in objects):  # ``--via convert`` keeps none
                orders.setdefault(run["order"], []).append((run["object"], run["events"], run.get("faces", 0), run.get("photo_work", {})))
        return orders
    quiet = report.get("runs", {}).get("quiet")
    return {"in turn": [(report.get("image", "?"), events, 0, {}) for events in quiet["events"]]} if quiet else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_busy.py or bench_eta.py JSON reports (.json.gz too)")
    parser.add_argument("--objects", default="", help="only these objects (comma-separated names as the report has them)")
    parser.add_argument("--floor", action="store_true", help="beside each run, the noise floor: the error of a bar that knew "
                        "the object's stage seconds from its other runs in these reports (their medians)")
    parser.add_argument("--spread", action="store_true", help="per object, each stage's run-to-run coefficient of variation")
    args = parser.parse_args(argv)
    objects = {name.strip() for name in args.objects.split(",") if name.strip()} or None
    reports = {path: _report(path) for path in args.results}
    if args.spread:
        print_spread(reports, objects)
        return 0
    pool = [run for report in reports.values() for runs in recorded(report, objects).values() for run in runs]
    totals: dict[str, list[float]] = {"estimator": [], "floor": []}
    for path, report in reports.items():
        probe = report.get("speed_probe", {}).get("pace")
        for order, runs in recorded(report, objects).items():
            results = replay([run[1] for run in runs], probe, fresh=order == "fresh", faces=[run[2] for run in runs], photo_work=[run[3] for run in runs])
            print(f"{path.name}, {order}: the bar's ETA error after 10%, worst (stage) / mean per run"
                  + (", and the noise floor's worst" if args.floor else "") + ":")
            for run, (worst, mean, stage) in zip(runs, results):
                floor = noise_floor(run, pool) if args.floor else None
                print(f"  {run[0]:15s} {worst:4.0%} ({stage or '-'}) / {mean:.0%}" + (f"   floor {floor[0]:4.0%}" if floor else ""))
                if floor:
                    totals["floor"].append(floor[0])
                    totals["estimator"].append(worst)
            print("  " + summary([result[0] for result in results]))
    if totals["floor"]:
        print(f"Runs with a floor ({len(totals['floor'])}): estimator {summary(totals['estimator'])}; "
              f"noise floor {summary(totals['floor'])}")
    return 0


def stage_spread(runs: list[dict[tuple[int, str], float]]) -> dict[tuple[int, str], float]:
    """Each (job, stage)'s coefficient of variation over ``runs`` (their :func:`stage_seconds`)."""
    keys = {key for run in runs for key in run}
    spread = {}
    for key in keys:
        seconds = [run.get(key, 0.0) for run in runs]
        mean = statistics.mean(seconds)
        spread[key] = statistics.pstdev(seconds) / mean if mean > 0 else 0.0
    return spread


def print_spread(reports: dict[Path, dict], objects: set[str] | None) -> None:
    """For each object: its stages' run-to-run spread, and its mesh job's as a whole. A run
    recorded under two orders counts once; each run is divided by its report's probe reading."""
    by_object: dict[str, dict[str, dict[tuple[int, str], float]]] = {}
    for report in reports.values():
        pace = report.get("speed_probe", {}).get("pace") or 1.0
        for runs in recorded(report, objects).values():
            for name, events, *_ in runs:
                seconds = {key: value / pace for key, value in stage_seconds([tuple(e[:4]) for e in events]).items()}
                by_object.setdefault(name, {})[json.dumps(events)] = seconds
    keys = [(job, stage) for job, kind in enumerate(("orbit", "reconstruct")) for stage in JOB_STAGES[kind] if stage != "load model"]
    print(f"{'object':16s} runs " + " ".join(f"{stage:>7s}" for _, stage in keys) + "  mesh job")
    for name, runs in by_object.items():
        runs = list(runs.values())
        spread = stage_spread(runs)
        whole = stage_spread([{(1, "all"): sum(v for (job, _), v in run.items() if job == 1)} for run in runs])[(1, "all")]
        cells = " ".join(f"{spread.get(key, float('nan')):7.0%}" for key in keys)
        print(f"{name:16s} {len(runs):4d} {cells}  {whole:7.0%}")


def _report(path: Path) -> dict:
    """A report as ``bench_busy.py`` or ``bench_eta.py`` wrote it, or gzipped (``benchmarks/recorded``)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as text:
            return json.load(text)
    return json.loads(path.read_text())


def summary(errors: list[float]) -> str:
    """A line for runs' worst ETA errors: the worst, the median, how many above 30%."""
    if not errors:
        return "no runs"
    over = sum(error > 0.3 for error in errors)
    return f"worst {max(errors):.0%}, median {statistics.median(errors):.0%}, above 30% in {over} of {len(errors)} runs"


if __name__ == "__main__":
    sys.exit(main())
