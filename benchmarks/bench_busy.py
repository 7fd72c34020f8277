"""``make demo``'s conversion on a quiet machine and beside busy processes, in one run.

Artists run the backend next to Blender, often while it renders. For each condition
(quiet; ``--busy`` processes spinning ``while True: pass``) this measures:

* ``blend123 convert examples/duck.png`` end to end, as ``make demo`` runs it (process
  start, in-process backend, orbit, reconstruction, GLB written);
* the same orbit and mesh through a real ``blend123 serve``: seconds per stage, taken
  from the progress events, and how far the progress bar's ETA was from the truth once
  10% of the job was done (the ETA the CLI and the panel show, ``ChainProgress``).

Prints a markdown table per condition and the busy/quiet ratio stage by stage; writes
JSON to ``--out``.

    python benchmarks/bench_busy.py [--busy 2] [--image examples/duck.png] [--out benchmarks/results/busy.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
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
from blend123.protocol.client import Client  # noqa: E402
from blend123.protocol.job_progress import ChainProgress  # noqa: E402
from blend123.protocol.messages import Done, Error, Orbit, Progress, Reconstruct  # noqa: E402

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


def convert_seconds(image: Path, folder: Path) -> float:
    """``blend123 convert`` end to end, as ``make demo`` runs it."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "blend123.backend.cli", "convert", str(image), "-o", str(folder / "demo.glb"), "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


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
    chain = ChainProgress.orbit_then_mesh("default")
    start = time.perf_counter()
    seen: list[tuple[float, str, float, float]] = []  # (time, stage, chain fraction, eta)
    orbit_id = ""
    for step, request in enumerate([Orbit(image, [0.0]), None]):
        if request is None:
            request = Reconstruct(source_job=orbit_id)
        job_id = client.submit(request)
        orbit_id = orbit_id or job_id
        for event in client.events(job_id):
            if isinstance(event, Progress):
                fraction, eta = chain.update(step, event)
                seen.append((time.perf_counter() - start, event.stage, fraction, eta))
            elif isinstance(event, Error):
                raise RuntimeError(event.message)
            elif isinstance(event, Done):
                break
    total = time.perf_counter() - start
    stages: dict[str, float] = {}
    for (t0, stage, _, _), (t1, _, _, _) in zip(seen, seen[1:] + [(total, "", 1.0, 0.0)]):
        stages[stage] = stages.get(stage, 0.0) + (t1 - t0)
    # The ETA's error relative to the time really left, from 10% done until the last second.
    late = [(stage, abs(eta - (total - t)) / (total - t)) for t, stage, f, eta in seen if f >= 0.1 and eta >= 0 and total - t > 1.0]
    errors = [e for _, e in late]
    worst = {}
    for stage, error in late:
        worst[stage] = max(worst.get(stage, 0.0), error)
    return {
        "total_s": total,
        "stages": stages,
        "eta_max_error_after_10pct": max(errors, default=0.0),
        "eta_mean_error_after_10pct": sum(errors) / max(len(errors), 1),
        "eta_worst_error_by_stage": worst,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the busy run")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "duck.png")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    image = load_rgba(args.image)
    report = {
        "benchmark": "busy",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "image": args.image.name,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, busy in (("quiet", 0), (f"{args.busy} busy", args.busy)):
            with busy_processes(busy), serve(folder) as client:
                convert = convert_seconds(args.image, folder)
                staged = staged_run(client, image)
            report["runs"][name] = {"convert_s": convert, **staged}
            print(f"{name}: convert {convert:.1f} s; through serve {staged['total_s']:.1f} s, ETA error after 10%: "
                  f"max {staged['eta_max_error_after_10pct']:.0%}, mean {staged['eta_mean_error_after_10pct']:.0%} "
                  f"(worst by stage: {', '.join(f'{k} {v:.0%}' for k, v in staged['eta_worst_error_by_stage'].items())})", flush=True)
    quiet, busy = report["runs"].values()
    report["ratio"] = busy["convert_s"] / quiet["convert_s"]
    print(f"\n| stage | quiet s | busy s | ratio |\n|---|---|---|---|")
    for stage in quiet["stages"]:
        q, b = quiet["stages"][stage], busy["stages"].get(stage, float("nan"))
        print(f"| {stage} | {q:.2f} | {b:.2f} | {b / q:.1f}x |")
    print(f"| **convert, end to end** | {quiet['convert_s']:.1f} | {busy['convert_s']:.1f} | {report['ratio']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
