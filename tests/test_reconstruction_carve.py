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


def _coverage(inside, size: int, supersample: int = 16) -> np.ndarray:
    """(size, size) uint8 alpha: the share of each pixel's ``supersample``^2 points that
    ``inside(x, y)`` (pixel coordinates, centres at +0.5) holds, as an anti-aliased render."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    hits = np.zeros((size, size))
    for dy in offsets:
        for dx in offsets:
            hits += inside(x + dx, y + dy)
    return np.rint(255.0 * hits / supersample**2).astype(np.uint8)


def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return x + 0.5, y + 0.5


@pytest.mark.parametrize("centre,radius", [((32.2, 31.7), 10.3), ((30.6, 33.4), 7.8), ((31.9, 32.1), 12.45), ((32.5, 32.5), 3.3)])
def test_coverage_places_a_disc_s_outline_within_its_pixels(centre, radius):
    size = 64
    alpha = _coverage(lambda x, y: np.hypot(x - centre[0], y - centre[1]) < radius, size)[None]
    x, y = _pixel_centres(size)
    truth = radius - np.hypot(x - centre[0], y - centre[1])
    near = np.abs(truth) < 6.0  # the band the hull's surface is found in, and beyond
    c2w = np.eye(4)[None]
    binary = Silhouettes.from_masks(alpha > 127, c2w, 1.0).distance[0]
    covered = Silhouettes.from_alpha(alpha, 127, c2w, 1.0).distance[0]
    binary_error, covered_error = np.abs(binary - truth)[near].mean(), np.abs(covered - truth)[near].mean()
    # Half way between pixel centres is about a fifth of a pixel off on average; the
    # coverage a third of that (what is left: an edge at a slant covers a pixel's corner,
    # not a strip of it).
    assert binary_error > 0.18
    assert covered_error < 0.09 and covered_error < binary_error / 2


@pytest.mark.parametrize("width", [0.8, 1.0, 1.2, 1.4, 1.7, 2.5])
@pytest.mark.parametrize("left", [15.15, 15.3, 15.5, 15.7])  # off the pixel grid: a binary mask's best case is on it
def test_coverage_keeps_a_bar_one_or_two_pixels_wide_its_width(width, left):
    # As a binary mask such a bar is one, two or three pixels wide, so the hull of a thin
    # leg keeps whole pixels where it should keep its width; in coverage a pixel one wide
    # has a boundary either side, each placed by what the pixels there hold.
    size = 32
    alpha = _coverage(lambda x, y: (x > left) & (x < left + width) & (y > 4) & (y < 28), size)[None]
    row = Silhouettes.from_alpha(alpha, 127, np.eye(4)[None], 1.0).distance[0, 16]
    x = np.arange(size) + 0.5
    truth = width / 2 - np.abs(x - (left + width / 2))
    near = np.abs(truth) < 3.0
    assert np.abs(row - truth)[near].max() < 0.12
    binary = Silhouettes.from_masks(alpha > 127, np.eye(4)[None], 1.0).distance[0, 16]
    assert np.abs(binary - truth)[near].max() > 0.15  # what the test would pass without coverage


def test_a_0_255_alpha_gives_the_masks_field_and_other_types_are_refused():
    s = scene()
    alpha = np.where(s.images[..., 3] > 127, 255, 0).astype(np.uint8)
    np.testing.assert_allclose(
        Silhouettes.from_alpha(alpha, 127, s.c2w, s.camera_angle_x).distance,
        Silhouettes.from_masks(alpha > 127, s.c2w, s.camera_angle_x).distance,
    )
    with pytest.raises(ValueError, match="uint8"):
        Silhouettes.from_alpha(alpha / 255.0, 127, s.c2w, s.camera_angle_x)


def test_a_speck_keeps_its_area_and_a_255th_of_noise_does_not_move_a_line():
    # A speck of subject in one pixel, 0.6 covered: a square sqrt(0.6) a side about its
    # centre (per axis 0.6 would leave it 0.36 of a pixel).
    alpha = np.zeros((1, 7, 7), np.uint8)
    alpha[0, 3, 3] = 153
    field = Silhouettes.from_alpha(alpha, 127, np.eye(4)[None], 1.0).distance[0]
    assert field[3, 3] == pytest.approx(0.6**0.5 / 2, abs=0.02)
    # A line one pixel wide, 0.7 of its pixel and 0.3 of the next: its edge 0.2 px left of
    # the pixel's centre, whatever the pixel on that side holds of noise.
    for noise in (0, 1, 3):
        alpha = np.tile(np.array([0, noise, 179, 77, 0], np.uint8), (5, 1))[None]
        field = Silhouettes.from_alpha(alpha, 127, np.eye(4)[None], 1.0).distance[0, 2]
        assert field[2] == pytest.approx(0.2, abs=0.02), noise
