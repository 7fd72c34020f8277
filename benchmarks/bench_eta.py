"""The one progress bar's ETA on many objects, through ``blend123 serve``, as artists meet it.

An artist's next Make Mesh is of another object, and objects cost differently: through
``serve`` on one 2-core CPU, twelve objects' mesh jobs ran 3.3x apart. For each object's
image (the two examples, and the first input view of each quality-set object, rendered
with Cycles into ``build/quality`` when missing) this converts it as the panel does, the
quick proxy's orbit and then the mesh made from it, through a freshly started backend,
and reads the bar the panel would draw (``ChainProgress``) against the time really left,
from 10% done until the last second. Two orders, each ``--repeat`` times:

* ``fresh``: every object on a backend no job has timed: it starts from the speed probe;
* ``in turn``: the objects one after another on one jobs folder, each backend starting
  from the stage timings the objects before it taught (``stage_memory.py``).

Prints each run's worst error (and the stage it was in), a summary per order, and the
stages' median seconds over the fresh runs divided by the speed probe's reading: the
weights ``STAGE_SECONDS`` would have from this machine. Writes JSON (every progress event
kept) to ``--out``; ``replay_eta.py`` replays it through a changed estimator.

``--via convert`` runs ``blend123 convert`` instead, as a headless user or ``make demo``
does: its own backend in the process, its orbit beside the start-up's import of torch,
and the bar it draws read off its stderr (``fresh``: a cache folder of its own, no
timings kept; ``in turn``: one shared). No events are kept of those.

    python benchmarks/bench_eta.py [--objects seen|unseen|all|NAMES] [--repeat 1] [--via serve|convert] [--out benchmarks/results/eta.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_busy import convert_seconds, serve, staged_run  # noqa: E402
from benchmarks.replay_eta import summary  # noqa: E402
from benchmarks.quality import render, scenes  # noqa: E402
from blend123.backend.images import load_rgba  # noqa: E402
from blend123.backend.progress import JOB_STAGES  # noqa: E402
from blend123.backend.speed_probe import probe_pace  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "eta.json"
EXAMPLES = ("duck", "mug")
ORDERS = ("fresh", "in turn")


def object_images(which: str, root: Path = render.DEFAULT_ROOT) -> dict[str, Path]:
    """Name -> image: the examples, then each selected quality object's first input view."""
    images = {f"{name} (example)": REPO / "examples" / f"{name}.png" for name in EXAMPLES}
    if which != "examples":
        specs = scenes.select(which)
        render.ensure_rendered([spec.name for spec in specs], root)
        images.update({spec.name: root / spec.name / "input" / "000.png" for spec in specs})
    return images


def stage_weights(runs: list[dict], probe: float) -> dict[str, float]:
    """The stages' median seconds over ``runs``, per second of the speed probe's pace."""
    stages = [*JOB_STAGES["orbit"], *(s for s in JOB_STAGES["reconstruct"] if s != "load model")]
    return {stage: statistics.median(run["stages"].get(stage, 0.0) for run in runs) / probe for stage in stages}


def _convert_run(image: Path, cache: Path) -> dict:
    """``blend123 convert`` of ``image`` with ``cache`` for its cache folder (where its jobs
    folder, and the machine's timings, are kept), as :func:`bench_busy.staged_run` reports."""
    with tempfile.TemporaryDirectory() as out:
        run = convert_seconds(image, Path(out), env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    return {"total_s": run.pop("seconds"), "eta_worst_error_by_stage": {}, **run}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", default="all", help="examples, seen, unseen, all, or comma-separated quality-set names")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each order")
    parser.add_argument("--orders", default=",".join(ORDERS), help="fresh, in turn, or both (comma-separated)")
    parser.add_argument("--via", choices=("serve", "convert"), default="serve", help="through a `serve` backend (the panel's way) or `blend123 convert`")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    orders = [order.strip() for order in args.orders.split(",") if order.strip()]
    if not orders or any(order not in ORDERS for order in orders):
        raise SystemExit(f"--orders: choose from {', '.join(ORDERS)}")
    try:
        images = object_images(args.objects)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    probe = probe_pace()
    report = {
        "benchmark": "eta",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "speed_probe": {"pace": probe},
        "via": args.via,
        "runs": [],
    }
    print(f"speed probe: pace {probe:.2f}; {len(images)} objects: {', '.join(images)}", flush=True)
    for round_ in range(max(1, args.repeat)):
        for order in orders:
            with tempfile.TemporaryDirectory() as shared:
                for name, path in images.items():
                    with tempfile.TemporaryDirectory() as own:
                        folder = Path(shared if order == "in turn" else own)
                        if args.via == "convert":
                            run = _convert_run(path, folder)
                        else:
                            # A fresh backend each time: the proxy caches the shell it builds.
                            with serve(folder) as client:
                                run = staged_run(client, load_rgba(path))
                    worst = max(run["eta_worst_error_by_stage"].items(), key=lambda item: item[1], default=("", 0.0))
                    report["runs"].append({"object": name, "order": order, "round": round_, "worst_stage": worst[0], **run})
                    print(f"{order:7s} {name:15s} {run['total_s']:5.1f} s (host stole {run['stolen_s']:.1f} s): ETA error after 10% "
                          f"worst {run['eta_max_error_after_10pct']:.0%} ({worst[0] or '-'}), mean {run['eta_mean_error_after_10pct']:.0%}",
                          flush=True)
    print()
    for order in orders:
        errors = [run["eta_max_error_after_10pct"] for run in report["runs"] if run["order"] == order]
        print(f"{order}: {summary(errors)}")
    fresh = [run for run in report["runs"] if run["order"] == "fresh" and "stages" in run]
    if fresh:
        report["stage_weights"] = stage_weights(fresh, probe)
        print("stage seconds per second of the probe's pace (medians of the fresh runs): "
              + ", ".join(f"{stage} {weight:.2f}" for stage, weight in report["stage_weights"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
