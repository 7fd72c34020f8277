"""The quality benchmark's metrics and camera paths (fast, no Blender)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from benchmarks import bench_quality
from benchmarks.quality import metrics, poses
from benchmarks.quality.dataset import EvalObject, ViewSet
from blend123.protocol.camera import DEFAULT_FOV_DEG, SphericalPose, world_azimuth

FAST = dict(samples=20_000, iou_resolution=64)


def box(extents=(0.6, 0.4, 0.3), offset=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.box(extents=extents)
    return mesh.vertices + np.asarray(offset), mesh.faces


def sphere(radius=0.4, offset=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return mesh.vertices + np.asarray(offset), mesh.faces


# --- geometry ---------------------------------------------------------------------------------


def test_identical_meshes_score_perfectly():
    v, f = sphere()
    scores = metrics.geometry_scores(v, f, v, f, **FAST)
    assert scores.f1.f == 1.0 and scores.f2.f == 1.0
    assert scores.volume_iou == 1.0
    assert scores.chamfer_l1 == 0.0
    assert scores.diagonal == pytest.approx(math.sqrt(3) * 0.8, rel=0.01)


def test_shifted_mesh_scores_worse_the_further_it_moves():
    v, f = box()
    near = metrics.geometry_scores(v + [0.01, 0, 0], f, v, f, **FAST)
    far = metrics.geometry_scores(v + [0.05, 0, 0], f, v, f, **FAST)
    assert 1.0 > near.volume_iou > far.volume_iou
    # Shifting a 0.6-wide box by d along x leaves an overlap of (0.6 - d) / (0.6 + d).
    assert far.volume_iou == pytest.approx(0.55 / 0.65, abs=0.03)
    assert 0 < near.chamfer_l1 < far.chamfer_l1 < 0.05
    assert far.f1.f < near.f1.f < 1.0
    assert far.f2.f < near.f2.f


def test_scaled_mesh_volume_iou_is_the_volume_ratio():
    v, f = sphere(0.4)
    scores = metrics.geometry_scores(v * 1.05, f, v, f, **FAST)
    assert scores.volume_iou == pytest.approx(1 / 1.05**3, abs=0.02)
    # The surface moved by 0.02: between 1% (0.014) and 2% (0.028) of the diagonal.
    assert scores.f1.f < 0.05 and scores.f2.f > 0.95
    assert scores.chamfer_l1 == pytest.approx(0.02, rel=0.15)


def test_occupancy_leaves_cavities_and_holes_empty():
    outer_v, outer_f = box((0.8, 0.8, 0.8))
    inner_v, inner_f = box((0.4, 0.4, 0.4))
    # A hollow box: the inner wall faces inward (reversed winding); parity needs no winding.
    v = np.concatenate([outer_v, inner_v])
    f = np.concatenate([outer_f, inner_f[:, ::-1] + len(outer_v)])
    grid = metrics.VoxelGrid.around(v, 40)
    inside = metrics.occupancy(v, f, grid)
    volume = inside.sum() * grid.spacing**3
    assert volume == pytest.approx(0.8**3 - 0.4**3, rel=0.06)
    centre = np.round((np.zeros(3) - grid.origin) / grid.spacing).astype(int)
    assert not inside[tuple(centre)]

    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1)
    grid = metrics.VoxelGrid.around(torus.vertices, 48)
    inside = metrics.occupancy(torus.vertices, torus.faces, grid)
    assert inside.sum() * grid.spacing**3 == pytest.approx(torus.volume, rel=0.08)
    centre = np.round((np.zeros(3) - grid.origin) / grid.spacing).astype(int)
    assert not inside[tuple(centre)]  # the hole


def test_volume_iou_of_disjoint_meshes_is_zero():
    a = box(offset=(-1.0, 0, 0))
    b = box(offset=(1.0, 0, 0))
    assert metrics.volume_iou(*a, *b, resolution=48) == 0.0


# --- images -------------------------------------------------------------------------------------


def test_psnr_of_identical_images_is_capped_and_known_errors_are_exact():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3))
    assert metrics.psnr(a, a) == metrics.PSNR_CAP_DB
    assert metrics.psnr(np.zeros((8, 8, 3)), np.full((8, 8, 3), 0.1)) == pytest.approx(20.0)
    mask = np.zeros((8, 8), bool)
    mask[:2] = True
    b = np.zeros((8, 8, 3))
    b[2:] = 1.0  # errors only outside the mask
    assert metrics.psnr(np.zeros((8, 8, 3)), b, mask) == metrics.PSNR_CAP_DB


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    rng = np.random.default_rng(1)
    a = np.clip(rng.random((48, 48, 3)) * 0.2 + np.linspace(0, 0.8, 48)[None, :, None], 0, 1)
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(a, noisy) < 0.9


def test_composite_puts_transparent_pixels_on_the_background():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (255, 0, 0, 0)
    out = metrics.composite(rgba)
    assert np.allclose(out[0, 0], (1, 0, 0)) and np.allclose(out[0, 1], (1, 1, 1))


# --- albedo -------------------------------------------------------------------------------------


def _albedo_truth(size=32, seed=2):
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size, 4), np.uint8)
    truth[..., :3] = rng.integers(40, 230, (size, size, 3))
    truth[4:-4, 4:-4, 3] = 255
    return truth


def test_albedo_error_ignores_one_global_scale():
    truth = _albedo_truth()
    linear = metrics.srgb_to_linear(truth[..., :3] / 255.0)
    darker = metrics.linear_to_srgb(0.4 * linear)  # the same albedo under dimmer light
    coverage = np.ones(truth.shape[:2])
    scores = metrics.albedo_error([darker], [coverage], [truth])
    assert scores.mae < 1e-6
    assert scores.scale == pytest.approx(2.5, rel=1e-6)
    assert scores.pixels == 24 * 24  # only where the truth is opaque


def test_albedo_error_sees_shading_left_in_the_albedo():
    truth = _albedo_truth()
    linear = metrics.srgb_to_linear(truth[..., :3] / 255.0)
    shading = np.linspace(0.3, 1.0, truth.shape[1])[None, :, None]
    baked = metrics.linear_to_srgb(linear * shading)
    coverage = np.ones(truth.shape[:2])
    half = metrics.linear_to_srgb(linear * (0.65 + 0.5 * (shading - 0.65)))  # half the variation
    baked_scores = metrics.albedo_error([baked], [coverage], [truth])
    half_scores = metrics.albedo_error([half], [coverage], [truth])
    assert baked_scores.mae > half_scores.mae > 0.01
    assert baked_scores.psnr < half_scores.psnr


def test_albedo_error_skips_partly_covered_pixels():
    truth = _albedo_truth()
    prediction = np.zeros(truth.shape[:2] + (3,))  # black: wrong wherever it counts
    coverage = np.zeros(truth.shape[:2])
    coverage[10:12, 10:12] = 1.0
    scores = metrics.albedo_error([prediction], [coverage], [truth])
    assert scores.pixels == 4


# --- rendering a reconstruction -------------------------------------------------------------------


def _textured_box(colour=(200, 100, 50)):
    v, f = box((0.5, 0.5, 0.5))
    texture = np.zeros((8, 8, 4), np.uint8)
    texture[..., :3] = colour
    texture[..., 3] = 255
    uvs = np.full((len(v), 2), 0.5)
    return metrics.TexturedMesh(v, f, uvs, texture)


def test_render_view_covers_the_object_with_its_texture():
    mesh = _textured_box()
    c2w = SphericalPose(20.0, world_azimuth(30.0)).to_c2w()
    view = metrics.render_view(mesh, c2w, math.radians(DEFAULT_FOV_DEG), 64)
    full = view.coverage == 1.0
    assert full.sum() > 200 and (view.coverage == 0).sum() > 1000
    assert np.allclose(view.straight_albedo()[full], np.array([200, 100, 50]) / 255.0, atol=1e-6)
    assert np.allclose(view.colour, view.albedo)  # no light model: appearance = texture
    edges = (view.coverage > 0) & (view.coverage < 1)
    assert edges.any()  # supersampling anti-aliases the silhouette


def test_sg_irradiance_matches_the_integral_of_the_lobe_product():
    # Fibonacci sphere quadrature of <G_light, G_cos(n)> for one lobe.
    k = 200_000
    i = np.arange(k) + 0.5
    z = 1 - 2 * i / k
    phi = math.pi * (1 + 5**0.5) * i
    x = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], 1)
    axis, s, a = np.array([0.0, 0.6, 0.8]), 5.0, 0.7
    n = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    s_cos, a_cos = metrics.COSINE_LOBE
    integrand = a * np.exp(s * (x @ axis - 1)) * a_cos * np.exp(s_cos * (x @ n.T - 1)).T
    expected = integrand.mean(1) * 4 * math.pi
    light = {"axes": axis[None], "sharpness": [s], "amplitudes": [a]}
    got = metrics.sg_irradiance(n, light)
    assert got.shape == (2, 3)
    assert np.allclose(got[:, 0], expected, rtol=1e-3)
    assert got[0, 0] > got[1, 0]  # the normal facing the lobe receives more


def test_light_model_shades_the_rendered_appearance_only():
    mesh = _textured_box((100, 100, 100))
    mesh.light = {"axes": [[0.0, 0.0, 1.0]], "sharpness": [3.0], "amplitudes": [[0.5, 0.5, 0.5]]}
    c2w = SphericalPose(30.0, world_azimuth(20.0)).to_c2w()
    view = metrics.render_view(mesh, c2w, math.radians(DEFAULT_FOV_DEG), 64, supersample=1)
    full = view.coverage == 1.0
    assert np.allclose(view.straight_albedo()[full], 100 / 255.0)
    shaded = view.colour[full][:, 0]
    assert shaded.max() > shaded.min() + 0.02  # the top is lit more than the sides
    with pytest.raises(ValueError, match="axes"):
        metrics.sg_light({"directions": [[0, 0, 1]]})


# --- camera paths -------------------------------------------------------------------------------


def test_dynamic_orbit_and_heldout_views():
    seed = poses.object_seed("mug")
    orbit = poses.dynamic_orbit(seed)
    assert len(orbit) == 21
    elevations = np.array([v.pose.elevation_deg for v in orbit])
    assert elevations.min() >= -10 and elevations.max() <= 40
    assert elevations.max() - elevations.min() > 20  # a dynamic orbit, not a flat ring
    assert orbit[-1].relative_azimuth_deg == 0.0  # ends at the input view
    assert orbit[-1].pose.azimuth_deg == world_azimuth(0.0)
    assert poses.dynamic_orbit(seed) == orbit  # deterministic
    assert poses.dynamic_orbit(poses.object_seed("bowl")) != orbit
    held = poses.heldout_views(seed)
    for view in held:
        azimuth_gap = [abs((view.relative_azimuth_deg - o.relative_azimuth_deg + 180) % 360 - 180) for o in orbit]
        elevation_gap = [abs(view.pose.elevation_deg - o.pose.elevation_deg) for o in orbit]
        assert min(np.add(azimuth_gap, elevation_gap)) > 2.0  # never an input pose


# --- the benchmark driver -----------------------------------------------------------------------


def _cube_object(albedo_rgb, size=48) -> EvalObject:
    """A cube with a uniform albedo, 'rendered' unlit by the rasteriser: views = albedo."""
    mesh = _textured_box(albedo_rgb)
    angle = math.radians(DEFAULT_FOV_DEG)

    def views(pairs):
        c2w = np.stack([SphericalPose(e, world_azimuth(a)).to_c2w() for e, a in pairs])
        images = []
        for m in c2w:
            view = metrics.render_view(mesh, m, angle, size, supersample=1)
            rgba = np.zeros((size, size, 4), np.uint8)
            rgba[..., :3] = np.rint(view.straight_albedo() * 255 * (view.coverage[..., None] > 0))
            rgba[..., 3] = np.rint(view.coverage * 255)
            images.append(rgba)
        images = np.stack(images)
        return ViewSet(images, images.copy(), c2w, angle)

    return EvalObject("cube", views([(10, 0), (30, 120), (0, 240)]), views([(20, 60)]), mesh.vertices, mesh.faces, {})


def test_light_model_comparison_runs_the_pipeline_twice(monkeypatch):
    @dataclasses.dataclass
    class Options(bench_quality.ReconstructionOptions):
        light_model: bool = True

    monkeypatch.setattr(bench_quality, "ReconstructionOptions", Options)
    assert bench_quality.make_options("baseline", {}).light_model is False
    full = bench_quality.make_options("full", {"grid_resolution": "96", "light_model": "on"})
    assert full.light_model is True and full.grid_resolution == 96
    with pytest.raises(SystemExit, match="no such field"):
        bench_quality.make_options("full", {"grid_size": "96"})

    obj = _cube_object((180, 120, 60))
    truth = _textured_box((180, 120, 60))
    baked = truth.texture.copy()
    baked[:, :4, :3] = baked[:, :4, :3] // 3  # shading painted into half the texture
    uvs = np.where(truth.vertices[:, :1] < 0, 0.2, 0.8) * np.ones((1, 2))
    calls = []

    def fake_reconstruct(images, c2w, camera_angle_x, options):
        calls.append(options.light_model)
        texture = truth.texture if options.light_model else baked
        return SimpleNamespace(
            vertices=truth.vertices, faces=truth.faces, uvs=uvs, texture=texture, light=None, stage_seconds={}
        )

    monkeypatch.setattr(bench_quality, "reconstruct", fake_reconstruct)
    record = bench_quality.evaluate_object(obj, full, compare_baked=True, supersample=1)
    assert calls == [True, False]
    assert record["geometry"]["f2"] == 1.0 and record["geometry"]["volume_iou"] == 1.0
    assert record["albedo"]["mae"] < 0.01 < record["albedo_baked"]["mae"]
    assert record["albedo_cut"] > 0.9
    # The floor beside it: the hull of three views' masks holds the box and more (its corners
    # cut by three silhouettes only), so it scores below the true box the fake returned.
    assert 0.2 < record["hull"]["f1"] < 0.99 * record["geometry"]["f1"], record["hull"]
    table = bench_quality.markdown([record], bench_quality.mean_record([record]))
    assert "n/a" not in table.splitlines()[-1]


def test_without_a_baked_comparison_the_cut_is_not_applicable():
    # The baseline pipeline, or --no-compare: no light-model-off run, so no cut to report.
    record = {
        "object": "x",
        "geometry": {"chamfer_l1": 0.01, "f1": 0.8, "f2": 0.9, "volume_iou": 0.7},
        "appearance": {"psnr": 27.0, "ssim": 0.9, "psnr_object": 20.0},
        "albedo": {"mae": 0.1, "psnr": 18.0},
        "views_as_albedo": {"mae": 0.12, "psnr": 17.0},
        "given_views_as_albedo": {"mae": 0.13, "psnr": 16.5},
        "hull": {"f1": 0.7, "f2": 0.85},
        "albedo_baked": None,
        "albedo_cut": None,
        "reconstruct_seconds": 1.0,
    }
    mean = bench_quality.mean_record([record])
    assert mean["albedo_cut"] is None
    assert bench_quality.markdown([record], mean).splitlines()[-1].count("n/a") == 2
    assert any("n/a" in line for line in bench_quality.target_lines(mean))


def test_sg_irradiance_reads_the_pipelines_lobe_json_with_ambient():
    rng = np.random.default_rng(3)
    axes = rng.normal(size=(4, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    flat = {"axes": axes, "sharpness": [3.0] * 4, "amplitudes": [0.5, 1.0, 0.2, 0.7]}
    lobes = {
        "ambient": [0.1, 0.1, 0.1],
        "lobes": [{"axis": a.tolist(), "sharpness": 3.0, "amplitude": [v * math.pi] * 3} for a, v in zip(axes, flat["amplitudes"])],
    }
    normals = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(metrics.sg_irradiance(normals, lobes), metrics.sg_irradiance(normals, flat) + 0.1)


def test_hull_lines_name_the_objects_below_each_floor():
    def record(name: str, f1: float, hull: float) -> dict:
        return {"object": name, "geometry": {"f1": f1}, "hull": {"f1": hull}}

    clean = [record("arch", 0.89, 0.85), record("mug", 0.62, 0.61)]
    degraded = [record("arch", 0.87, 0.89), record("mug", 0.60, 0.59)]
    lines = bench_quality.hull_lines(clean, degraded)
    assert lines[0].endswith(": none (target: none): pass")
    assert bench_quality.hull_lines([record("arch", 0.80, 0.85)], [])[0].endswith("FAIL")
    assert "arch (0.870 < 0.890)" in lines[1] and "mug" not in lines[1]
    assert "mug (0.600 < 0.610)" in lines[2] and "arch" not in lines[2]
    assert bench_quality.hull_lines([], degraded) == [lines[1]]
