"""The UV unwrap in a helper process: the same UVs as in-process, and always UVs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import trimesh

from blend123.backend.reconstruction import uv
from blend123.backend.reconstruction.texels import texel_surface
from blend123.backend.reconstruction.uv import UnwrapBeside, unwrap


def _mesh(subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(sphere.vertices), np.asarray(sphere.faces)


def _same(a: uv.UVMesh, b: uv.UVMesh) -> None:
    for name in ("vertices", "faces", "uvs", "source"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_the_helper_returns_exactly_what_unwrap_returns():
    vertices, faces = _mesh()
    beside = UnwrapBeside(vertices, faces, 256, 4, 0.01)
    assert beside.pid is not None and beside.pid != os.getpid()  # really another process
    _same(beside.result(), unwrap(vertices, faces, 256, 4, 0.01))
    assert beside.pid is None  # collected and gone


def test_given_normals_the_helper_lays_out_the_texels_too():
    vertices, faces = _mesh()
    normals = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    beside = UnwrapBeside(vertices, faces, 256, 4, 0.01, normals=normals)
    uvs = beside.result()
    here = texel_surface(uvs.vertices, uvs.faces, uvs.uvs, normals[uvs.source], 256)
    assert beside.texels is not None and len(here.rows) > 0.3 * 256 * 256  # the atlas's texels
    for name in ("rows", "cols", "positions", "normals"):
        np.testing.assert_array_equal(getattr(beside.texels, name), getattr(here, name))
    plain = UnwrapBeside(vertices, faces, 256, 4, 0.01)
    plain.result()
    assert plain.texels is None  # without normals: UVs only


def test_a_killed_helper_still_gives_uvs():
    # Another helper unwraps the mesh, nudged (the first may have died of the mesh itself).
    vertices, faces = _mesh()
    beside = UnwrapBeside(vertices, faces, 256, 4, 0.01, normals=vertices)
    os.kill(beside.pid, signal.SIGKILL)
    got = beside.result()
    _same(got, unwrap(vertices, faces, 256, 4, 0.01, nudge=uv._RETRY_NUDGE))
    here = texel_surface(got.vertices, got.faces, got.uvs, vertices[got.source], 256)
    np.testing.assert_array_equal(beside.texels.rows, here.rows)  # laid out by the second


def test_a_mesh_that_crashes_xatlas_is_unwrapped_nudged_and_the_caller_lives(monkeypatch, caplog):
    # xatlas (0.0.11) crashes the process on a regular sphere of 82k faces, every time: in a
    # helper that takes only the helper, and a second, nudging the mesh below a texel, unwraps it.
    vertices, faces = _mesh(6)
    with caplog.at_level("WARNING"):
        got = UnwrapBeside(vertices, faces, 512, 4, 0.01).result()
    assert "without a result" in caplog.text
    assert len(got.faces) == len(faces) and got.uvs.min() >= 0 and got.uvs.max() <= 1
    np.testing.assert_array_equal(got.vertices, vertices[got.source])  # the UVs are for the vertices as given
    # Crashing again (no nudge this time): a clear error, not the unwrap in this process.
    monkeypatch.setattr(uv, "_RETRY_NUDGE", 0.0)
    with pytest.raises(uv.UnwrapFailed, match="crashed twice") as failed:
        UnwrapBeside(vertices, faces, 512, 4, 0.01).result()
    assert "--max-faces" in failed.value.hint and "Mesh detail" in failed.value.hint


def test_a_helper_started_ahead_waits_for_its_mesh():
    vertices, faces = _mesh()
    helper = uv.start_helper()
    time.sleep(0.5)  # its interpreter is up and waiting on its stdin
    assert helper.poll() is None
    beside = UnwrapBeside(vertices, faces, 256, 4, 0.01, helper=helper)
    assert beside.pid == helper.pid  # that one, not a new one
    _same(beside.result(), unwrap(vertices, faces, 256, 4, 0.01))
    # One that died while it waited is replaced; one not wanted after all is stopped.
    dead = uv.start_helper()
    dead.kill()
    dead.wait()
    beside = UnwrapBeside(vertices, faces, 256, 4, 0.01, helper=dead)
    assert beside.pid not in (None, dead.pid)
    _same(beside.result(), unwrap(vertices, faces, 256, 4, 0.01))
    idle = uv.start_helper()
    uv.stop_helper(idle)
    with pytest.raises(ProcessLookupError):  # reaped: nothing left of it
        os.kill(idle.pid, 0)


def test_no_helper_process_to_be_had_unwraps_here(monkeypatch):
    monkeypatch.setattr(sys, "executable", os.path.join(os.sep, "no", "such", "python"))
    vertices, faces = _mesh(2)
    beside = UnwrapBeside(vertices, faces, 128, 2, 0.0)
    assert beside.pid is None
    _same(beside.result(), unwrap(vertices, faces, 128, 2, 0.0))


def test_close_stops_a_running_helper():
    vertices, faces = _mesh(6)  # 80k faces: seconds of work
    beside = UnwrapBeside(vertices, faces, 1024, 4, 0.01)
    pid = beside.pid
    time.sleep(0.2)
    beside.close()
    assert beside.pid is None
    with pytest.raises(ProcessLookupError):  # reaped: nothing left of it
        os.kill(pid, 0)


def test_waiting_for_the_helper_can_be_cut_short():
    # While the helper works, ``waiting`` is called (a job's progress call); what it raises
    # (a cancel) stops the helper at once instead of after the unwrap.
    vertices, faces = _mesh(6)  # 80k faces: seconds of work
    beside = UnwrapBeside(vertices, faces, 1024, 4, 0.01)
    pid, calls = beside.pid, []

    def waiting() -> None:
        calls.append(time.perf_counter())
        if len(calls) == 3:
            raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        beside.result(waiting=waiting)
    assert len(calls) == 3 and time.perf_counter() - start < 1.0
    assert beside.pid is None
    with pytest.raises(ProcessLookupError):  # reaped: nothing left of it
        os.kill(pid, 0)
    # Left alone, it is called all along and the UVs are the same.
    calls.clear()
    small = _mesh(5)
    _same(UnwrapBeside(*small, 1024, 4, 0.01).result(waiting=lambda: calls.append(1)), unwrap(*small, 1024, 4, 0.01))
    assert calls


def test_the_helper_does_not_run_the_callers_main_module(tmp_path):
    # A script without a __main__ guard must not run twice (multiprocessing's spawn would).
    script = tmp_path / "unguarded.py"
    marker = tmp_path / "runs.txt"
    script.write_text(
        "import trimesh\n"
        "from blend123.backend.reconstruction.uv import UnwrapBeside\n"
        f"open({str(marker)!r}, 'a').write('run\\n')\n"
        "s = trimesh.creation.icosphere(subdivisions=2)\n"
        "UnwrapBeside(s.vertices, s.faces, 128, 2, 0.0).result()\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert marker.read_text() == "run\n"


def test_a_reconstruction_cancelled_during_the_fit_leaves_no_helper(monkeypatch):
    import contextlib
    import dataclasses

    import psutil

    from blend123.backend.progress import JobCancelled
    from blend123.backend.reconstruction import pipeline

    from .recon_fixtures import LIT_OPTIONS, lit_scene

    helpers: list[int] = []

    def progress(stage: str, fraction: float) -> None:
        if stage == "refine" and fraction > 0.1:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    if "_unwrap_child" in " ".join(child.cmdline()):
                        helpers.append(child.pid)
            raise JobCancelled()

    s = lit_scene()
    options = dataclasses.replace(LIT_OPTIONS, threads=2)  # two CPUs: the unwrap goes beside the fit
    with pytest.raises(JobCancelled):
        pipeline.reconstruct(s.images, s.c2w, s.camera_angle_x, options, progress)
    assert helpers, "the unwrap did not run in a helper process"
    assert not [pid for pid in helpers if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_texels_laid_out_by_the_helper_make_the_same_texture(monkeypatch):
    import dataclasses

    from blend123.backend.reconstruction import pipeline

    from .recon_fixtures import LIT_OPTIONS, lit_scene

    s = lit_scene()
    laid_out: list[bool] = []
    real_ends = pipeline._texture_ends
    monkeypatch.setattr(pipeline, "_texture_ends", lambda texels_here, workers: laid_out.append(texels_here) or real_ends(texels_here, workers))
    # One CPU: the unwrap after the fit, the bake laying out its texels; two: beside the fit,
    # the helper laying them out too.
    for light_model in (False, True):
        options = dataclasses.replace(LIT_OPTIONS, light_model=light_model)
        here = pipeline.reconstruct(s.images, s.c2w, s.camera_angle_x, dataclasses.replace(options, threads=1))
        beside = pipeline.reconstruct(s.images, s.c2w, s.camera_angle_x, dataclasses.replace(options, threads=2))
        np.testing.assert_array_equal(here.uvs, beside.uvs)
        differ = np.abs(here.texture.astype(int) - beside.texture)
        # Without the light model the same texture to the bit. With it, the fit's float sums,
        # split over one thread or two, move the fitted light by its last bits and the de-lit
        # texture by one level in up to a third of the texels (how many follows the geometry:
        # 2-30% on this scene): never more than one.
        assert differ.max() <= (1 if light_model else 0), (light_model, differ.max(), (differ > 0).mean())
    assert laid_out == [True, False, True, False]  # in the stage, then by the helper, each time


def test_the_unwrap_after_the_fit_runs_in_a_helper_too_and_a_cancel_stops_it(monkeypatch):
    # On one CPU the unwrap waits for the fit; xatlas in the job's own process would hold
    # the GIL (the server's thread answers no ping meanwhile): a helper makes it, and a
    # cancel while the job waits for it stops it.
    import contextlib
    import dataclasses

    import psutil

    from blend123.backend.progress import JobCancelled
    from blend123.backend.reconstruction import pipeline

    from .recon_fixtures import LIT_OPTIONS, lit_scene

    helpers: list[int] = []
    seen: list[str] = []

    def progress(stage: str, fraction: float) -> None:
        seen.append(stage)
        if stage == "refine":
            assert not helper_pids()  # none beside the fit on one CPU
        if stage == "uv" and not helpers:
            helpers.extend(helper_pids())
            if helpers:
                raise JobCancelled()

    def helper_pids() -> list[int]:
        pids = []
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if "_unwrap_child" in " ".join(child.cmdline()):
                    pids.append(child.pid)
        return pids

    s = lit_scene()
    options = dataclasses.replace(LIT_OPTIONS, threads=1)
    with pytest.raises(JobCancelled):
        pipeline.reconstruct(s.images, s.c2w, s.camera_angle_x, options, progress)
    assert helpers, "the unwrap after the fit did not run in a helper process"
    assert seen[-1] == "uv" and "texture" not in seen
    assert not [pid for pid in helpers if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
