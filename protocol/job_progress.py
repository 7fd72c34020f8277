"""One progress bar over jobs that run one after another.

"Make Mesh" (the panel) and ``blend123 convert`` are two backend jobs, an orbit and then
the mesh made from it. Each job reports its own whole-job fraction and time left
(``Progress.overall`` / ``eta_s``); :class:`ChainProgress` turns them into one fraction
and one ETA for the user: the finished jobs, the running one, and the ones still to
come, at the pace the backend expects of its machine where it says one, else at the
pace seen so far.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from . import settings
from .messages import Progress

#: The orbit's share of a Make Mesh job: the built-in proxy's orbit (model build and 21
#: views) took 0.15 of the whole on one host and 0.10 on another of the same machine type
#: (``benchmarks/bench_busy.py``: its numpy views ran as fast on both, the reconstruction's
#: torch stages 1.5x slower on the second), so the middle; a diffusion model's orbit takes
#: most of the time (``benchmarks/bench_diffusion.py``: 21 denoised views).
PROXY_ORBIT_SHARE = 0.125  # without a backend's own (``orbit_then_mesh``)
DIFFUSION_ORBIT_SHARE = 0.8
#: A backend's measured share outside these is taken for a fault, not a machine.
_MIN_SHARE, _MAX_SHARE = 0.02, 0.5
#: A job's first estimate counts as the expected pace only while it has barely started.
_FIRST_LOOK = 0.2
#: The mesh job after a quick-proxy orbit takes the orbit's ``object_cost`` to this power
#: longer than expected: twelve objects' mesh jobs (the quality set's, the duck, the mug,
#: through ``serve``) ran 3.3x apart and went as their orbit's views to the power 0.79.
#: (Once it runs, the mesh job's own clock spreads the cost over its stages instead:
#: ``backend/progress.object_scale``, about the same power over the whole job.)
_LATER_JOBS_FOLLOW = 0.79


def orbit_share(model: str) -> float:
    return PROXY_ORBIT_SHARE if settings.is_quick_proxy(model) else DIFFUSION_ORBIT_SHARE


class ChainProgress:
    """Fraction done and time left of a sequence of jobs; ``shares`` weigh them (sum 1)."""

    def __init__(self, shares: Sequence[float], clock: Callable[[], float] = time.monotonic, expect: bool = True) -> None:
        """``expect``: the backend's first estimate of the first job is one to start from
        (its stage weights were measured on that kind of job)."""
        total = float(sum(shares))
        self.shares = [s / total for s in shares]
        self._clock = clock
        self._start = clock()
        self._expect = expect
        self._expected_s = -1.0  # the whole chain at the first job's expected pace

    @classmethod
    def orbit_then_mesh(cls, model: str, proxy_share: float = -1.0) -> "ChainProgress":
        """``proxy_share``: the quick proxy's orbit's share as the backend measured it on its
        machine (hello's ``proxy_orbit_share``); < 0: the built-in one."""
        quick = settings.is_quick_proxy(model)
        share = proxy_share if quick and _MIN_SHARE <= proxy_share <= _MAX_SHARE else orbit_share(model)
        # The backend's stage weights are the quick proxy's: a diffusion model's views take
        # far longer than they say, so its first estimate is no pace to start from.
        return cls([share, 1.0 - share], expect=quick)

    def update(self, step: int, event: Progress) -> tuple[float, float]:
        """(fraction of the whole chain done, seconds left; < 0 unknown) after ``event`` of job ``step``."""
        job = event.overall if event.overall >= 0 else event.fraction
        done = sum(self.shares[:step]) + self.shares[step] * min(1.0, max(0.0, job))
        later = sum(self.shares[step + 1 :])
        if event.eta_s < 0:
            return done, -1.0
        if later <= 0:
            return done, event.eta_s
        if self._expect and self._expected_s < 0 and job < _FIRST_LOOK:
            # The backend's first estimate is the job at the pace it expects (its machine's
            # timings, its load): the whole chain at that pace.
            self._expected_s = event.eta_s / max(self.shares[step] * (1.0 - job), 1e-6)
        if self._expected_s > 0:
            # Jobs not started yet at the pace the backend expects (its machine's timings and
            # its load), not at the first job's: a quick-proxy orbit is numpy on one thread,
            # the mesh torch on the free CPUs, and their paces part (1.5x apart on two hosts
            # of one machine type); in the command's own backend the orbit shares the process
            # with the import of torch and runs at 2-3x its pace (the ETA said 14 s with 7 s
            # to go). The mesh job's own clock corrects the rest once it starts. The object's
            # cost, once the orbit's views have shown it, moves them: not the orbit's pace.
            cost = event.object_cost ** _LATER_JOBS_FOLLOW if step == 0 and event.object_cost > 0 else 1.0
            return done, event.eta_s + later * self._expected_s * cost
        # No pace to start from (a diffusion model's orbit): the pace of the work done so far.
        elapsed = self._clock() - self._start
        if elapsed <= 0 or done <= 0:
            return done, -1.0
        return done, event.eta_s + later * elapsed / done
