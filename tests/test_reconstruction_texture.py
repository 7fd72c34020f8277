"""Texture baking: visibility, facing, and padding, on small scenes with known answers."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.quality.synthetic import render
from blend123.backend.reconstruction.texture import TexelSurface, bake, fill_nearest
from blend123.protocol.camera import SphericalPose

RED, BLUE = np.array([220, 30, 30], dtype=np.uint8), np.array([30, 30, 220], dtype=np.uint8)


def _square(y: float, half: float, x0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A square in the plane y = const, facing -Y (counter-clockwise seen from -Y)."""
    v = np.array([[x0 - half, y, -half], [x0 + half, y, -half], [x0 + half, y, half], [x0 - half, y, half]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_occluded_points_take_no_colour_from_the_occluding_view():
    # A big blue wall with a small red card in front of its left half, seen from the front.
    wall_v, wall_f = _square(0.0, 0.5)
    card_v, card_f = _square(-0.3, 0.15, x0=-0.25)
    vertices = np.concatenate([wall_v, card_v])
    faces = np.concatenate([wall_f, card_f + 4])
    colours = np.array([BLUE, BLUE, RED, RED])
    c2w = SphericalPose(0.0, -90.0, 2.0).to_c2w()[None]
    angle = math.radians(40.0)
    images = render(vertices, faces, colours, c2w[0], angle, 128)[None]

    xs = np.linspace(-0.4, 0.4, 41)
    points = np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], axis=1)  # on the wall
    normals = np.tile([0.0, -1.0, 0.0], (len(xs), 1))
    surface = TexelSurface(np.zeros(len(xs), int), np.arange(len(xs)), points, normals)
    rgb, weight = bake(surface, vertices, faces, images, c2w, angle)

    hidden = np.abs(xs + 0.25) < 0.1  # behind the card (with a margin for the card's edges)
    seen = np.abs(xs - 0.2) < 0.15
    assert (weight[hidden] == 0).all()
    assert (weight[seen] > 0.9).all()
    np.testing.assert_allclose(rgb[seen] * 255, np.tile(BLUE, (seen.sum(), 1)), atol=1)


def test_points_facing_away_take_no_colour():
    wall_v, wall_f = _square(0.0, 0.5)
    c2w = SphericalPose(0.0, -90.0, 2.0).to_c2w()[None]
    angle = math.radians(40.0)
    images = render(wall_v, wall_f, np.array([BLUE, BLUE]), c2w[0], angle, 64)[None]
    points = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.1]])
    normals = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])  # back side, front side
    surface = TexelSurface(np.zeros(2, int), np.arange(2), points, normals)
    _, weight = bake(surface, wall_v, wall_f, images, c2w, angle)
    assert weight[0] == 0 and weight[1] > 0.9


def test_fill_nearest_pads_charts_with_their_own_colour():
    image = np.zeros((32, 32, 3), dtype=np.float32)
    known = np.zeros((32, 32), dtype=bool)
    image[4:10, 4:10] = [1, 0, 0]
    image[20:28, 20:28] = [0, 0, 1]
    known[4:10, 4:10] = True
    known[20:28, 20:28] = True
    filled = fill_nearest(image, known)
    assert (filled[0:14, 0:14] == [1, 0, 0]).all()  # 4 texels of padding around the red chart
    assert (filled[16:32, 16:32] == [0, 0, 1]).all()
    np.testing.assert_array_equal(filled[known], image[known])
