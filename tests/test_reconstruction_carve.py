"""Visual hull field and carving bounds."""

from __future__ import annotations

import numpy as np
import pytest
from .recon_fixtures import scene

from benchmarks.quality import synthetic
from blend123.backend.reconstruction.carve import Silhouettes, carve, hull_field


def _silhouettes(images, c2w, angle) -> Silhouettes:
    return Silhouettes.from_masks(images[..., 3] > 127, c2w, angle)


def test_field_is_positive_inside_and_negative_outside():
    s = scene()
    sil = _silhouettes(s.images, s.c2w, s.camera_angle_x)
    inside = np.array([[-0.1, 0.0, -0.1], [0.15, 0.0, 0.2], [-0.3, 0.15, -0.2]])
    outside = np.array([[0.0, 0.0, 0.45], [0.4, -0.3, -0.2], [-0.5, 0.0, 0.0]])
    value = hull_field(np.concatenate([inside, outside]), sil, settle_below=1.0)
    assert (value[:3] > 0.01).all() and (value[3:] < -0.01).all()


def test_field_measures_distance_to_the_silhouette():
    # Just above the box top (z = 0.1), clear of the sphere: the hull extends a little
    # above the box (finite views) but the field must fall roughly 1:1 with height.
    s = scene()
    sil = _silhouettes(s.images, s.c2w, s.camera_angle_x)
    z = np.array([0.12, 0.16, 0.2])
    value = hull_field(np.stack([np.full(3, -0.3), np.full(3, -0.15), z], axis=1), sil, settle_below=1.0)
    slope = np.diff(value) / np.diff(z)
    assert np.all((slope < -0.5) & (slope > -1.5))


def test_bounds_follow_the_cameras_not_constants():
    # Move and shrink the whole setup: the carved volume must follow.
    offset, scale = np.array([3.0, -2.0, 1.5]), 0.5
    verts, faces, colours = synthetic.box_and_sphere()
    c2w = synthetic.orbit_cameras(21, radius=2.0 * scale)
    c2w[:, :3, 3] += offset
    angle = scene().camera_angle_x
    images = np.stack([synthetic.render(verts * scale + offset, faces, colours, m, angle, 96) for m in c2w])
    grid = carve(_silhouettes(images, c2w, angle), resolution=48)
    idx = np.argwhere(grid.field > 0)
    lo, hi = grid.origin + grid.spacing * idx.min(0), grid.origin + grid.spacing * idx.max(0)
    true_lo, true_hi = verts.min(0) * scale + offset, verts.max(0) * scale + offset
    assert np.all(lo > true_lo - 0.06) and np.all(hi < true_hi + 0.06)
    assert np.all(lo < true_lo + 0.03) and np.all(hi > true_hi - 0.03)
    # grid_resolution voxels span the hull (plus the coarse pass's margin), not the camera cube.
    assert 1.0 < grid.spacing / ((true_hi - true_lo).max() / 47) < 1.4


def test_progress_is_reported_per_view():
    s = scene()
    fractions = []
    carve(_silhouettes(s.images, s.c2w, s.camera_angle_x), resolution=32, on_progress=fractions.append)
    assert len(fractions) >= 2 * len(s.images)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_masks_without_common_region_are_refused():
    s = scene()
    images = s.images.copy()
    images[:, :, :, 3] = 0
    images[0, :10, :10, 3] = 255  # view 0 sees only a corner, the others a different corner
    images[1:, -10:, -10:, 3] = 255
    with pytest.raises(ValueError, match="no region in common"):
        carve(_silhouettes(images, s.c2w, s.camera_angle_x), resolution=32)


def test_empty_mask_is_refused():
    s = scene()
    images = s.images.copy()
    images[3, ..., 3] = 0
    with pytest.raises(ValueError, match=r"views \[3\]"):
        _silhouettes(images, s.c2w, s.camera_angle_x)
