"""Scene frame <-> backend frame, camera frames and image planes: numpy only, no bpy.

The backend works about the subject centre at the origin with the reference camera at
world azimuth -90 deg (see ``protocol/camera.py``). A scene has its own subject centre
``C`` and reference camera ``R`` anywhere. :class:`SceneFrame` holds the rigid transform
``T = Translation(C) @ RotationZ(azimuth(R about C) + 90 deg)`` that takes backend
coordinates to the scene, and turns scene cameras into backend requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..protocol.camera import REFERENCE_AZIMUTH_DEG, CameraIntrinsics, spherical_from_position, wrap_degrees

#: Sensor fit values, as Blender names them.
AUTO, HORIZONTAL, VERTICAL = "AUTO", "HORIZONTAL", "VERTICAL"


@dataclass(frozen=True)
class CameraOptics:
    """What decides a Blender camera's frame: lens, sensor, fit, shift and resolution."""

    lens_mm: float = 50.0
    sensor_width_mm: float = 36.0
    sensor_height_mm: float = 24.0
    sensor_fit: str = AUTO
    res_x: int = 1920
    res_y: int = 1080
    shift_x: float = 0.0
    shift_y: float = 0.0

    def fit_axis(self) -> str:
        """The axis the sensor size applies to: HORIZONTAL or VERTICAL."""
        if self.sensor_fit == AUTO:
            return HORIZONTAL if self.res_x >= self.res_y else VERTICAL
        return self.sensor_fit

    def fit_sensor_mm(self) -> float:
        # Blender uses sensor_width for AUTO on either axis, sensor_height only for VERTICAL.
        return self.sensor_height_mm if self.sensor_fit == VERTICAL else self.sensor_width_mm

    def frame_size(self, distance: float) -> tuple[float, float]:
        """Width and height of the camera's frame at ``distance`` in front of it."""
        fit = distance * self.fit_sensor_mm() / self.lens_mm
        aspect = self.res_x / self.res_y
        if self.fit_axis() == HORIZONTAL:
            return fit, fit / aspect
        return fit * aspect, fit

    def frame_offset(self, distance: float) -> tuple[float, float]:
        """Centre of the frame at ``distance`` (lens shift is in units of the fit-axis size)."""
        w, h = self.frame_size(distance)
        size = w if self.fit_axis() == HORIZONTAL else h
        return self.shift_x * size, self.shift_y * size

    def horizontal_fov_deg(self) -> float:
        w, _ = self.frame_size(1.0)
        return math.degrees(2.0 * math.atan(0.5 * w))

    def intrinsics(self) -> CameraIntrinsics:
        """The protocol's description of this frame (what an asking camera sends)."""
        return CameraIntrinsics.from_blender(
            self.lens_mm, self.sensor_width_mm, self.sensor_height_mm, self.sensor_fit, self.shift_x, self.shift_y, self.res_x, self.res_y
        )

    def fit_fov_deg(self) -> float:
        """Field of view along the frame's longer (fit) axis."""
        w, h = self.frame_size(1.0)
        return math.degrees(2.0 * math.atan(0.5 * max(w, h)))


@dataclass(frozen=True)
class PlaneGeometry:
    """An image plane in its camera's local frame (camera looks down -Z, +Y up)."""

    width: float
    height: float
    centre: tuple[float, float, float]

    def corners(self) -> np.ndarray:
        """(4, 3) corners: bottom-left, bottom-right, top-right, top-left (camera local)."""
        cx, cy, cz = self.centre
        hw, hh = 0.5 * self.width, 0.5 * self.height
        return np.array([[cx - hw, cy - hh, cz], [cx + hw, cy - hh, cz], [cx + hw, cy + hh, cz], [cx - hw, cy + hh, cz]])


def image_plane(optics: CameraOptics, distance: float, image_aspect: float = 1.0) -> PlaneGeometry:
    """A plane at ``distance`` that covers the camera's frame with an image's aspect.

    With the image's aspect equal to the frame's (a square render for the square generated
    views) the plane fills the frame exactly. Otherwise it keeps the image undistorted and
    fills the frame's longer side, overflowing the shorter one ("cover"), so no part of the
    frame is left empty and the picture is never stretched.
    """
    w, h = optics.frame_size(distance)
    if w / h >= image_aspect:
        pw, ph = w, w / image_aspect
    else:
        pw, ph = h * image_aspect, h
    ox, oy = optics.frame_offset(distance)
    return PlaneGeometry(pw, ph, (ox, oy, -distance))


def plane_distance(camera_to_centre: float, fraction: float, clip_start: float) -> float:
    """Where to put a camera's image plane: a fraction of its distance to the subject."""
    d = max(1e-4, fraction) * max(camera_to_centre, 1e-4)
    return max(d, 1.05 * clip_start)


def rotation_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    m = np.eye(4)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return m


@dataclass(frozen=True)
class ScenePose:
    """A camera's request pose: absolute elevation, azimuth relative to R, radius."""

    elevation: float
    azimuth: float
    radius: float


@dataclass(frozen=True)
class SceneFrame:
    """The subject centre and the reference camera's spherical pose about it."""

    centre: tuple[float, float, float]
    reference_azimuth: float  # world azimuth of R about C, degrees
    reference_elevation: float
    radius: float  # |R - C|
    fov_deg: float  # R's horizontal field of view

    @classmethod
    def from_reference(cls, centre, reference_position, fov_deg: float) -> SceneFrame:
        """Raises ValueError (with what to do) when R sits on C or straight above/below it."""
        pose = spherical_from_position(reference_position, centre)
        if abs(pose.elevation_deg) > 89.0:
            raise ValueError("the reference camera is straight above or below the subject; tilt it so it sees the subject from the side")
        c = tuple(float(x) for x in np.asarray(centre, dtype=np.float64)[:3])
        return cls(c, pose.azimuth_deg, pose.elevation_deg, pose.radius, float(fov_deg))

    def to_scene(self) -> np.ndarray:
        """4x4 taking backend coordinates (subject at the origin, R at -90 deg) to the scene."""
        t = np.eye(4)
        t[:3, 3] = self.centre
        return t @ rotation_z(self.reference_azimuth - REFERENCE_AZIMUTH_DEG)

    def pose_of(self, position) -> ScenePose:
        """Request pose of a scene camera at ``position``."""
        pose = spherical_from_position(position, self.centre)
        return ScenePose(pose.elevation_deg, wrap_degrees(pose.azimuth_deg - self.reference_azimuth), pose.radius)

    def c2w_to_scene(self, c2w) -> np.ndarray:
        return self.to_scene() @ np.asarray(c2w, dtype=np.float64)

    def points_to_scene(self, points) -> np.ndarray:
        t = self.to_scene()
        return np.asarray(points, dtype=np.float64) @ t[:3, :3].T + t[:3, 3]

    def as_list(self) -> list[float]:
        """Flat form for storing on a collection or scene (custom properties)."""
        return [*self.centre, self.reference_azimuth, self.reference_elevation, self.radius, self.fov_deg]

    @classmethod
    def from_list(cls, values) -> SceneFrame:
        v = [float(x) for x in values]
        if len(v) != 7:
            raise ValueError(f"a stored scene frame has 7 numbers, got {len(v)}")
        return cls((v[0], v[1], v[2]), v[3], v[4], v[5], v[6])


def look_at_matrix(position, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 of a camera at ``position`` looking at ``target`` (Z up)."""
    p = np.asarray(position, dtype=np.float64)
    back = p - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    if np.linalg.norm(right) < 1e-9:  # looking straight down or up
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, p
    return m


def lens_for_fov(fov_deg: float, sensor_mm: float = 36.0) -> float:
    """Focal length (mm) giving ``fov_deg`` across ``sensor_mm``."""
    return 0.5 * sensor_mm / math.tan(math.radians(fov_deg) / 2.0)
