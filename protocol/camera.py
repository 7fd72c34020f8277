"""Camera conventions shared by the backend and the Blender add-on: one definition, tested.

World frame: Blender's, right-handed, Z up. A camera looks down its local -Z with +Y up,
so a Blender camera's ``matrix_world`` *is* a camera-to-world matrix in the NeRF
"Blender" convention (``transforms.json``), once any object scale is removed.

Spherical poses are taken about a subject centre:

* ``elevation`` degrees above the subject's horizontal (XY) plane,
* ``azimuth`` degrees, ``atan2(y, x)`` of the camera position relative to the centre
  (counter-clockwise seen from above),
* ``radius`` in world units.

The reference image is seen from the *reference camera*, by default the front view: on
the -Y axis looking toward +Y, i.e. world azimuth -90 deg. User-facing azimuths are
relative to it, so relative +90 moves the camera from -Y to +X (the viewer's right).

Only numpy here: this module runs inside Blender's own Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: World azimuth (deg) of the default reference camera: on -Y, looking toward +Y.
REFERENCE_AZIMUTH_DEG = -90.0
#: Field of view of generated views (SV3D's 33.8 deg; used for every model's output).
DEFAULT_FOV_DEG = 33.8
#: Distance of generated cameras from the subject centre, in world units.
DEFAULT_RADIUS = 2.0
#: Number of views in an orbit (SV3D's K).
ORBIT_VIEWS = 21

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class SphericalPose:
    """A camera on a sphere about the subject centre, aimed at the centre."""

    elevation_deg: float
    azimuth_deg: float
    radius: float = DEFAULT_RADIUS

    def position(self, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
        e = math.radians(self.elevation_deg)
        a = math.radians(self.azimuth_deg)
        offset = self.radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        return np.asarray(centre, dtype=np.float64) + offset

    def to_c2w(self, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Camera-to-world 4x4 (NeRF Blender convention) looking at ``centre``, Z up.

        The camera's right vector is ``(-sin a, cos a, 0)`` for every elevation, which
        is the limit of ``forward x up`` and stays defined straight above or below.
        """
        e = math.radians(self.elevation_deg)
        a = math.radians(self.azimuth_deg)
        back = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        right = np.array([-math.sin(a), math.cos(a), 0.0])
        up = np.cross(back, right)
        c2w = np.eye(4)
        c2w[:3, 0] = right
        c2w[:3, 1] = up
        c2w[:3, 2] = back
        c2w[:3, 3] = self.position(centre)
        return c2w


def reference_pose(elevation_deg: float, radius: float = DEFAULT_RADIUS) -> SphericalPose:
    """The reference camera (the one that took the input photo): on -Y at ``elevation_deg``."""
    return SphericalPose(elevation_deg, REFERENCE_AZIMUTH_DEG, radius)


def spherical_from_position(position, centre=(0.0, 0.0, 0.0)) -> SphericalPose:
    """Spherical pose of a camera at ``position`` about ``centre`` (orientation ignored)."""
    d = np.asarray(position, dtype=np.float64)[:3] - np.asarray(centre, dtype=np.float64)[:3]
    radius = float(np.linalg.norm(d))
    if radius == 0.0:
        raise ValueError("the camera sits exactly at the subject centre; move it away")
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, d[2] / radius))))
    azimuth = math.degrees(math.atan2(d[1], d[0])) if math.hypot(d[0], d[1]) > 1e-12 else 0.0
    return SphericalPose(elevation, azimuth, radius)


def spherical_from_c2w(c2w, centre=(0.0, 0.0, 0.0)) -> SphericalPose:
    return spherical_from_position(np.asarray(c2w)[:3, 3], centre)


def c2w_from_blender(matrix_world) -> np.ndarray:
    """Camera-to-world from a Blender camera's ``matrix_world`` (any 4x4 sequence).

    Blender cameras already look down local -Z with +Y up, so only object scale (and
    shear from parents) is removed: the rotation is re-orthonormalised.
    """
    m = np.array(matrix_world, dtype=np.float64).reshape(4, 4)
    u, _, vt = np.linalg.svd(m[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:  # a mirrored camera: keep it right-handed
        rot[:, 2] *= -1
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = m[:3, 3]
    return out


def look_at_error_deg(c2w, centre=(0.0, 0.0, 0.0)) -> float:
    """Angle between the camera's viewing direction and the direction to ``centre``."""
    c2w = np.asarray(c2w, dtype=np.float64)
    forward = -c2w[:3, 2]
    to_centre = np.asarray(centre, dtype=np.float64) - c2w[:3, 3]
    n = np.linalg.norm(to_centre) * np.linalg.norm(forward)
    if n == 0.0:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(forward @ to_centre) / n))))


# --- reference-relative azimuths ------------------------------------------------------


def world_azimuth(relative_deg: float, reference_azimuth_deg: float = REFERENCE_AZIMUTH_DEG) -> float:
    """World azimuth of a view given relative to the reference camera, in (-180, 180]."""
    return wrap_degrees(reference_azimuth_deg + relative_deg)


def relative_azimuth(world_deg: float, reference_azimuth_deg: float = REFERENCE_AZIMUTH_DEG) -> float:
    """Azimuth relative to the reference camera, in (-180, 180]."""
    return wrap_degrees(world_deg - reference_azimuth_deg)


def wrap_degrees(angle: float) -> float:
    wrapped = math.fmod(angle, 360.0)
    if wrapped <= -180.0:
        wrapped += 360.0
    elif wrapped > 180.0:
        wrapped -= 360.0
    return wrapped


def orbit_relative_azimuths(count: int = ORBIT_VIEWS) -> list[float]:
    """SV3D's orbit: ``count`` evenly spaced steps, the last one back at the input view.

    Values are relative azimuths in [0, 360): ``360 * (i + 1) / count`` modulo 360.
    """
    return [(360.0 * (i + 1) / count) % 360.0 for i in range(count)]


# --- intrinsics and projection ----------------------------------------------------------


def focal_px(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels from the horizontal field of view (radians)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def camera_angle_x_from_lens(lens_mm: float, sensor_width_mm: float) -> float:
    """Horizontal field of view (radians) of a Blender camera with sensor fit AUTO, landscape."""
    return 2.0 * math.atan(0.5 * sensor_width_mm / lens_mm)


def project_points(c2w, camera_angle_x: float, width: int, height: int, points) -> tuple[np.ndarray, np.ndarray]:
    """Project world points to pixel coordinates (x right, y down; pixel centres at +0.5).

    Returns ``(pixels (N, 2), depth (N,))``; depth is the distance along the viewing
    axis, positive in front of the camera. Square pixels; the horizontal field of view
    spans ``width``.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    w2c = np.linalg.inv(c2w)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    f = focal_px(camera_angle_x, width)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = 0.5 * width + f * cam[:, 0] / depth
        y = 0.5 * height - f * cam[:, 1] / depth
    return np.stack([x, y], axis=1), depth


def pixel_rays(c2w, camera_angle_x: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray origins and unit directions through every pixel centre, (H, W, 3)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    f = focal_px(camera_angle_x, width)
    xs = (np.arange(width) + 0.5 - 0.5 * width) / f
    ys = -(np.arange(height) + 0.5 - 0.5 * height) / f
    gx, gy = np.meshgrid(xs, ys)
    dirs_cam = np.stack([gx, gy, -np.ones_like(gx)], axis=-1)
    dirs = dirs_cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape).copy()
    return origins, dirs
