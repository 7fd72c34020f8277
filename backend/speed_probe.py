"""How fast this machine's cores run the reconstruction's kind of work, in 30 ms.

A backend that has timed no job yet (a fresh install, ``StageMemory`` with nothing kept)
would start its first estimate at the pace of the machine ``STAGE_SECONDS`` were measured
on: on a machine 1.5x faster, the bar's first job said half as long again as it took
(49-52% long through the orbit, ``benchmarks/bench_busy.py``). The probe times a small
fixed piece of the light fit's and the bake's work (a texture lookup, 24 lobes over the
normals and their gradients, a numpy sort) on one thread and compares it with its time on
that machine. It keeps the fastest of many short repeats, so other programs' load (which
``load_pace`` accounts for) hardly moves it: beside two busy processes on two CPUs it
read 1.58-1.63 ms, quiet 1.57-1.70 ms.
"""

from __future__ import annotations

import time

import numpy as np

#: The probe's seconds (fastest repeat) at the pace ``STAGE_SECONDS`` describe: 1.62 ms
#: (five processes, three probes each: 1.57-1.70 ms) on a 2-core CPU whose Make Mesh ran at
#: 0.65 of that pace through ``blend123 serve`` (``bench_busy.py``, the stages' medians).
REFERENCE_S = 1.62e-3 / 0.65
_REPEATS = 15
#: A probe outside these bounds of the reference is taken for a fault, not a machine.
_BOUNDS = (0.1, 10.0)


class _Work:
    """The fixed piece of work, built once: every tensor below torch's size for spreading
    an operation over threads, so it runs on one thread whatever the pool."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        gen = torch.Generator().manual_seed(0)
        self.image = torch.rand(1, 3, 64, 64, generator=gen)
        self.grid = torch.rand(1, 1, 1024, 2, generator=gen) * 2.0 - 1.0
        self.normals = torch.nn.functional.normalize(torch.randn(1024, 3, generator=gen), dim=1)
        self.axes = torch.nn.functional.normalize(torch.randn(24, 3, generator=gen), dim=1)
        self.sharpness = torch.full((24,), 4.0, requires_grad=True)
        self.amplitudes = torch.rand(24, 3, generator=gen).requires_grad_(True)
        self.points = np.random.default_rng(0).random((8192, 3))

    def __call__(self) -> None:
        functional = self.torch.nn.functional
        colour = functional.grid_sample(self.image, self.grid, align_corners=False)[0, :, 0].T
        lobes = self.torch.exp(self.sharpness * (self.normals @ self.axes.T - 1.0))
        loss = ((colour * (lobes @ self.amplitudes) - colour) ** 2).mean()
        loss.backward()
        np.linalg.norm(self.points - self.points.mean(axis=0), axis=1).argsort()


def probe_seconds(repeats: int = _REPEATS) -> float:
    """The fastest of ``repeats`` runs of the probe's work, in seconds."""
    return _fastest(_Work(), repeats)


#: The numpy part's seconds (:class:`_QuickWork`, fastest repeat) at the same pace: 0.775
#: of the whole probe's on the 2-core CPU (eight readings of each, alternated: 0.70-0.93).
QUICK_REFERENCE_S = 0.775 * REFERENCE_S


class _QuickWork:
    """A numpy-only piece of the same kinds of work (a sort of distances, a gather, 24
    lobes over the normals): readable before torch is imported, so that a backend's first
    job, which runs beside that import, starts from this machine's pace rather than the
    benchmark machine's (a host at 0.69 of it drew a first bar 45% too long). A provisional
    reading: the whole probe replaces it once torch is in."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.points = rng.random((8192, 3))
        self.image = rng.random((64, 64, 3)).astype(np.float32)
        self.at = rng.integers(0, 64, (4096, 2))
        self.normals = rng.normal(size=(1024, 3))
        self.axes = rng.normal(size=(24, 3))

    def __call__(self) -> None:
        np.linalg.norm(self.points - self.points.mean(axis=0), axis=1).argsort()
        self.image[self.at[:, 0], self.at[:, 1]].sum(axis=0)
        np.exp(4.0 * (self.normals @ self.axes.T - 1.0)).sum(axis=1)


def _fastest(work, repeats: int) -> float:
    work()  # the first run pays for lazy set-up
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def quick_pace(repeats: int = _REPEATS) -> float | None:
    """This machine's pace from the numpy-only work (no torch needed; 25 ms); None as
    :func:`probe_pace`. Less sure than :func:`probe_pace`: a first estimate until it runs."""
    return _sensible(_fastest(_QuickWork(), repeats) / QUICK_REFERENCE_S)


def probe_pace(repeats: int = _REPEATS) -> float | None:
    """This machine's seconds per benchmark second, as the probe sees it; None when the
    reading makes no sense (a clock that jumped, a machine stalled)."""
    return _sensible(probe_seconds(repeats) / REFERENCE_S)


def _sensible(pace: float) -> float | None:
    return pace if _BOUNDS[0] <= pace <= _BOUNDS[1] else None
