"""The reconstruction sizes torch's CPU pool to the CPUs other processes leave free."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from blend123.backend.cpu_share import CpuShare, LoadMeter, RecentLoad, _own_cpu_seconds, _process_cpu_seconds, usable_cpus


def test_a_pinned_count_is_used_and_restored():
    before = torch.get_num_threads()
    share = CpuShare(threads=3)
    try:
        assert share.threads == 3 and torch.get_num_threads() == 3
    finally:
        share.restore()
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads the machine's CPU counters from /proc/stat")
@contextlib.contextmanager
def _other_programs(count: int):
    """Busy processes that are not this one's children (started by a shell that exits at
    once): other programs' load, as a render in Blender would be."""
    pids: list[int] = []
    try:
        for _ in range(count):
            started = subprocess.run(
                ["sh", "-c", f"'{sys.executable}' -c 'while True: pass' > /dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True
            )
            pids.append(int(started.stdout.split()[0]))
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_cores_held_by_other_processes_are_left_to_them():
    cpus = usable_cpus()
    with _other_programs(cpus):
        time.sleep(0.5)  # let them get going
        share = CpuShare()
        try:
            time.sleep(0.3)
            assert share.others_busy() > cpus - 1  # measured since the last look: every core busy
            assert share.adjust() == 1 and torch.get_num_threads() == 1
        finally:
            share.restore()


def test_the_package_asks_openmp_not_to_spin():
    # Set before torch loads (the backend package's import does it), unless the user chose.
    code = "import blend123.backend, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "ACTIVE"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_numpys_blas_gets_no_spinning_pool():
    # OpenBLAS starts its pool when numpy loads; the package must set its size first.
    code = (
        "import blend123.backend, numpy, os; a = numpy.ones((512, 512)); a @ a; "
        "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1"]  # the only thread is the main one


def test_a_schedulers_thread_allowance_caps_the_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    share = CpuShare()
    try:
        assert share.threads == 1  # a 1-CPU Ray worker stays on one thread, however idle the machine
    finally:
        share.restore()


def test_at_most_caps_the_count_inside_the_block_only():
    share = CpuShare(threads=0)
    try:
        torch.set_num_threads(2)
        with share.at_most(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        share.restore()


def test_at_most_leaves_a_pinned_count_alone():
    share = CpuShare(threads=2)
    try:
        with share.at_most(1):
            assert torch.get_num_threads() == 2  # the user asked for two
    finally:
        share.restore()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads the machine's CPU counters from /proc")
def test_a_child_process_is_own_work_and_another_program_is_not():
    # The unwrap's helper beside the light fit is the job's own work, for every meter of
    # the process (the bake after it may use its core; the server's hello reads one too).
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with _other_programs(1) as (other,):
            time.sleep(0.3)
            before = _own_cpu_seconds(set()), _process_cpu_seconds(child.pid), _process_cpu_seconds(other)
            time.sleep(0.6)
            after = _own_cpu_seconds(set()), _process_cpu_seconds(child.pid), _process_cpu_seconds(other)
        own, of_child, of_other = (b - a for a, b in zip(before, after))
        assert of_child > 0.1 and of_other > 0.1  # both ran, whatever else the machine runs
        assert own == pytest.approx(of_child, abs=0.05)  # the child's, not the other program's
    finally:
        child.kill()
        child.wait()


def test_a_finished_child_is_own_work():
    before = _own_cpu_seconds(set())
    subprocess.run([sys.executable, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass"], check=True)
    assert _own_cpu_seconds(set()) - before >= 0.5


def test_recent_load_reads_the_last_sample_while_it_is_fresh():
    load = RecentLoad(max_age_s=0.3)
    measured = []
    real = load.meter.free
    load.meter.free = lambda settle_s=0.0: measured.append(settle_s) or real(settle_s)
    first = load.free()  # no sample yet: measured now, waiting for the counters if need be
    assert 0.0 <= first <= load.cpus and len(measured) == 1 and measured[0] > 0
    assert load.free() == first and len(measured) == 1  # fresh: the same sample
    time.sleep(0.35)
    load.free()  # stale: measured again
    assert len(measured) == 2


def test_a_helper_named_twice_counts_once():
    # Not a child (started detached), so only naming it makes it own work; naming it again
    # must not take its past CPU off the span twice.
    with _other_programs(1) as (pid,):
        time.sleep(0.3)
        meter = LoadMeter()
        meter.count_as_own(pid)
        once = meter._last.own_cpu
        meter.count_as_own(pid)
        assert meter._last.own_cpu == once and pid in meter._helpers
