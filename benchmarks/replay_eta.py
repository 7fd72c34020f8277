"""Replay recorded progress through the ETA estimator: try an estimator change offline.

``bench_busy.py`` keeps, for every run through ``serve``, each progress event as it came
(seconds since the run started, the job's place in the chain, the stage, its fraction).
This feeds them, run after run, through :class:`StageClock` and :class:`StageMemory` as
the worker does (a fresh memory started from the recorded speed probe, the orbit's job
and the mesh job each learned after they end) and prints the mesh job's worst and mean
ETA error once 10% is done, until its last second:

    python benchmarks/replay_eta.py benchmarks/results/busy.json [more.json ...]

Quiet runs only: a busy run's estimate also depends on the load the server read and the
ways its stages ran, which the events do not record. For quiet runs it reproduces what
``bench_busy.py`` measured (the mug's fresh run: 55% replayed, 54% measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from blend123.backend.progress import StageClock  # noqa: E402
from blend123.backend.server.stage_memory import StageMemory  # noqa: E402
from blend123.backend.server.worker import PACE_FROM_WORK_S  # noqa: E402

Event = tuple[float, int, str, float]  # (seconds since the run started, job in the chain, stage, fraction)


def _run_clock(clock: StageClock, events: list[Event]) -> list[tuple[float, float]]:
    """Feed one job's events; (its fraction done, seconds left said) at each."""
    start = events[0][0]
    return [clock.update(stage, fraction, t - start) for t, _, stage, fraction in events]


def replay(runs: list[list[Event]], probe_pace: float | None) -> list[tuple[float, float]]:
    """(worst, mean) relative ETA error of each run's mesh job once 10% is done, the runs
    replayed in order on one machine memory."""
    memory = StageMemory()
    memory.start_from(probe_pace)
    errors = []
    for events in runs:
        end = events[-1][0]
        for job, kind in ((0, "orbit"), (1, "reconstruct")):
            own = [e for e in events if e[1] == job]
            if not own:
                continue
            clock = memory.clock(kind)
            said = _run_clock(clock, own)
            if job == 1:
                late = [abs(eta - (end - t)) / (end - t) for (t, *_), (fraction, eta) in zip(own, said) if fraction >= 0.1 and eta >= 0 and end - t > 1.0]
                errors.append((max(late, default=0.0), sum(late) / max(len(late), 1)))
            clock.finish(own[-1][0] - own[0][0])
            if clock.worked_s >= PACE_FROM_WORK_S:
                memory.learn(clock)
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_busy.py JSON reports")
    args = parser.parse_args(argv)
    for path in args.results:
        report = json.loads(path.read_text())
        quiet = report["runs"].get("quiet")
        if quiet is None:
            print(f"{path.name}: no quiet runs")
            continue
        runs = [[tuple(e) for e in run] for run in quiet["events"]]
        errors = replay(runs, report.get("speed_probe", {}).get("pace"))
        shown = ", ".join(f"{worst:.0%} / {mean:.0%}" for worst, mean in errors)
        print(f"{path.name} ({report.get('image', '?')}): mesh job's ETA error after 10%, worst / mean per run: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
