"""Use the CPUs other processes leave free, and wait for them without spinning.

Artists run the backend next to Blender, often while it renders. torch's CPU kernels
split each operation over ``torch.get_num_threads()`` threads and join them at the end;
when another process holds one of the cores, every join waits for a descheduled thread,
and the reconstruction's many small operations slow down far more than a fair share
would (measured: 2 threads beside two busy processes took 7x longer than 1 thread).
:class:`CpuShare` sizes torch's pool to the CPUs that others leave idle, re-measured at
each stage, so a quiet machine still gets every core.

Idle threads must not spin either, or the backend's own idle threads steal the cores
Blender renders on: ``OMP_WAIT_POLICY=PASSIVE`` makes OpenMP's sleep, and numpy's and
scipy's OpenBLAS get no pool at all (``OPENBLAS_NUM_THREADS=1``): its threads spin on
``sched_yield`` after every call, and the backend's BLAS calls are too small to gain from
them (measured on ``make demo``'s conversion: 391k ``sched_yield`` calls and 4 s of system
time, down to 0.9 s). Both libraries read these once, when they load:
:func:`calm_thread_pools` must run before ``import numpy`` (the package's ``__init__``
calls it first).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

#: Below this many idle CPUs torch gets one thread: a second would mostly wait.
_MIN_FREE_FOR_TWO = 1.5
#: How long the first measurement watches the machine, seconds.
_FIRST_SAMPLE_S = 0.05
#: Shortest span (seconds per CPU) worth a new measurement.
_MIN_TICKS_S = 0.04
#: The CPU counters' tick (``/proc/stat``: 100 Hz).
_TICK_S = 0.01
#: How long a job's start may wait for the CPU counters to say how busy the machine is.
SETTLE_S = 0.1


def calm_thread_pools() -> None:
    """Idle OpenMP threads sleep rather than spin, and BLAS runs on the calling thread
    (unless the user chose otherwise)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the container's share is not seen)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _allowance() -> int:
    """``OMP_NUM_THREADS`` when set to a positive number, else 0."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _machine_busy_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU-seconds summed over all CPUs since boot, from ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [float(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` from ``/proc``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The command name (field 2) may hold spaces: count the fields after its ")".
            fields = stat.read().rsplit(")", 1)[1].split()
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError, AttributeError):
        return None
    return (float(fields[11]) + float(fields[12])) / hz  # utime, stime (fields 14 and 15)


def _live_children() -> set[int]:
    """This process's child processes, running or not yet waited for (``/proc``; empty
    where the kernel does not list them)."""
    children: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", encoding="ascii") as listed:
                children.update(int(pid) for pid in listed.read().split())
    except (OSError, ValueError):
        pass
    return children


def _own_cpu_seconds(helpers: set[int]) -> float:
    """CPU time of this process and of its children: those that ended (in ``os.times``
    once waited for), those still running (their whole lifetime, so a span's difference
    is what they did in it), and the helper processes in ``helpers`` (those that ended are
    dropped from it: their time is in the children's once waited for)."""
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    for pid in _live_children() | helpers:
        seconds = _process_cpu_seconds(pid)
        if seconds is None:
            helpers.discard(pid)
        else:
            own += seconds
    return own


@dataclass
class _Sample:
    own_cpu: float
    machine: tuple[float, float] | None


def _sample(helpers: set[int]) -> _Sample:
    return _Sample(_own_cpu_seconds(helpers), _machine_busy_seconds())


class LoadMeter:
    """How many CPUs' worth of work other processes do: the machine's busy time since the
    last measurement minus this process's own (``/proc/stat``; the load average elsewhere).
    Its own includes its children's, running or ended, and the helper processes
    :meth:`count_as_own` names: the unwrap beside the light fit is not another program
    taking a CPU, for this meter or any other of the process (the server's, for hello)."""

    def __init__(self) -> None:
        # A scheduler's allowance (Ray sets OMP_NUM_THREADS to a worker's CPUs) caps it.
        self.cpus = min(usable_cpus(), _allowance() or usable_cpus())
        self._helpers: set[int] = set()
        self._last = _sample(self._helpers)
        self._estimate = 0.0

    def count_as_own(self, pid: int) -> None:
        """Count helper process ``pid``'s CPU time, from now, as this process's own (once:
        naming it again changes nothing). A child of this process counts as its own
        anyway, where the kernel lists children."""
        if pid in self._helpers or pid in _live_children():
            return
        seconds = _process_cpu_seconds(pid)
        if seconds is not None:
            self._helpers.add(pid)
            self._last.own_cpu += seconds  # what it did before now is no part of the next span

    def others_busy(self, settle_s: float = 0.0) -> float:
        """CPUs' worth of work other processes did since the last measurement; waits up to
        ``settle_s`` for the counters to tick if too little time has passed."""
        # The counters tick at 100 Hz, so one sleep of the exact span often falls a tick
        # short (then a fresh meter said "all free" beside two busy processes half the time).
        deadline = time.monotonic() + settle_s
        while settle_s > 0 and (wait := _MIN_TICKS_S * self.cpus - self._ticked()) > 0 and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, wait / max(self.cpus, 1) + _TICK_S))
        now = _sample(self._helpers)
        last = self._last
        if now.machine is None or last.machine is None:
            return max(0.0, os.getloadavg()[0] - 1.0) if hasattr(os, "getloadavg") else 0.0
        busy = now.machine[0] - last.machine[0]
        total = now.machine[1] - last.machine[1]
        if total < _MIN_TICKS_S * self.cpus:
            return self._estimate  # too short to count: the counters tick at 100 Hz
        self._last = now
        # Others' share of the machine's time, taken to fall evenly on the CPUs this
        # process may use (a container sees the host's counters, not its own).
        share = (busy - (now.own_cpu - last.own_cpu)) / total
        self._estimate = min(1.0, max(0.0, share)) * self.cpus
        return self._estimate

    def free(self, settle_s: float = 0.0) -> float:
        """CPUs other processes leave idle."""
        return max(0.0, self.cpus - self.others_busy(settle_s))

    def _ticked(self) -> float:
        machine = _machine_busy_seconds()
        return 0.0 if machine is None or self._last.machine is None else machine[1] - self._last.machine[1]


class RecentLoad:
    """The CPUs other processes left free lately: a long-lived process (the server) samples
    it every second or so, and a job's start or a hello reads the last sample, not an
    average since the last job or hello (hours, perhaps, of a render since stopped). Read
    before any sample, or once the last is stale, it measures now."""

    def __init__(self, max_age_s: float = 3.0) -> None:
        self.meter = LoadMeter()
        self.cpus = self.meter.cpus
        self._max_age_s = max_age_s
        self._lock = threading.Lock()  # the server samples, the worker reads
        self._sample: tuple[float, float] | None = None  # (when, free CPUs)

    def sample(self) -> float:
        with self._lock:
            free = self.meter.free(settle_s=SETTLE_S)
            self._sample = (time.monotonic(), free)
            return free

    def free(self) -> float:
        last = self._sample
        if last is not None and time.monotonic() - last[0] <= self._max_age_s:
            return last[1]
        return self.sample()


def second_cpu_free(free_cpus: float, cpus: int) -> bool:
    """Whether a job gets a second CPU: photo carving's views, the bake's chunks and the
    unwrap beside the light fit then run two at a time."""
    return cpus >= 2 and free_cpus >= _MIN_FREE_FOR_TWO


class CpuShare:
    """Sets torch's CPU thread count from the CPUs other processes leave free.

    ``threads`` > 0 pins the count instead. Call :meth:`adjust` at stage boundaries: it
    measures what other processes used since the last call (the machine's busy time minus
    this process's own) and resizes the pool. :meth:`restore` puts the old count back.
    """

    def __init__(self, threads: int = 0) -> None:
        import torch

        self._torch = torch
        self._pinned = threads
        self._before = torch.get_num_threads()
        self._meter = LoadMeter()
        self.threads = self._before
        if threads <= 0:
            time.sleep(_FIRST_SAMPLE_S)
        self.adjust()

    def others_busy(self) -> float:
        """CPUs' worth of work other processes did since the last measurement."""
        return self._meter.others_busy()

    def count_as_own(self, pid: int) -> None:
        """A helper process of this job's: its CPU time is not others' load."""
        self._meter.count_as_own(pid)

    def adjust(self) -> int:
        if self._pinned > 0:
            threads = self._pinned
        else:
            free = self._meter.free()
            threads = max(1, min(self._meter.cpus, int(free + 0.5))) if second_cpu_free(free, self._meter.cpus) else 1
        if threads != self._torch.get_num_threads():
            self._torch.set_num_threads(threads)
        self.threads = threads
        return threads

    @contextmanager
    def at_most(self, threads: int) -> Iterator[None]:
        """At most ``threads`` torch threads inside the block (unless the count is pinned)."""
        before = self._torch.get_num_threads()
        if self._pinned <= 0 and before > threads:
            self._torch.set_num_threads(threads)
        try:
            yield
        finally:
            if self._torch.get_num_threads() != before:
                self._torch.set_num_threads(before)

    def restore(self) -> None:
        if self._torch.get_num_threads() != self._before:
            self._torch.set_num_threads(self._before)
