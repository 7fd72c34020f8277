"""Photo-consistency carving: the inside of a textured cup, which no mask shows, is found
from colour; flat-coloured convex parts are left as the visual hull has them."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from .recon_fixtures import scene

from blend123.backend.progress import JobCancelled, photo_fractions
from benchmarks.quality import synthetic
from blend123.backend.reconstruction.carve import HullGrid, Silhouettes, carve
from blend123.backend.reconstruction import photo
from blend123.backend.reconstruction.photo import PhotoOptions, photo_carve

SIZE = 128
RESOLUTION = 80


@functools.lru_cache(maxsize=None)
def cup_views() -> tuple[np.ndarray, np.ndarray, float]:
    """A 21-view orbit of the cup, cycling through 15, 40 and 65 degrees up, so its inside shows."""
    vertices, faces, colours = synthetic.textured_cup()
    c2w = synthetic.orbit_cameras(elevations_deg=(15.0, 40.0, 65.0))
    angle = math.radians(40.0)
    images = np.stack([synthetic.render(vertices, faces, colours, m, angle, SIZE) for m in c2w])
    return images, c2w, angle


@functools.lru_cache(maxsize=None)
def cup_hull() -> HullGrid:
    images, c2w, angle = cup_views()
    return carve(Silhouettes.from_masks(images[..., 3] > 127, c2w, angle), RESOLUTION)


def grid_points(grid: HullGrid) -> np.ndarray:
    axes = [grid.origin[d] + grid.spacing * np.arange(n) for d, n in enumerate(grid.field.shape)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1)


def cup_truth(points: np.ndarray) -> np.ndarray:
    lo, hi = synthetic.CUP_OUTER
    cavity_lo, cavity_hi = synthetic.cup_cavity()
    in_outer = np.all((points > lo) & (points < hi), -1)
    in_cavity = np.all((points > cavity_lo) & (points < cavity_hi), -1)
    return in_outer & ~in_cavity


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def field_at(grid: HullGrid, point) -> float:
    index = np.round((np.asarray(point) - grid.origin) / grid.spacing).astype(int)
    return float(grid.field[tuple(index)])


@pytest.mark.parametrize("patch_step", [1, 2])
def test_the_hull_fills_the_cup_and_colour_empties_it(patch_step):
    images, c2w, angle = cup_views()
    hull = cup_hull()
    result = photo_carve(hull, images, c2w, angle, PhotoOptions(patch_step=patch_step))
    truth = cup_truth(grid_points(hull))
    before, after = iou(hull.field > 0, truth), iou(result.grid.field > 0, truth)
    # The hull holds the whole cavity as matter; carving gives most of it back.
    assert before < 0.55, before
    assert after > before + 0.2 and after > 0.65, (before, after)
    inside = (0.0, 0.0, 0.05)  # middle of the cavity
    assert field_at(hull, inside) > 0 > field_at(result.grid, inside)
    for solid in [(0.22, 0.0, 0.0), (-0.22, 0.1, 0.1), (0.0, 0.0, -0.17)]:  # walls and floor
        assert field_at(result.grid, solid) > 0, solid
    # Carving only removes: the result never has matter the hull did not.
    assert np.all(result.grid.field <= hull.field)


def test_depth_maps_find_the_inside_floor():
    images, c2w, angle = cup_views()
    result = photo_carve(cup_hull(), images, c2w, angle)
    high = 2  # 65 degrees up: the floor in view
    depth = result.depth[high]
    assert depth.shape == images.shape[1:3]
    h, w = depth.shape
    centre = depth[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3]
    found = centre[np.isfinite(centre)]
    assert len(found) > 0
    floor_top = synthetic.CUP_OUTER[0][2] + synthetic.CUP_WALL
    camera = c2w[high][:3, 3]
    # The centre ray meets the floor (z = floor_top) near the cup's axis.
    ray = -c2w[high][:3, 2]
    expected = (floor_top - camera[2]) / ray[2]
    assert abs(float(np.median(found)) - expected) < 0.05, (np.median(found), expected)


def test_a_flat_coloured_convex_object_keeps_its_hull():
    s = scene()
    hull = carve(Silhouettes.from_masks(s.images[..., 3] > 127, s.c2w, s.camera_angle_x), RESOLUTION)
    result = photo_carve(hull, s.images, s.c2w, s.camera_angle_x)
    kept = (result.grid.field > 0).sum() / (hull.field > 0).sum()
    assert kept > 0.98, kept


def test_progress_per_view_and_cancel():
    images, c2w, angle = cup_views()
    seen: list[float] = []
    heard: list[photo.PhotoWork] = []
    photo_carve(cup_hull(), images[:6], c2w[:6], angle, on_progress=seen.append, on_work=heard.append)
    # The set-up, then one step per view as its rays foretell, then deciding the votes.
    assert seen == pytest.approx(photo_fractions(list(heard[0].view_rays), heard[0].compared) + [1.0])
    assert len(seen) == 8 and seen == sorted(seen) and 0 < seen[0] and seen[-2] < 1.0

    def cancel(fraction: float) -> None:
        if fraction > 0.3:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        photo_carve(cup_hull(), images, c2w, angle, on_progress=cancel)


def test_views_without_neighbours_carve_nothing():
    images, c2w, angle = cup_views()
    hull = cup_hull()
    # Two cameras facing each other: no neighbour within the angle limit.
    pair = [0, 10]
    result = photo_carve(hull, images[pair], c2w[pair], angle, PhotoOptions(max_angle_deg=30.0))
    np.testing.assert_array_equal(result.grid.field, hull.field)
    assert all(np.isnan(d).all() for d in result.depth)


def test_views_walked_side_by_side_give_the_same_carving():
    images, c2w, angle = cup_views()
    one = photo_carve(cup_hull(), images, c2w, angle, workers=1)
    two = photo_carve(cup_hull(), images, c2w, angle, workers=2)
    np.testing.assert_array_equal(one.free, two.free)
    np.testing.assert_array_equal(one.grid.field, two.grid.field)
    for a, b in zip(one.depth, two.depth):
        np.testing.assert_array_equal(a, b)


def test_cancel_with_views_side_by_side_starts_no_more_views(monkeypatch):
    images, c2w, angle = cup_views()
    started: list[int] = []
    walk_view = photo._Walker.walk_view
    monkeypatch.setattr(photo._Walker, "walk_view", lambda self, i, *a: started.append(i) or walk_view(self, i, *a))

    reported: list[float] = []

    def cancel(fraction: float) -> None:
        reported.append(fraction)
        if len(reported) > 1:  # past the set-up: a view is done
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        photo_carve(cup_hull(), images, c2w, angle, on_progress=cancel, workers=2)
    # The first view's progress cancels: the two running may finish, no other starts.
    assert 1 <= len(started) <= 4 < len(images), started


def _box_hull(half: float) -> HullGrid:
    """A hull that is a box around the cup: every ray enters it off the cup's surface."""
    spacing = 2 * half / (RESOLUTION - 1)
    axes = np.linspace(-half, half, RESOLUTION)
    points = np.stack(np.meshgrid(axes, axes, axes, indexing="ij"), -1)
    field = (0.9 * half - np.abs(points).max(-1)).astype(np.float32)
    return HullGrid(np.full(3, -half), spacing, field)


@pytest.mark.parametrize("hull", [cup_hull, lambda: _box_hull(0.4)], ids=["the cup's hull", "a box around it"])
def test_the_work_sampled_before_the_walk_foretells_it(monkeypatch, hull):
    """What ``on_work`` hears before the walk (a few hundred rays' entry test) is what the
    walk then does: its rays exactly, its compared patch points to within a quarter; a
    hull far from the surface (every entry off it) is foretold as more work."""
    images, c2w, angle = cup_views()
    heard: list[photo.PhotoWork] = []
    walked = {"rays": 0, "compared": 0}
    march, cost = photo._march, photo._View.cost

    def counting_march(grid, rays_o, rays_d):
        walked["rays"] += len(rays_o) if heard else 0  # the walk's, not the sample's
        return march(grid, rays_o, rays_d)

    def counting_cost(self, yx, points, t, dirs, inside):
        walked["compared"] += int(inside.sum()) if heard else 0
        return cost(self, yx, points, t, dirs, inside)

    monkeypatch.setattr(photo, "_march", counting_march)
    monkeypatch.setattr(photo._View, "cost", counting_cost)
    photo_carve(hull(), images, c2w, angle, on_work=heard.append)
    assert len(heard) == 1
    assert heard[0].rays == walked["rays"]
    assert heard[0].compared == pytest.approx(walked["compared"], rel=0.25)
    assert heard[0] == photo.photo_work(hull(), images, c2w, angle)  # the same sample, so the same plan
    if hull is not cup_hull:
        assert heard[0].compared > 1.5 * photo.photo_work(cup_hull(), images, c2w, angle).compared
