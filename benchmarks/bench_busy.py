"""``make demo``'s conversion on a quiet machine and beside busy processes, in one run.

Artists run the backend next to Blender, often while it renders. For each condition
(quiet; ``--busy`` processes spinning ``while True: pass``) this measures:

* ``blend123 convert examples/duck.png`` end to end, as ``make demo`` runs it (process
  start, in-process backend, orbit, reconstruction, GLB written), and how far its bar's
  ETA (read off stderr as it is drawn) was from the truth once 10% was done;
* the same orbit and mesh through a freshly started ``blend123 serve``: seconds per stage, taken
  from the progress events, and how far the progress bar's ETA was from the truth once
  10% of the job was done (the ETA the CLI and the panel show, ``ChainProgress``).

Each condition runs ``--repeat`` times; the table has medians, and the runs' seconds are
printed with what the host stole from this virtual machine meanwhile (``steal``). Every
``serve`` keeps its jobs folder from the runs before, as a user's backend does, so it
starts from the stage timings the machine showed in them (``stage_memory.py``); the very
first run starts from the speed probe's reading (``speed_probe.py``; ``rm`` the
``stage_seconds.json`` of the user's cache folder first for ``convert`` to do the same),
and the probe's pace is printed beside the pace that first job showed. Prints a markdown
table and the busy/quiet ratio stage by stage; writes JSON to ``--out``.

    python benchmarks/bench_busy.py [--busy 2] [--repeat 3] [--image examples/duck.png] [--out benchmarks/results/busy.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from blend123.backend.images import load_rgba  # noqa: E402
from blend123.backend.progress import JOB_STAGES, STAGE_SECONDS  # noqa: E402
from blend123.protocol.client import Client  # noqa: E402
from blend123.protocol.job_progress import ChainProgress  # noqa: E402
from blend123.backend.speed_probe import probe_pace  # noqa: E402
from blend123.protocol.messages import Done, Error, Mesh, Orbit, Progress, Reconstruct, View  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "busy.json"


@contextlib.contextmanager
def busy_processes(count: int):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5 if count else 0.0)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _stolen_seconds() -> float:
    """CPU-seconds the hypervisor gave to other guests since boot (``steal`` in ``/proc/stat``;
    0 where unknown): on a shared virtual machine it says how quiet "quiet" was."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        return float(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return 0.0


def eta_error(said: float, left: float, rounding: float = 0.0) -> float:
    """How far an ETA was from the time really left, relative to it; ``rounding``: the part
    of the difference that is the display's (a bar in whole seconds: half a second)."""
    return max(0.0, abs(said - left) - rounding) / left


_BAR = re.compile(r"(\d+)% [^\r\n]*?(\d+) s left")


def convert_seconds(image: Path, folder: Path, env: dict[str, str] | None = None) -> dict:
    """``blend123 convert`` end to end, as ``make demo`` runs it, its progress bar read off
    stderr as it is drawn: seconds, seconds stolen, and the bar's ETA error after 10%.
    ``env``: the command's environment (default: this process's)."""
    stolen = _stolen_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "blend123.backend.cli", "convert", str(image), "-o", str(folder / "demo.glb")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    drawn: list[tuple[float, str]] = []  # (time, what the bar drew)
    while chunk := os.read(proc.stderr.fileno(), 1 << 16):
        drawn.append((time.perf_counter() - start, chunk.decode(errors="replace")))
    if proc.wait():
        said = "".join(text for _, text in drawn).replace("\r", "\n").strip().splitlines()[-5:]
        raise RuntimeError(f"blend123 convert failed (exit {proc.returncode}): " + " / ".join(said))
    total = time.perf_counter() - start
    # Every bar drawn: (time, percent, seconds left). The bar shows whole seconds, so half a
    # second of the error is its rounding, not its estimate.
    bars = [(t, int(m[1]), int(m[2])) for t, text in drawn for m in _BAR.finditer(text)]
    errors = [eta_error(left, total - t, rounding=0.5) for t, percent, left in bars if percent >= 10 and total - t > 1.0]
    return {
        "seconds": total,
        "stolen_s": _stolen_seconds() - stolen,
        "eta_max_error_after_10pct": max(errors, default=0.0),
        "eta_mean_error_after_10pct": sum(errors) / max(len(errors), 1),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: Path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "blend123.backend.cli", "serve", "--bind", address, "--jobs-dir", str(folder / "jobs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(address, timeout_s=60.0)
        client.hello("bench_busy")
        yield client
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)


def staged_run(client: Client, image) -> dict:
    """Orbit + mesh with every progress event timed: stage seconds and the ETA's error."""
    # Shared as the CLI and the panel share it: by the backend's own measure.
    chain = ChainProgress.orbit_then_mesh("default", client.server.proxy_orbit_share if client.server else -1.0)
    stolen = _stolen_seconds()
    start = time.perf_counter()
    seen: list[tuple[float, str, float, float]] = []  # (time, stage, chain fraction, eta)
    raw: list[tuple[float, int, str, float]] = []  # (time, job, stage, stage fraction): to replay other estimators
    orbit_id = ""
    faces = 0  # the mesh's: how long the unwrap took is in proportion to them (replay_eta.py)
    views: list[View] = []  # the orbit's: what photo carving sampled of its work (replay_eta.py)
    for step, request in enumerate([Orbit(image, [0.0]), None]):
        if request is None:
            request = Reconstruct(source_job=orbit_id)
        job_id = client.submit(request)
        orbit_id = orbit_id or job_id
        for event in client.events(job_id):
            if isinstance(event, Progress):
                fraction, eta = chain.update(step, event)
                seen.append((time.perf_counter() - start, event.stage, fraction, eta))
                raw.append((seen[-1][0], step, event.stage, event.fraction))
            elif isinstance(event, View):
                views.append(event)
            elif isinstance(event, Mesh):
                faces = len(event.faces)
            elif isinstance(event, Error):
                raise RuntimeError(event.message)
            elif isinstance(event, Done):
                break
    total = time.perf_counter() - start
    stolen = _stolen_seconds() - stolen
    stages: dict[str, float] = {}
    for (t0, stage, _, _), (t1, _, _, _) in zip(seen, seen[1:] + [(total, "", 1.0, 0.0)]):
        stages[stage] = stages.get(stage, 0.0) + (t1 - t0)
    # The ETA's error relative to the time really left, from 10% done until the last second.
    late = [(stage, eta_error(eta, total - t)) for t, stage, f, eta in seen if f >= 0.1 and eta >= 0 and total - t > 1.0]
    errors = [e for _, e in late]
    worst = {}
    for stage, error in late:
        worst[stage] = max(worst.get(stage, 0.0), error)
    return {
        "total_s": total,
        "stolen_s": stolen,
        "stages": stages,
        "eta_max_error_after_10pct": max(errors, default=0.0),
        "eta_mean_error_after_10pct": sum(errors) / max(len(errors), 1),
        "eta_worst_error_by_stage": worst,
        "events": raw,
        "etas": seen,
        "faces": faces,
        "photo_work": photo_work_of(views),
    }


def photo_work_of(views: list[View]) -> dict[str, float]:
    """What the mesh job's photo carving sampled of its work to plan the stage (rays and
    compared patch points), worked out again from the orbit's views as the backend does
    (the quick proxy's views are not registered): the progress events do not carry it."""
    from blend123.backend.reconstruction.pipeline import ReconstructionOptions, planned_photo_work
    from blend123.backend.tasks import square_views, views_of_job

    if len(views) < 2:
        return {}
    images, c2w, camera = views_of_job(views, "orbit")
    images, camera_angle_x = square_views(images, camera)
    work = planned_photo_work(images, c2w, camera_angle_x, ReconstructionOptions(register_views=False))
    return {"rays": work.rays, "compared": work.compared}


def _keys(dicts) -> list[str]:
    """Every key of ``dicts``, in order of first appearance."""
    return list(dict.fromkeys(k for d in dicts for k in d))


def mesh_job_pace(stages: dict[str, float]) -> float | None:
    """The pace a mesh job ran at: its stages' seconds (from the progress events) over
    their benchmark seconds, as the worker reckons a job's pace (the backend keeps a blend
    of it with what it knew before: not the job's own)."""
    mesh = [stage for stage in JOB_STAGES["reconstruct"] if stage in stages and stage != "load model"]
    bench = sum(STAGE_SECONDS[stage] for stage in mesh)
    return sum(stages[stage] for stage in mesh) / bench if bench > 0 else None


def _pace_text(pace: float | None) -> str:
    return "none" if pace is None else f"{pace:.2f}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the busy run")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "duck.png")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeat", type=int, default=3, help="runs per condition (the table shows medians)")
    args = parser.parse_args(argv)
    image = load_rgba(args.image)
    report = {
        "benchmark": "busy",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "image": args.image.name,
        "runs": {},
        # What a fresh backend starts from, against the pace its first mesh job showed.
        "speed_probe": {"pace": probe_pace(), "first_job_pace": None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, busy in (("quiet", 0), (f"{args.busy} busy", args.busy)):
            converts, staged = [], []
            with busy_processes(busy):
                for _ in range(max(1, args.repeat)):
                    converts.append(convert_seconds(args.image, folder))
                    # A fresh backend each time: the proxy caches the shell it builds for an
                    # image, and an artist's next Make Mesh is usually of another image.
                    with serve(folder) as client:
                        staged.append(staged_run(client, image))
                    if report["speed_probe"]["first_job_pace"] is None:
                        report["speed_probe"]["first_job_pace"] = mesh_job_pace(staged[-1]["stages"])
                        print(f"speed probe: pace {_pace_text(report['speed_probe']['pace'])}; the first mesh job ran at "
                              f"{_pace_text(report['speed_probe']['first_job_pace'])}", flush=True)
            run = {
                "convert_s": statistics.median(c["seconds"] for c in converts),
                "convert_runs": converts,
                "total_s": statistics.median(r["total_s"] for r in staged),
                "staged_runs": [
                    {k: r[k] for k in ("total_s", "stolen_s", "eta_max_error_after_10pct", "eta_mean_error_after_10pct")} for r in staged
                ],
                "stages": {k: statistics.median(r["stages"].get(k, 0.0) for r in staged) for k in _keys(r["stages"] for r in staged)},
                "eta_max_error_after_10pct": max(r["eta_max_error_after_10pct"] for r in staged),
                "eta_mean_error_after_10pct": statistics.mean(r["eta_mean_error_after_10pct"] for r in staged),
                "events": [r["events"] for r in staged],
                "etas": [r["etas"] for r in staged],
                "eta_worst_error_by_stage": {
                    k: max(r["eta_worst_error_by_stage"].get(k, 0.0) for r in staged) for k in _keys(r["eta_worst_error_by_stage"] for r in staged)
                },
            }
            report["runs"][name] = run
            seconds = ", ".join(f"{c['seconds']:.1f}" for c in converts)
            stolen = ", ".join(f"{c['stolen_s']:.1f}" for c in converts)
            bar = ", ".join(f"{c['eta_max_error_after_10pct']:.0%}/{c['eta_mean_error_after_10pct']:.0%}" for c in converts)
            print(f"{name}: convert {seconds} s (host stole {stolen} s), its bar's ETA error after 10% (max/mean) {bar}; "
                  f"through serve {run['total_s']:.1f} s, ETA error after 10%: "
                  f"max {run['eta_max_error_after_10pct']:.0%}, mean {run['eta_mean_error_after_10pct']:.0%} "
                  f"(worst by stage: {', '.join(f'{k} {v:.0%}' for k, v in run['eta_worst_error_by_stage'].items())})", flush=True)
            for r in run["staged_runs"]:
                print(f"  through serve {r['total_s']:.1f} s (host stole {r['stolen_s']:.1f} s): ETA error after 10% "
                      f"max {r['eta_max_error_after_10pct']:.0%}, mean {r['eta_mean_error_after_10pct']:.0%}", flush=True)
    quiet, busy = report["runs"].values()
    report["ratio"] = busy["convert_s"] / quiet["convert_s"]
    print(f"\n| stage | quiet s | busy s | ratio |\n|---|---|---|---|")
    for stage in quiet["stages"]:
        q, b = quiet["stages"][stage], busy["stages"].get(stage, float("nan"))
        print(f"| {stage} | {q:.2f} | {b:.2f} | {b / q:.1f}x |" if q > 0 else f"| {stage} | {q:.2f} | {b:.2f} | - |")
    print(f"| **convert, end to end (median)** | {quiet['convert_s']:.1f} | {busy['convert_s']:.1f} | {report['ratio']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
