"""Differentiable refinement: barycentrics, gradients, light recovery and de-lit albedo."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from .recon_fixtures import LIT_OPTIONS, face_centroid_colours, known_light, lit_reconstructions, lit_scene, scene

from blend123.backend.progress import JobCancelled
from benchmarks.quality import synthetic
from blend123.backend.reconstruction.light import LOBES, fibonacci_axes
from blend123.backend.raster import rasterize
from blend123.backend.reconstruction.refine import (
    RefineOptions,
    _visible_pixels,
    barycentrics,
    refine,
    srgb_to_linear,
)
from blend123.protocol.camera import focal_px


def _pixels_of_view(view: int = 0, size: int = 64):
    s = scene(size)
    images = s.images[view : view + 1]
    c2w = s.c2w[view : view + 1]
    pixels = _visible_pixels(s.vertices, s.faces, images, c2w, s.camera_angle_x, 127, torch.device("cpu"))
    return s, pixels, c2w


def test_barycentrics_match_the_rasteriser():
    s, pixels, c2w = _pixels_of_view()
    frags = rasterize(c2w[0], s.camera_angle_x, 64, 64, s.vertices, s.faces)
    idx = torch.arange(len(pixels.view))
    w2c = torch.as_tensor(np.linalg.inv(c2w), dtype=torch.float32)
    verts = torch.as_tensor(s.vertices, dtype=torch.float32)
    bary = barycentrics(verts, torch.as_tensor(s.faces), pixels, idx, w2c, focal_px(s.camera_angle_x, 64), (64, 64))
    cols, rows = (pixels.xy.numpy() - 0.5).astype(int).T
    np.testing.assert_allclose(bary.numpy(), frags.bary[rows, cols], atol=2e-3)


def test_gradients_reach_only_the_vertices_of_seen_faces():
    s, pixels, c2w = _pixels_of_view()
    verts = torch.as_tensor(s.vertices, dtype=torch.float32).requires_grad_(True)
    faces = torch.as_tensor(s.faces)
    w2c = torch.as_tensor(np.linalg.inv(c2w), dtype=torch.float32)
    idx = torch.arange(len(pixels.view))
    bary = barycentrics(verts, faces, pixels, idx, w2c, focal_px(s.camera_angle_x, 64), (64, 64))
    # Interpolating a per-vertex value: moving a corner changes the pixel's weights.
    values = torch.as_tensor(np.random.default_rng(0).random(len(s.vertices)), dtype=torch.float32)
    (bary * values[faces[pixels.face]]).sum().backward()
    moved = verts.grad.abs().sum(1) > 0
    seen = np.zeros(len(s.vertices), dtype=bool)
    seen[s.faces[pixels.face.numpy()].ravel()] = True
    assert moved.any() and not (moved.numpy() & ~seen).any()
    assert torch.isfinite(verts.grad).all()


def _sphere_top_brightness(result) -> np.ndarray:
    """Linear brightness of the texture on the white top of the sphere (constant albedo)."""
    v, f = result.vertices.astype(np.float64), result.faces
    centre = v[f].mean(1)
    offset = centre - synthetic.SPHERE_CENTRE
    on_sphere = np.abs(np.linalg.norm(offset, axis=1) - synthetic.SPHERE_RADIUS) < 0.01
    outside_box = ~np.all((centre > synthetic.BOX_MIN - 0.03) & (centre < synthetic.BOX_MAX + 0.03), axis=1)
    ids = np.flatnonzero(on_sphere & outside_box & (offset[:, 2] > 0.05))
    assert len(ids) > 100
    return srgb_to_linear(face_centroid_colours(result, ids) / 255.0).max(1), offset[ids]


def test_delit_albedo_is_flat_where_the_input_shading_varied():
    # The sphere's top is one white paint under a sun from the upper front right: the
    # views show it bright toward the sun and dark away from it. The de-lit texture must
    # be much flatter there, and lifted on the shaded side.
    on, off = lit_reconstructions()
    (b_on, p_on), (b_off, p_off) = _sphere_top_brightness(on), _sphere_top_brightness(off)
    spread_on, spread_off = b_on.std() / b_on.mean(), b_off.std() / b_off.mean()
    assert spread_on < 0.6 * spread_off, (spread_on, spread_off)
    sun = np.array([0.5, -0.6, 0.62]) / np.linalg.norm([0.5, -0.6, 0.62])

    def shade_ratio(b, p):
        facing = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ sun
        return np.median(b[facing < 0.2]) / np.median(b[facing > 0.8])

    off_ratio, on_ratio = shade_ratio(b_off, p_off), shade_ratio(b_on, p_on)
    assert off_ratio < 0.7  # the shading is real in the input
    assert abs(math.log(on_ratio)) < 0.4 * abs(math.log(off_ratio))  # and mostly gone from the albedo


def test_light_and_environment_follow_the_contract():
    on, off = lit_reconstructions()
    assert off.light is None and off.environment is None
    doc = json.loads(json.dumps(on.light))
    assert len(doc["lobes"]) == LOBES and doc["ambient"] == [0.0, 0.0, 0.0]
    env = on.environment
    width = LIT_OPTIONS.environment_width
    assert env.shape == (width // 2, width, 3) and env.dtype == np.float32
    assert np.isfinite(env).all() and env.min() >= 0
    # The brightest direction of the fitted light lies toward the known sun.
    amps = np.array([lobe["amplitude"][0] for lobe in doc["lobes"]])
    brightest = fibonacci_axes(LOBES)[amps.argmax()]
    sun = np.array([0.5, -0.6, 0.62]) / np.linalg.norm([0.5, -0.6, 0.62])
    assert np.degrees(np.arccos(brightest @ sun)) < 50
    assert set(on.stage_seconds) >= {"refine"} and on.stage_seconds["refine"] > 0


def test_refine_reports_every_step_and_can_be_cancelled():
    s = lit_scene()
    calls = []

    def progress(fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 4:
            raise JobCancelled

    with pytest.raises(JobCancelled):
        refine(s.vertices, s.faces, s.images, s.c2w, s.camera_angle_x, RefineOptions(steps=50, samples=256),
               device="cpu", on_progress=progress)
    from blend123.backend.reconstruction.refine import _SETUP_SHARE

    assert calls == sorted(calls) and len(calls) == 4
    assert 0.0 < calls[0] < _SETUP_SHARE == pytest.approx(calls[1])  # the set-up, then step 0


def test_vertex_offsets_stay_small_and_finite():
    s = lit_scene()
    options = RefineOptions(steps=30, samples=2048, lr_offsets=1e-3, rerasterize_every=10)
    fit = refine(s.vertices, s.faces, s.images, s.c2w, s.camera_angle_x, options, device="cpu")
    assert np.isfinite(fit.vertices).all()
    moved = np.linalg.norm(fit.vertices - s.vertices, axis=1)
    assert 0 < moved.max() < 0.05
    assert np.mean(fit.losses[-5:]) < np.mean(fit.losses[:5])


def test_a_diverging_refinement_falls_back_to_the_hull(monkeypatch):
    from blend123.backend.reconstruction import pipeline

    def diverge(*args, **kwargs):
        raise FloatingPointError("refinement diverged at step 3")

    monkeypatch.setattr(pipeline, "refine", diverge)
    s = lit_scene()
    options = dataclasses.replace(LIT_OPTIONS, grid_resolution=48, max_faces=2000, texture_size=64)
    result = pipeline.reconstruct(s.images, s.c2w, s.camera_angle_x, options)
    assert result.light is None and result.environment is None
    assert len(result.faces) > 0 and result.texture.shape == (64, 64, 4)


def test_the_written_out_adam_steps_like_torchs():
    from blend123.backend.reconstruction.refine import _Adam

    torch.manual_seed(0)
    ours_x = torch.randn(50, 3, requires_grad=True)
    ours_y = torch.randn(24, requires_grad=True)
    ref_x, ref_y = (t.detach().clone().requires_grad_(True) for t in (ours_x, ours_y))
    ours = _Adam([{"params": [ours_x], "lr": 0.2}, {"params": [ours_y], "lr": 0.5}])
    ref = torch.optim.Adam([{"params": [ref_x], "lr": 0.2}, {"params": [ref_y], "lr": 0.5}])
    for _ in range(50):
        for x, y, optimiser in ((ours_x, ours_y, ours), (ref_x, ref_y, ref)):
            loss = (x.sin() ** 2).sum() + (y.cos() * x[:24, 0]).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    assert (ours_x - ref_x).abs().max() < 1e-5 and (ours_y - ref_y).abs().max() < 1e-5
    assert (ours_x - torch.randn(50, 3)).abs().max() > 0.1  # it moved


def test_progress_counts_against_the_step_the_fit_is_expected_to_stop_at():
    from blend123.backend.reconstruction.refine import _FEWEST_STEPS, _SETUP_SHARE, _progress

    def steps_part(fraction: float) -> float:  # the share of the stepping, after the set-up
        return (fraction - _SETUP_SHARE) / (1.0 - _SETUP_SHARE)

    early = RefineOptions(steps=400, stop_tolerance=1e-3)  # stops once converged: between _FEWEST_STEPS and 400
    assert _progress(0, early) == pytest.approx(_SETUP_SHARE)
    middle = (_FEWEST_STEPS + 400) / 2
    assert steps_part(_progress(_FEWEST_STEPS // 2, early)) == pytest.approx(_FEWEST_STEPS // 2 / middle)
    # Past the fewest, the expected stop moves on with the step: the bar keeps moving...
    fractions = [_progress(step, early) for step in range(0, 401, 10)]
    assert fractions == sorted(fractions) and len(set(fractions[:-3])) == len(fractions) - 3
    assert steps_part(_progress(300, early)) == pytest.approx(300 / 350)
    assert steps_part(_progress(399, early)) == pytest.approx(0.99)  # ...and stops short of done until the end
    fixed = RefineOptions(steps=400, stop_tolerance=0.0)  # runs every step
    assert steps_part(_progress(200, fixed)) == pytest.approx(0.5)
    short = RefineOptions(steps=50, stop_tolerance=1e-3)
    assert steps_part(_progress(25, short)) == pytest.approx(0.5)
