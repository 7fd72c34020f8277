"""The CPU rasteriser: coverage rule, z-buffer, culling, perspective-correct interpolation."""

from __future__ import annotations

import math

import numpy as np

from blend123.backend.raster import rasterize, rasterize_screen
from blend123.protocol.camera import SphericalPose, pixel_rays


def test_coverage_follows_pixel_centres():
    # A right triangle over pixel centres: (0.5, 0.5) .. (3.5, 0.5) .. (0.5, 3.5).
    xy = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    frags = rasterize_screen(xy, np.ones(3), np.array([[0, 1, 2]]), 6, 5, perspective=False)
    rows, cols = np.nonzero(frags.covered)
    # Centres with x + y <= 4 are inside (edges included).
    expected = {(r, c) for r in range(5) for c in range(6) if (c + 0.5) + (r + 0.5) <= 4.0}
    assert set(zip(rows.tolist(), cols.tolist())) == expected
    assert np.isinf(frags.depth[~frags.covered]).all()


def test_nearer_triangle_wins_whatever_the_order():
    square = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    xy = np.concatenate([square, square])
    faces = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6], [5, 7, 6]])
    for near, far in ((1.0, 2.0), (2.0, 1.0)):
        z = np.array([near] * 4 + [far] * 4)
        frags = rasterize_screen(xy, z, faces, 8, 8, perspective=False)
        assert frags.covered.all()
        winner = np.where(frags.face < 2, near, far)
        np.testing.assert_allclose(frags.depth, min(near, far))
        np.testing.assert_allclose(winner, min(near, far))


def test_front_only_drops_clockwise_faces_and_the_far_side_shows_through():
    # Two overlapping squares: the near one wound clockwise on screen (its back faces us).
    square = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    xy = np.concatenate([square, square])
    faces = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6]])  # near: clockwise; far: counter-clockwise
    z = np.array([1.0] * 4 + [2.0] * 4)
    both = rasterize_screen(xy, z, faces, 8, 8, perspective=False)
    front = rasterize_screen(xy, z, faces, 8, 8, perspective=False, front_only=True)
    assert set(np.unique(both.face)) == {0, 1} and set(np.unique(front.face)) == {2, 3}
    np.testing.assert_allclose(front.depth, 2.0)


def test_offscreen_and_behind_camera_faces_draw_nothing():
    xy = np.array([[-50.0, -50.0], [-40.0, -50.0], [-50.0, -40.0], [1.0, 1.0], [6.0, 1.0], [1.0, 6.0]])
    z = np.array([1.0, 1.0, 1.0, -1.0, 1.0, 1.0])  # second face has a vertex behind the camera
    frags = rasterize_screen(xy, z, np.array([[0, 1, 2], [3, 4, 5]]), 8, 8, perspective=True)
    assert not frags.covered.any()


def test_perspective_interpolation_lands_on_the_true_surface():
    # A slanted quad seen in perspective: interpolated world positions must lie on the
    # camera ray through each pixel centre, at the rasterised depth.
    c2w = SphericalPose(25.0, -70.0, 2.0).to_c2w()
    angle = math.radians(40.0)
    verts = np.array([[-0.6, -0.3, -0.5], [0.6, -0.3, -0.2], [-0.6, 0.4, 0.5], [0.6, 0.4, 0.4]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    frags = rasterize(c2w, angle, 64, 48, verts, faces)
    assert frags.covered.sum() > 500
    points = frags.interpolate(verts, faces)
    origins, dirs = pixel_rays(c2w, angle, 64, 48)
    o, d = origins[frags.covered], dirs[frags.covered]
    t = np.einsum("ij,ij->i", points - o, d)
    np.testing.assert_allclose(o + t[:, None] * d, points, atol=1e-6)  # on the ray
    forward = -c2w[:3, 2]
    np.testing.assert_allclose((points - o) @ forward, frags.depth[frags.covered], rtol=1e-5)

