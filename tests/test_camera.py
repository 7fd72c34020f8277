"""Pins the camera conventions every part of blend123 shares."""

import math

import numpy as np
import pytest

from blend123.protocol.camera import (
    REFERENCE_AZIMUTH_DEG,
    SphericalPose,
    c2w_from_blender,
    camera_angle_x_from_lens,
    look_at_error_deg,
    orbit_relative_azimuths,
    pixel_rays,
    project_points,
    relative_azimuth,
    spherical_from_c2w,
    world_azimuth,
)


def test_front_view_sits_on_minus_y_looking_toward_plus_y():
    c2w = SphericalPose(0.0, REFERENCE_AZIMUTH_DEG, 2.0).to_c2w()
    np.testing.assert_allclose(c2w[:3, 3], [0, -2, 0], atol=1e-12)
    np.testing.assert_allclose(-c2w[:3, 2], [0, 1, 0], atol=1e-12)  # looks down local -Z
    np.testing.assert_allclose(c2w[:3, 0], [1, 0, 0], atol=1e-12)  # image right = world +X
    np.testing.assert_allclose(c2w[:3, 1], [0, 0, 1], atol=1e-12)  # image up = world +Z


def test_top_view_looks_straight_down_with_a_defined_orientation():
    c2w = SphericalPose(90.0, REFERENCE_AZIMUTH_DEG, 3.0).to_c2w()
    np.testing.assert_allclose(c2w[:3, 3], [0, 0, 3], atol=1e-12)
    np.testing.assert_allclose(-c2w[:3, 2], [0, 0, -1], atol=1e-12)
    # Seen from above after tilting up from the front view, image up is world +Y.
    np.testing.assert_allclose(c2w[:3, 1], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)


def test_relative_plus_90_moves_the_camera_to_the_viewers_right():
    pose = SphericalPose(0.0, world_azimuth(90.0), 2.0)
    np.testing.assert_allclose(pose.position(), [2, 0, 0], atol=1e-12)
    # ...and it still looks at the subject.
    assert look_at_error_deg(pose.to_c2w()) < 1e-9


def test_positive_elevation_is_above_the_subject():
    pose = SphericalPose(30.0, -90.0, 2.0)
    assert pose.position()[2] == pytest.approx(2.0 * math.sin(math.radians(30)))
    # The subject centre projects to the image centre, a point above it to the upper half.
    c2w = pose.to_c2w()
    pix, depth = project_points(c2w, math.radians(40), 200, 100, [[0, 0, 0], [0, 0, 0.2]])
    np.testing.assert_allclose(pix[0], [100, 50], atol=1e-9)
    assert pix[1, 1] < 50 and depth[0] == pytest.approx(2.0)


@pytest.mark.parametrize("elevation", [-89.0, -45.0, 0.0, 12.5, 60.0, 89.9])
@pytest.mark.parametrize("azimuth", [-179.0, -90.0, 0.0, 33.0, 135.0, 180.0])
def test_spherical_round_trip(elevation, azimuth):
    centre = np.array([0.3, -1.2, 0.7])
    pose = SphericalPose(elevation, azimuth, 1.7)
    back = spherical_from_c2w(pose.to_c2w(centre), centre)
    assert back.elevation_deg == pytest.approx(elevation, abs=1e-9)
    assert back.radius == pytest.approx(1.7)
    assert math.cos(math.radians(back.azimuth_deg - azimuth)) == pytest.approx(1.0, abs=1e-12)
    assert look_at_error_deg(pose.to_c2w(centre), centre) < 1e-6


def test_blender_matrix_world_is_a_c2w_once_scale_is_removed():
    c2w = SphericalPose(20.0, 40.0, 2.5).to_c2w()
    scaled = c2w.copy()
    scaled[:3, :3] *= 3.0  # a scaled camera object in Blender
    np.testing.assert_allclose(c2w_from_blender(scaled.tolist()), c2w, atol=1e-12)


def test_relative_and_world_azimuths_invert_each_other_and_wrap():
    assert world_azimuth(0.0) == -90.0
    assert world_azimuth(270.0) == 180.0
    assert relative_azimuth(world_azimuth(123.0)) == pytest.approx(123.0)
    assert relative_azimuth(-90.0 + 360.0) == 0.0


def test_orbit_ends_at_the_input_view_in_even_steps():
    az = orbit_relative_azimuths(21)
    assert len(az) == 21 and az[-1] == 0.0
    steps = np.diff(np.unwrap(np.radians(az)))
    np.testing.assert_allclose(np.degrees(steps), 360 / 21)


def test_pixel_rays_hit_the_pixels_they_came_from():
    c2w = SphericalPose(15.0, 10.0, 2.0).to_c2w()
    fov = math.radians(33.8)
    origins, dirs = pixel_rays(c2w, fov, 64, 48)
    points = origins + 1.5 * dirs
    pix, depth = project_points(c2w, fov, 64, 48, points.reshape(-1, 3))
    xs, ys = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    np.testing.assert_allclose(pix, np.stack([xs.ravel(), ys.ravel()], 1), atol=1e-9)
    assert (depth > 0).all()


def test_camera_angle_from_blender_lens():
    # Blender's default camera: 50 mm lens on a 36 mm sensor.
    assert math.degrees(camera_angle_x_from_lens(50.0, 36.0)) == pytest.approx(39.5978, abs=1e-3)


def test_torch_projection_matches_the_protocols():
    import torch

    from blend123.backend.reconstruction.projection import camera_to_pixels, world_to_camera
    from blend123.protocol.camera import SphericalPose, focal_px, project_points

    rng = np.random.default_rng(3)
    c2w = np.stack([SphericalPose(e, a, 2.5).to_c2w() for e, a in ((10, 30), (-20, 200))])
    points = rng.uniform(-0.5, 0.5, (2, 7, 3))
    w2c = torch.tensor(np.linalg.inv(c2w))
    angle, width, height = 0.7, 96, 64
    batched = camera_to_pixels(world_to_camera(torch.tensor(points), w2c), focal_px(angle, width), width, height)
    for i in range(2):
        expected, depth = project_points(c2w[i], angle, width, height, points[i])
        single = camera_to_pixels(world_to_camera(torch.tensor(points[i]), w2c[i]), focal_px(angle, width), width, height)
        for x, y, d in (single, tuple(t[i] for t in batched)):
            np.testing.assert_allclose(np.stack([x.numpy(), y.numpy()], 1), expected, atol=1e-9)
            np.testing.assert_allclose(d.numpy(), depth, atol=1e-12)
