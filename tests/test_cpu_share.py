"""The reconstruction sizes torch's CPU pool to the CPUs other processes leave free."""

from __future__ import annotations

import os
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
def test_cores_held_by_other_processes_are_left_to_them():
    cpus = usable_cpus()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.5)  # let them get going
        share = CpuShare()
        try:
            time.sleep(0.3)
            assert share.others_busy() > cpus - 1  # measured since the last look: every core busy
            assert share.adjust() == 1 and torch.get_num_threads() == 1
        finally:
            share.restore()
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


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
def test_a_helper_process_counted_as_own_is_not_others_load():
    # The unwrap beside the light fit is the job's own work: the bake after it may use
    # the core it ran on. Two meters over the same span, one told of the helper: whatever
    # else the machine runs meanwhile, they differ by the helper's CPU.
    helper = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        meter, stranger = LoadMeter(), LoadMeter()
        meter.count_as_own(helper.pid)
        start, helper_start = time.monotonic(), _process_cpu_seconds(helper.pid)
        time.sleep(0.6)
        others_to_stranger, others = stranger.others_busy(), meter.others_busy()
        helper_cpus = (_process_cpu_seconds(helper.pid) - helper_start) / (time.monotonic() - start)
        # What the helper got of the CPUs (a whole one on a quiet machine, its share on a busy one).
        assert helper_cpus > 0.2 and abs((others_to_stranger - others) - helper_cpus) < 0.2, (others_to_stranger, others, helper_cpus)
    finally:
        helper.kill()
        helper.wait()


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
