"""Every user mistake on the command line: a message and a fix within seconds, no traceback.

Run in-process through ``cli.main`` (the modules are already loaded, as they would be in a
warm shell), so the time measured is the command's own, not Python's start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from blend123.backend import cli
from blend123.backend.server.security import generate_keys

from .conftest import EXAMPLES, free_port

DUCK = EXAMPLES / "duck.png"


# The target is 2 s; the bound leaves room for a busy machine. What it guards
# against is the old behaviour: a 30 s wait ending in the wrong advice.
LIMIT_S = 5.0


@pytest.fixture(scope="module", autouse=True)
def warm_modules():
    """Load what a warm command line has loaded (torch, the reconstruction), once."""
    import blend123.backend.reconstruction.pipeline  # noqa: F401
    import blend123.backend.server.app  # noqa: F401


def run(capsys, *argv: object) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse refuses malformed values itself
        code = exit_.code
    err = capsys.readouterr().err
    return code, err, time.monotonic() - started


def _one_frame_transforms(tmp_path: Path) -> Path:
    import shutil

    shutil.copy(DUCK, tmp_path / "f0.png")
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps({"camera_angle_x": 0.6, "frames": [{"file_path": "f0.png", "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]}]}))
    return path


MISTAKES = {
    "elevation out of range": (lambda t: ["views", DUCK, "--azimuth", "90", "--elevation", "200", "-o", t / "v"], "elevation"),
    "resolution zero": (lambda t: ["views", DUCK, "--azimuth", "90", "--resolution", "0", "-o", t / "v"], "resolution"),
    "fov 200": (lambda t: ["views", DUCK, "--azimuth", "90", "--fov", "200", "-o", t / "v"], "fov"),
    "orbit of no views": (lambda t: ["orbit", DUCK, "--views", "0", "-o", t / "o"], "views"),
    "max faces zero": (lambda t: ["convert", DUCK, "--max-faces", "0", "-o", t / "a.glb"], "max"),
    "one-frame transforms.json": (lambda t: ["reconstruct", _one_frame_transforms(t), "-o", t / "a.glb"], "views"),
    "output is a folder": (lambda t: ["convert", DUCK, "-o", t], "is a folder"),
    "output not a glb": (lambda t: ["convert", DUCK, "-o", t / "a.obj"], ".glb"),
    "output in a read-only folder": (lambda t: ["convert", DUCK, "-o", _read_only(t) / "a.glb"], "cannot write"),
    "views folder is a file": (lambda t: ["views", DUCK, "--azimuth", "90", "-o", DUCK], "not a folder"),
    "address without tcp://": (lambda t: ["views", DUCK, "--azimuth", "90", "-o", t / "v", "--server", "localhost:5123"], "tcp://"),
    "address without a port": (lambda t: ["views", DUCK, "--azimuth", "90", "-o", t / "v", "--server", "tcp://[::1]"], "host and port"),
    "garbage key file": (lambda t: ["views", DUCK, "--azimuth", "90", "-o", t / "v", "--server", "tcp://127.0.0.1:5123", "--client-key", _garbage(t), "--server-key", _garbage(t)], "key"),
    "missing image": (lambda t: ["views", t / "nope.png", "--azimuth", "90", "-o", t / "v"], "nope.png"),
    "serve on a malformed endpoint": (lambda t: ["serve", "--bind", "localhost:5123", "--jobs-dir", t / "jobs"], "tcp://"),
}


def _read_only(tmp_path: Path) -> Path:
    """A folder nobody can write to: mode 0500, or for root (who ignores modes) a read-only mount."""
    folder = tmp_path / "locked"
    folder.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"root writes into any folder and cannot mount a read-only one here: {made.stderr.decode().strip()[:80]}")
        _MOUNTED.append(folder)
    else:
        folder.chmod(0o500)
    return folder


_MOUNTED: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while _MOUNTED:
        subprocess.run(["umount", "-l", str(_MOUNTED.pop())], capture_output=True)


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.key_secret"
    path.write_text("this is not a key\n")
    return path


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_user_mistake_exits_at_once_with_a_message_and_no_traceback(name, tmp_path, capsys):
    argv, words = MISTAKES[name]
    code, err, seconds = run(capsys, *argv(tmp_path))
    assert code == 2, err
    assert "Traceback" not in err
    assert words.lower() in err.lower(), err
    assert seconds < LIMIT_S, f"{name} took {seconds:.1f} s"


def test_a_second_serve_on_a_busy_port_says_so(tmp_path, capsys, serve_process):
    backend = serve_process()
    code, err, _ = run(capsys, "serve", "--bind", backend.address, "--jobs-dir", tmp_path / "other")
    assert code == 2 and "already in use" in err and "Traceback" not in err


def test_a_second_serve_on_the_same_jobs_folder_says_so(tmp_path, capsys, serve_process):
    backend = serve_process()
    jobs = tmp_path / "served0"  # the folder serve_process gave the first one
    code, err, _ = run(capsys, "serve", "--bind", f"tcp://127.0.0.1:{free_port()}", "--jobs-dir", jobs)
    assert code == 2 and "already uses the jobs folder" in err, err
    assert backend.proc.poll() is None


def test_keys_refuse_to_overwrite_without_force(tmp_path, capsys):
    generate_keys(tmp_path, "server")
    code, err, _ = run(capsys, "keys", "server", tmp_path)
    assert code == 2 and "--force" in err
