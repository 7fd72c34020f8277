"""UV unwrapping with xatlas: charts packed into one square texture with padding.

xatlas holds Python's GIL for its whole run (a second or so for 50k faces, 2-3 s beside
busy programs), so no thread can work beside it: not the light fit, and not the server's
own thread, which then answers no ping and hears no cancel. :class:`UnwrapBeside` runs it
in a helper process instead, while the stages that do not change the geometry (the light
fit) go on beside it on another core, or while the job waits for it, still cancellable;
given the vertex normals, the helper also lays out the texels (``texels.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import xatlas

from blend123.protocol.errors import Blend123Error

from .texels import TexelSurface, texel_surface

log = logging.getLogger(__name__)


@dataclass
class UVMesh:
    """A mesh split along UV seams: every vertex has exactly one UV."""

    vertices: np.ndarray  # (V', 3) float64
    faces: np.ndarray  # (F, 3) int64, same faces and order as the input
    uvs: np.ndarray  # (V', 2) float32 in [0, 1], origin bottom-left of the texture
    source: np.ndarray  # (V',) int64: input vertex each output vertex was copied from


def unwrap(
    vertices: np.ndarray,
    faces: np.ndarray,
    texture_size: int,
    padding: int = 4,
    max_chart_area_fraction: float = 0.02,
    nudge: float = 0.0,
) -> UVMesh:
    """Unwrap with xatlas; ``padding`` texels between charts keep mip levels seam-free.

    ``max_chart_area_fraction`` caps a chart's surface area: xatlas's chart growing is
    superlinear in chart size, and capping it cuts unwrap time several-fold on smooth
    surfaces (e.g. ~14 s -> ~3 s for 50k faces) for a few more seams. The charts are grown
    once, without xatlas's re-seeding passes (``max_iterations``): a third faster for about
    a third more charts, at the same packing efficiency.

    ``nudge``: xatlas sees the vertices moved at random by this share of the mesh's size
    (the UVs are for the vertices as given). xatlas crashes the process on some meshes (a
    regular sphere of 82k faces, every time); 1e-5 of its size, far below a texel, was
    enough to unwrap it.
    """
    positions = np.asarray(vertices, dtype=np.float64)
    if nudge > 0 and len(positions):
        size = float(np.linalg.norm(positions.max(axis=0) - positions.min(axis=0)))
        positions = positions + np.random.default_rng(0).normal(scale=nudge * size, size=positions.shape)
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(positions, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    charts = xatlas.ChartOptions()
    if max_chart_area_fraction > 0:
        charts.max_chart_area = float(_area(vertices, faces) * max_chart_area_fraction)
    charts.max_iterations = 0
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(charts, pack)
    source, indices, uvs = atlas[0]
    # xatlas may make the atlas a little larger than asked; UVs are normalised to it, so
    # they span the square texture whatever its final size.
    return UVMesh(
        vertices=np.asarray(vertices, dtype=np.float64)[source.astype(np.int64)],
        faces=indices.astype(np.int64),
        uvs=np.clip(uvs.astype(np.float32), 0.0, 1.0),
        source=source.astype(np.int64),
    )


def _area(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (np.asarray(vertices, dtype=np.float64)[faces[:, k]] for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


class UnwrapFailed(Blend123Error):
    """The unwrap crashed on this mesh, nudged or not."""


class UnwrapBeside:
    """:func:`unwrap` in a helper process, started now and collected by :meth:`result`.

    The helper is a fresh interpreter that imports numpy and xatlas only (not the caller's
    ``__main__``, as multiprocessing's ``spawn`` would): the mesh goes in and the UVs come
    back pickled over its stdin and stdout. A helper that dies without a result (xatlas
    crashed on the mesh, or it was killed) is followed by one more, the mesh nudged
    (``unwrap``'s ``nudge``); never by the unwrap in this process, where a crash would take
    the backend with it. Only where no process can be started does the unwrap run here.
    :meth:`close` stops a helper whose result is no longer wanted (a cancelled job).

    With ``normals`` (per input vertex) the helper also lays out the texels of the atlas
    (:func:`~.texels.texel_surface` at the texture's size); :attr:`texels` then holds
    them after :meth:`result`, else it stays None (the caller lays them out itself).
    """

    def __init__(
        self, vertices: np.ndarray, faces: np.ndarray, *args, normals: np.ndarray | None = None, helper: subprocess.Popen | None = None
    ) -> None:
        """``helper``: one :func:`start_helper` started ahead (else one is started now)."""
        self._call = (np.asarray(vertices, dtype=np.float64), np.asarray(faces), *args)
        self._normals = None if normals is None else np.asarray(normals, dtype=np.float64)
        self.texels: TexelSurface | None = None
        self._process: subprocess.Popen | None = None
        self._start(helper if helper is not None and helper.poll() is None else start_helper(), nudge=0.0)

    def _start(self, process: subprocess.Popen | None, nudge: float) -> None:
        """Hand the call to ``process`` (None: no helper to be had)."""
        self._process = process
        if process is None:
            return
        # Fed from a thread: the pipe holds 64 KiB, and the helper reads only once started.
        data = pickle.dumps((self._call, {"nudge": nudge}, self._normals), protocol=5)
        threading.Thread(target=_feed, args=(process.stdin, data), name="blend123-unwrap-feed", daemon=True).start()

    @property
    def pid(self) -> int | None:
        """The helper's process id while it runs; None when unwrapping here."""
        return None if self._process is None else self._process.pid

    def result(self, waiting: Callable[[], None] | None = None) -> UVMesh:
        """The UVs. ``waiting`` is called every tenth of a second while the helper works
        (a job's progress call): what it raises (a cancel) stops the helper and goes up."""
        if self._process is None:
            return unwrap(*self._call)
        outcome = self._outcome(waiting)
        if outcome is None:
            log.warning("the unwrap helper process stopped without a result; unwrapping in another, the mesh nudged")
            self._start(start_helper(), nudge=_RETRY_NUDGE)
            if self._process is None:
                return unwrap(*self._call, nudge=_RETRY_NUDGE)  # no more processes to be had
            outcome = self._outcome(waiting)
        if outcome is None:
            raise UnwrapFailed(
                f"the UV unwrap (xatlas) crashed twice on this mesh of {len(self._call[1])} faces",
                "try again with another face budget (--max-faces on the command line, Mesh detail in the panel)",
            )
        if isinstance(outcome, Exception):
            raise outcome
        self.texels = outcome[1]
        return outcome[0]

    def _outcome(self, waiting: Callable[[], None] | None) -> tuple | Exception | None:
        """What the helper sent back: (UVs, texels), the exception it raised, or None if it
        died without a word. The helper is gone afterwards, whatever happened."""
        try:
            outcome = pickle.loads(self._read(waiting))
        except (OSError, EOFError, pickle.UnpicklingError, ValueError):
            return None
        finally:
            self.close()
        if isinstance(outcome, tuple) and isinstance(outcome[0], UVMesh) or isinstance(outcome, Exception):
            return outcome
        return None

    def _read(self, waiting: Callable[[], None] | None) -> bytes:
        """All the helper writes, read on a thread of its own so that this one can call
        ``waiting`` meanwhile (``select`` would not wait on a pipe on Windows)."""
        pipe, read = self._process.stdout, []
        reader = threading.Thread(target=_drain, args=(pipe, read), name="blend123-unwrap-read", daemon=True)
        reader.start()
        while reader.is_alive():
            reader.join(_WAITING_EVERY_S)
            if waiting is not None and reader.is_alive():
                waiting()  # the caller's ``finally`` stops the helper if this raises
        if not read:
            raise EOFError("the helper's output could not be read")
        return read[0]

    def close(self) -> None:
        stop_helper(self._process)
        self._process = None


#: How far the retry after a helper that died nudges the mesh (``unwrap``'s ``nudge``).
_RETRY_NUDGE = 1e-4
#: How often :meth:`UnwrapBeside.result` calls its ``waiting`` while the helper works.
_WAITING_EVERY_S = 0.1


def start_helper() -> subprocess.Popen | None:
    """A helper interpreter for :class:`UnwrapBeside`, waiting for its call: started ahead
    of the mesh it will unwrap, its start-up (0.25-0.35 s of imports on a 2-core CPU) runs
    beside the stage that makes the mesh, not while the uv stage waits for it. None when
    no process can be started here (the unwrap then runs in this process)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import _unwrap_child; _unwrap_child()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
    except OSError as exc:  # no processes to be had here
        log.info("unwrapping in this process (no helper process: %s)", exc)
        return None


def stop_helper(process: subprocess.Popen | None) -> None:
    """Stop a helper, whether it is waiting for its call, working, or done."""
    if process is None:
        return
    if process.poll() is None:
        process.kill()
    process.wait(timeout=5)
    for pipe in (process.stdin, process.stdout):
        with contextlib.suppress(OSError):
            pipe.close()


def _feed(pipe, data: bytes) -> None:
    """Write the call to the helper (the pipe itself: ``close`` may drop the process meanwhile)."""
    with contextlib.suppress(OSError, ValueError):  # the helper is gone: result() says so
        pipe.write(data)
        pipe.close()


def _drain(pipe, into: list[bytes]) -> None:
    """Read ``pipe`` to its end into ``into`` (nothing if it was closed meanwhile)."""
    with contextlib.suppress(OSError, ValueError):
        into.append(pipe.read())


def _unwrap_child() -> None:
    """The helper's side of :class:`UnwrapBeside`: one call in on stdin, its outcome out on stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the pickle
    call, options, normals = pickle.loads(sys.stdin.buffer.read())
    try:
        uv = unwrap(*call, **options)
        size = call[2]  # unwrap's texture_size
        texels = None if normals is None else texel_surface(uv.vertices, uv.faces, uv.uvs, normals[uv.source], size)
        outcome: object = (uv, texels)
    except Exception as exc:  # noqa: BLE001 - raised again in the parent
        outcome = exc
    out.write(pickle.dumps(outcome, protocol=5))
    out.close()
