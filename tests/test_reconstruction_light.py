"""The 24-SG light: closed-form irradiance against numeric integration, JSON, environment map."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from .recon_fixtures import HAS_BPY

from blend123.backend.reconstruction.light import LOBES, SGLight, benchmark_view, fibonacci_axes


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _numeric_irradiance(light: SGLight, normal: np.ndarray, samples: int = 400) -> float:
    """E(n) = integral of L(w) max(0, n . w) over the hemisphere, by a midpoint rule."""
    # Hemisphere about n, in (theta, phi) with the solid-angle weight sin(theta).
    t = (np.arange(samples) + 0.5) / samples * (math.pi / 2)
    p = (np.arange(2 * samples) + 0.5) / (2 * samples) * (2 * math.pi)
    tt, pp = np.meshgrid(t, p, indexing="ij")
    a = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    w = (np.sin(tt) * np.cos(pp))[..., None] * a + (np.sin(tt) * np.sin(pp))[..., None] * b
    w = w + np.cos(tt)[..., None] * normal
    rad = light.radiance(torch.as_tensor(w, dtype=torch.float64).float()).double().numpy()
    d_area = (math.pi / 2 / samples) * (math.pi / samples)
    return float((rad * np.cos(tt) * np.sin(tt)).sum() * d_area)


def _single_lobe(index: int, sharpness: float = 6.0) -> SGLight:
    light = SGLight(sharpness=sharpness, amplitude=1.0)
    amps = torch.full((LOBES,), 1e-6)
    amps[index] = 2.0
    with torch.no_grad():
        light.raw_amplitude.copy_(amps + torch.log(-torch.expm1(-amps)))
    return light


@pytest.mark.parametrize("sharpness", [3.0, 6.0])
def test_irradiance_of_one_lobe_matches_numeric_integration(sharpness):
    light = _single_lobe(5, sharpness)
    axis = light.axes[5].numpy().astype(np.float64)
    perp = np.cross(axis, [1.0, 0.0, 0.0])
    perp /= np.linalg.norm(perp)
    peak = _numeric_irradiance(light, axis)
    for cos in (1.0, 0.7, 0.3, 0.0, -0.3, -0.8):
        n = cos * axis + math.sqrt(1 - cos * cos) * perp
        closed = float(light.irradiance(torch.as_tensor(n, dtype=torch.float32)))
        numeric = _numeric_irradiance(light, n, samples=200)
        # The clamped cosine as an SG is an approximation: close where the lobe faces the
        # surface; its tail past 90 deg adds a little light to surfaces facing away.
        tolerance = 0.04 if cos >= 0.3 else 0.07
        assert abs(closed - numeric) <= tolerance * peak, (cos, closed, numeric, peak)
    # And it is no constant: facing the lobe gets several times the light of facing away.
    assert float(light.irradiance(torch.as_tensor(axis, dtype=torch.float32))) > 4 * float(
        light.irradiance(torch.as_tensor(-axis, dtype=torch.float32))
    )


def test_uniform_light_gives_pi_times_radiance_irradiance():
    # A white furnace: radiance ~constant, so E = pi * L and the shading is ~L.
    light = SGLight(amplitude=1.0)
    normals = torch.as_tensor(fibonacci_axes(50), dtype=torch.float32)
    rad = light.radiance(normals)
    e = light.irradiance(normals)
    assert float(rad.std() / rad.mean()) < 0.1  # the lobes overlap into a smooth sky
    np.testing.assert_allclose(light.shading(normals).numpy(), rad.mean().item(), rtol=0.12)
    assert torch.allclose(e, math.pi * light.shading(normals))


def test_axes_are_unit_and_spread():
    axes = fibonacci_axes(LOBES)
    np.testing.assert_allclose(np.linalg.norm(axes, axis=1), 1.0, atol=1e-12)
    cos = axes @ axes.T - 2 * np.eye(LOBES)
    nearest = np.degrees(np.arccos(cos.max(1)))
    assert nearest.min() > 30 and nearest.max() < 60
    assert np.linalg.norm(axes.mean(0)) < 0.05


def test_json_round_trip_and_format():
    light = _single_lobe(3)
    doc = json.loads(json.dumps(light.to_json()))
    assert set(doc) == {"ambient", "lobes"} and len(doc["lobes"]) == LOBES
    assert set(doc["lobes"][0]) == {"axis", "sharpness", "amplitude"}
    assert all(lobe["amplitude"][0] == lobe["amplitude"][1] == lobe["amplitude"][2] for lobe in doc["lobes"])
    back = SGLight.from_json(doc)
    n = torch.as_tensor(fibonacci_axes(30), dtype=torch.float32)
    torch.testing.assert_close(back.irradiance(n), light.irradiance(n), rtol=1e-5, atol=1e-6)


def test_scale_multiplies_the_light():
    light = _single_lobe(7)
    n = torch.as_tensor(fibonacci_axes(30), dtype=torch.float32)
    before = light.irradiance(n)
    light.scale_(2.5)
    torch.testing.assert_close(light.irradiance(n), 2.5 * before, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sharpness", [6.0, 12.0])
def test_shading_read_off_the_table_is_the_closed_form(sharpness):
    # Every lobe at its own amplitude, so no symmetry hides a misread table; the normals
    # include both poles and both sides of the azimuth seam (+-pi), where a table wraps.
    light = SGLight(sharpness=sharpness)
    amps = torch.linspace(0.05, 3.0, LOBES)[torch.randperm(LOBES, generator=torch.Generator().manual_seed(3))]
    light.raw_amplitude.copy_(amps + torch.log(-torch.expm1(-amps)))
    n = np.random.default_rng(0).normal(size=(20_000, 3))
    seam = [[-1.0, 1e-9, 0.3], [-1.0, -1e-9, 0.3], [-1.0, 0.0, -0.5]]
    n = np.concatenate([n, [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1e-7, 0.0, 1.0]], seam])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    exact = light.shading(torch.as_tensor(n, dtype=torch.float32)).double().numpy()
    got = light.shading_at(n)
    assert got.shape == exact.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=0, atol=3e-4 * exact.max())


def test_benchmark_view_reproduces_the_shading():
    # benchmarks/quality/metrics.py renders texel * sum <G_k, G_cos> with its own code.
    light = _single_lobe(2)
    extra = benchmark_view(light.to_json())
    assert extra["space"] == "linear"
    axes, s, a = (np.asarray(extra[k], dtype=np.float64) for k in ("axes", "sharpness", "amplitudes"))
    n = fibonacci_axes(40)
    v = s[None, :, None] * axes[None] + 2.133 * n[:, None, :]
    d = np.linalg.norm(v, axis=-1)
    theirs = (2 * math.pi * 1.17 * np.exp(d - (s[None] + 2.133)) * (1 - np.exp(-2 * d)) / d) @ a
    np.testing.assert_allclose(theirs, light.shading(torch.as_tensor(n, dtype=torch.float32)).numpy(), rtol=1e-4)


def test_environment_image_layout():
    light = _single_lobe(0)  # fibonacci axis 0 is near the zenith
    env = light.environment_image(64, 32)
    assert env.shape == (32, 64, 3) and env.dtype == np.float32
    assert env[0].mean() > 10 * env[-1].mean()  # first row is the top
    # A lobe on +X lands at the image centre column, one on +Y a quarter to the left.
    for direction, column in (([1.0, 0.0, 0.0], 32), ([0.0, 1.0, 0.0], 16), ([-1.0, 0.0, 0.0], 0)):
        light.axes.copy_(torch.tensor([direction] * LOBES, dtype=torch.float32))
        env = light.environment_image(64, 32)
        peak_col = np.unravel_index(env[..., 0].argmax(), env.shape[:2])[1]
        assert min(abs(peak_col - column), 64 - abs(peak_col - column)) <= 1, (direction, peak_col)


_CYCLES_SCRIPT = """
import math, sys, bpy, numpy as np
env = np.load(sys.argv[1])
h, w = env.shape[:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
scene.cycles.device = "CPU"
scene.render.resolution_x = scene.render.resolution_y = 4
scene.view_settings.view_transform = "Standard"
image = bpy.data.images.new("env", w, h, float_buffer=True)
rgba = np.concatenate([env, np.ones((h, w, 1), np.float32)], -1)
image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())
world = bpy.data.worlds.new("w"); scene.world = world; world.use_nodes = True
nodes = world.node_tree.nodes
tex = nodes.new("ShaderNodeTexEnvironment"); tex.image = image; tex.interpolation = "Closest"
world.node_tree.links.new(tex.outputs["Color"], nodes["Background"].inputs["Color"])
cam_data = bpy.data.cameras.new("c"); cam_data.angle = math.radians(5)
cam = bpy.data.objects.new("c", cam_data); scene.collection.objects.link(cam); scene.camera = cam
out = []
for x, y, z in [(1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, -1, 0)]:
    # Point the camera's -Z along (x, y, z), level with the horizon.
    cam.rotation_euler = (math.pi / 2, 0.0, math.atan2(y, x) - math.pi / 2)
    scene.render.filepath = sys.argv[2]
    bpy.ops.render.render(write_still=False)
    viewer = bpy.data.images["Render Result"]
    path = sys.argv[2]
    viewer.save_render(path)
    img = bpy.data.images.load(path); px = np.array(img.pixels[:]).reshape(4, 4, -1)
    out.append(px[..., :3].mean((0, 1)).tolist())
    bpy.data.images.remove(img)
print("RESULT", out)
"""


@pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed")
def test_environment_image_matches_blender(tmp_path):
    # Four horizontal directions, each painted a distinct colour in the map.
    light = SGLight()
    dirs = {"+x": [1, 0, 0], "+y": [0, 1, 0], "-x": [-1, 0, 0], "-y": [0, -1, 0]}
    colours = {"+x": [1, 0, 0], "+y": [0, 1, 0], "-x": [0, 0, 1], "-y": [1, 0, 1]}
    env = np.zeros((32, 64, 3), np.float32)
    for key, d in dirs.items():
        light.axes.copy_(torch.tensor([d] * LOBES, dtype=torch.float32))
        single = light.environment_image(64, 32)[..., 0]
        env += (single / single.max())[..., None] ** 8 * np.asarray(colours[key], np.float32)
    np.save(tmp_path / "env.npy", env)
    proc = subprocess.run(
        [sys.executable, "-c", _CYCLES_SCRIPT, str(tmp_path / "env.npy"), str(tmp_path / "r.exr")],
        capture_output=True, text=True, timeout=240,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    seen = eval(lines[-1][len("RESULT") :])  # noqa: S307 - our own subprocess's list of floats
    for key, rgb in zip(dirs, seen):
        expected = np.asarray(colours[key], np.float64)
        cosine = np.dot(rgb, expected) / (np.linalg.norm(rgb) * np.linalg.norm(expected) + 1e-12)
        assert cosine > 0.95, (key, rgb)
