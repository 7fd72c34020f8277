"""A backend no job has timed yet starts its first estimate from a quick speed probe."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from blend123.backend.device import describe_device
from blend123.backend.progress import JOB_STAGES, STAGE_SECONDS
from blend123.backend.server import app
from blend123.backend.server.app import Server
from blend123.backend.server.config import ServerConfig
from blend123.backend.server.stage_memory import StageMemory
from blend123.backend.speed_probe import REFERENCE_S, probe_pace, probe_seconds, quick_pace

from blend123.protocol.messages import Orbit, Progress

#: The probe times the CPU: a backend on a GPU keeps the benchmark's pace.
ON_CPU = describe_device().kind == "cpu"


def _device(kind: str):
    """A stand-in for :func:`describe_device`'s answer: only its ``kind`` is read."""
    return type("Device", (), {"kind": kind})()


def test_the_probe_is_quick_and_reads_the_same_twice():
    start = time.perf_counter()
    first = probe_seconds()
    assert time.perf_counter() - start < 2.0  # a start-up cost nobody waits on
    readings = sorted([first, probe_seconds(), probe_seconds()])
    assert readings[0] > 0 and readings[-1] < 1.5 * readings[0]
    pace = probe_pace()
    assert pace is not None and 0.1 <= pace <= 10.0
    assert pace == pytest.approx(probe_seconds() / REFERENCE_S, rel=0.5)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a CPU for the busy program and one for the probe")
def test_another_busy_program_hardly_moves_the_probe():
    """The load is ``load_pace``'s to count; the probe keeps the fastest of its repeats.
    Quiet and busy readings alternate, three rounds of three probes each, so that a shared
    host's own speed moving between them (one reading of three probes each once came out
    1.30x, and one of five 1.33x, taken one after the other) does not read as the load."""
    quiet, busy = [], []
    for _ in range(3):
        quiet.append(min(probe_seconds() for _ in range(3)))
        started = subprocess.run(
            ["sh", "-c", f"'{sys.executable}' -c 'while True: pass' > /dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True
        )
        pid = int(started.stdout.split()[0])
        try:
            time.sleep(0.3)
            busy.append(min(probe_seconds() for _ in range(3)))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert min(busy) < 1.3 * min(quiet), (quiet, busy)


def test_only_a_machine_no_job_has_timed_starts_from_the_probe(tmp_path):
    fresh = StageMemory.load(tmp_path / "stage_seconds.json")
    fresh.start_from(None)  # a reading that made no sense
    assert fresh.pace == 1.0
    fresh.start_from(0.6)
    assert fresh.pace == 0.6 and not fresh.timed
    fresh.start_from(1e6)
    assert fresh.pace == 50.0  # bounded, like a learned pace
    fresh.pace, fresh.timed = 1.3, True  # a job timed it (or a restart kept its timing)
    fresh.save()
    kept = StageMemory.load(fresh.path)
    assert kept.timed
    kept.start_from(0.6)
    assert kept.pace == pytest.approx(1.3)


#: The first estimate is the probe's pace times the load other programs put on the machine
#: (``load_pace``: up to 1.7 with both CPUs of a 2-CPU machine taken by others).
_SUITE_LOAD = (0.95, 1.8)


def logged_pace(backend, probe: str, wait_s: float = 5.0) -> float:
    """The pace a real ``serve`` says it started from (its log, at the default level)."""
    pattern = re.compile(rf"blend123\.server: {re.escape(probe)}: this machine takes ([0-9.e+-]+) s")
    deadline = time.monotonic() + wait_s
    while not (found := pattern.search(backend.output())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, backend.output()
    return float(found.group(1))


def test_a_fresh_serve_starts_its_first_estimate_from_the_probe(serve_process, client_factory, reference_image):
    backend = serve_process()  # a jobs folder of its own: no job has timed this machine
    client = client_factory(backend.address, timeout_s=60.0)
    first = next(e for e in client.events(client.submit(Orbit(reference_image, [10.0], views=6))) if isinstance(e, Progress))
    at_benchmark = sum(STAGE_SECONDS[s] for s in JOB_STAGES["orbit"])
    # ``serve`` reads the machine with the whole probe before serving, and the quick probe
    # (for a backend whose first job runs beside the imports) must not read it over that.
    # Compared with the reading the backend itself took: a second reading taken here,
    # seconds later, is another draw of a shared host's speed.
    assert "quick speed probe" not in backend.output()
    pace = logged_pace(backend, "speed probe") if ON_CPU else 1.0
    assert at_benchmark * pace * _SUITE_LOAD[0] <= first.eta_s <= at_benchmark * pace * _SUITE_LOAD[1]


def test_the_first_estimate_follows_the_probe_not_the_benchmark_machine(server_factory, client_factory, reference_image, monkeypatch):
    """Where the machine is three times slower than the benchmark's, the first job says so
    (a real server and client; the probes' readings are set, so the two paces differ)."""
    monkeypatch.setattr(app, "quick_pace", lambda: 3.0)
    monkeypatch.setattr(app, "probe_pace", lambda: 3.0)
    monkeypatch.setattr(app, "describe_device", lambda: _device("cpu"))
    server = server_factory()
    client = client_factory(server.endpoint, timeout_s=60.0)
    first = next(e for e in client.events(client.submit(Orbit(reference_image, [10.0], views=6))) if isinstance(e, Progress))
    at_benchmark = sum(STAGE_SECONDS[s] for s in JOB_STAGES["orbit"])
    assert at_benchmark * 3.0 * _SUITE_LOAD[0] <= first.eta_s <= at_benchmark * 3.0 * _SUITE_LOAD[1]


def test_the_server_probes_once_and_never_over_a_timing(tmp_path, monkeypatch, caplog):
    server = Server(ServerConfig(jobs_dir=tmp_path / "fresh"))
    server.probe_speed()
    probed = server.stage_memory.pace
    assert (probed != 1.0) == ON_CPU and not server.stage_memory.timed
    server.stage_memory.pace = 7.0
    server.probe_speed()  # the warm-up and `serve` both ask: the first answer stands
    assert server.stage_memory.pace == 7.0
    # A machine a job has timed (kept from before a restart) keeps that timing.
    timed = StageMemory(pace=1.3, path=tmp_path / "timed" / "stage_seconds.json")
    timed.save()
    server = Server(ServerConfig(jobs_dir=tmp_path / "timed", stage_memory_file=timed.path))
    assert server.stage_memory.timed
    server.probe_speed()
    assert server.stage_memory.pace == pytest.approx(1.3)
    # A probe that fails costs the first estimate, never the backend.
    def broken() -> float:
        raise RuntimeError("no timer")

    monkeypatch.setattr(app, "describe_device", lambda: _device("cpu"))
    monkeypatch.setattr(app, "probe_pace", broken)
    server = Server(ServerConfig(jobs_dir=tmp_path / "broken"))
    server.probe_speed()
    assert server.stage_memory.pace == 1.0 and "speed probe failed" in caplog.text


def test_the_quick_probe_reads_the_machine_before_torch_and_the_whole_probe_replaces_it(tmp_path, monkeypatch):
    # Before torch is in (a command's own backend runs its first job beside that import),
    # numpy alone reads the machine: about what the whole probe reads.
    code = "import sys; from blend123.backend.speed_probe import quick_pace; print(quick_pace()); print('torch' in sys.modules)"
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert said[1] == "False"
    quick = float(said[0])
    assert 0.5 < quick / probe_pace() < 2.0
    probed_first = Server(ServerConfig(jobs_dir=tmp_path / "serve"))  # as ``serve`` does: the whole probe, then serving
    monkeypatch.setattr(app, "describe_device", lambda: _device("cpu"))
    monkeypatch.setattr(app, "probe_pace", lambda: 0.42)
    probed_first.probe_speed()
    probed_first._quick_probe()
    assert probed_first.stage_memory.pace == 0.42  # not read over by the quick probe
    monkeypatch.undo()
    server = Server(ServerConfig(jobs_dir=tmp_path / "cpu"))
    server._quick_probe()
    memory = server.stage_memory
    assert memory.probed and not memory.timed and memory.pace != 1.0 and 0.5 < memory.pace / quick < 2.0
    # The whole probe, once torch is in, replaces it on a CPU ...
    monkeypatch.setattr(app, "describe_device", lambda: _device("cpu"))
    monkeypatch.setattr(app, "probe_pace", lambda: 0.42)
    server.probe_speed()
    assert memory.pace == 0.42
    # ... and on a GPU, where the jobs run elsewhere, the CPU's reading is set aside.
    gpu = Server(ServerConfig(jobs_dir=tmp_path / "gpu"))
    gpu._quick_probe()
    monkeypatch.setattr(app, "describe_device", lambda: _device("cuda"))
    gpu.probe_speed()
    assert gpu.stage_memory.pace == 1.0 and not gpu.stage_memory.probed
    # A machine a job has timed keeps that timing.
    timed = StageMemory(pace=1.3, path=tmp_path / "timed" / "stage_seconds.json")
    timed.save()
    server = Server(ServerConfig(jobs_dir=tmp_path / "timed", stage_memory_file=timed.path))
    server._quick_probe()
    assert server.stage_memory.pace == pytest.approx(1.3)
