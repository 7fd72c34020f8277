"""The `blend123` command line, run as a user would: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from .conftest import EXAMPLES


def blend123(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blend123.backend.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _load_glb(path: Path) -> trimesh.Trimesh:
    scene = trimesh.load(path)
    (mesh,) = scene.geometry.values()
    return mesh


def test_convert_writes_a_textured_uv_mapped_glb(tmp_path):
    out = tmp_path / "duck.glb"
    result = blend123("convert", EXAMPLES / "duck.png", "-o", out, "--texture-size", "256", "--max-faces", "4000", "--quiet")
    assert result.returncode == 0, result.stderr
    mesh = _load_glb(out)
    assert 100 < len(mesh.faces) <= 4000
    assert mesh.visual.uv.shape == (len(mesh.vertices), 2)
    assert mesh.visual.material.baseColorTexture.size == (256, 256)
    # glTF is Y-up: the duck is wider (X) than it is tall (glTF Y), as in the picture.
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert extent[0] > extent[1] > 0.2


def test_views_then_orbit_then_reconstruct_on_real_files(tmp_path):
    views = tmp_path / "views"
    result = blend123("views", EXAMPLES / "mug.png", "--azimuth", "90", "-90", "--elevation", "15", "-o", views)
    assert result.returncode == 0, result.stderr
    transforms = json.loads((views / "transforms.json").read_text())
    assert [f["file_path"] for f in transforms["frames"]] == ["view_000.png", "view_001.png"]
    c2w = np.array(transforms["frames"][0]["transform_matrix"])
    assert c2w[0, 3] > 1.5  # +90: the camera moved to +X
    assert Image.open(views / "view_000.png").mode == "RGBA"

    orbit = tmp_path / "orbit"
    assert blend123("orbit", EXAMPLES / "mug.png", "-o", orbit, "--resolution", "128", "--quiet").returncode == 0
    assert len(list(orbit.glob("view_*.png"))) == 21
    out = tmp_path / "mug.glb"
    result = blend123("reconstruct", orbit / "transforms.json", "-o", out, "--texture-size", "128", "--max-faces", "3000", "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(_load_glb(out).faces) <= 3000


def test_commands_against_a_running_server(serve_process, tmp_path):
    backend = serve_process()
    result = blend123("views", EXAMPLES / "duck.png", "--azimuth", "45", "-o", tmp_path / "v", "--server", backend.address, "--quiet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "v" / "view_000.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["views", "no/such/image.png", "--azimuth", "90", "-o", "{tmp}/x"], "no/such/image.png"),
        (["reconstruct", "no/such/transforms.json", "-o", "{tmp}/x.glb"], "transforms.json"),
        (["views", "{examples}/duck.png", "--azimuth", "90", "-o", "{tmp}/x", "--model", "sv3d-nope"], "unknown model"),
        (["views", "{examples}/duck.png", "--azimuth", "90", "-o", "{tmp}/x", "--server", "tcp://127.0.0.1:9"], "nothing is listening"),
    ],
)
def test_errors_are_clear_and_exit_non_zero(args, message, tmp_path):
    args = [a.replace("{examples}", str(EXAMPLES)).replace("{tmp}", str(tmp_path)) for a in args]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    result = blend123(*args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.glb").exists()  # a refused job leaves nothing behind
    result = blend123("views", broken, "--azimuth", "0", "-o", tmp_path / "y")
    assert result.returncode != 0 and "fix:" in result.stderr and "Traceback" not in result.stderr


def test_doctor_and_keys(tmp_path):
    doctor = blend123("doctor", "--bind", "tcp://127.0.0.1:0")
    assert "model default" in doctor.stdout and "device" in doctor.stdout
    keys = blend123("keys", "server", tmp_path)
    assert keys.returncode == 0
    assert (tmp_path / "server.key").is_file() and (tmp_path / "server.key_secret").stat().st_mode & 0o077 == 0
