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


# --- the asking camera's full intrinsics ------------------------------------------------

#: Blender's sensor fit values.
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera's frame: what a Blender camera's lens, sensor, sensor fit, lens
    shift and render resolution decide. Pixels are square unless ``fov_x``/``fov_y`` say
    otherwise; x runs right, y down, pixel centres at +0.5.

    ``shift_x``/``shift_y`` are Blender's lens shift *as with sensor fit AUTO*: in units of
    the frame's larger side, + moves the frame right / up (the subject left / down).
    :meth:`from_blender` converts the other fits to that unit, so one field means one thing.
    """

    fov_x_deg: float  # horizontal field of view, across ``width``
    fov_y_deg: float  # vertical field of view, across ``height``
    width: int
    height: int
    shift_x: float = 0.0
    shift_y: float = 0.0

    # --- construction ---

    @classmethod
    def from_blender(
        cls,
        lens_mm: float,
        sensor_width_mm: float,
        sensor_height_mm: float,
        sensor_fit: str,
        shift_x: float,
        shift_y: float,
        res_x: int,
        res_y: int,
    ) -> "CameraIntrinsics":
        """As Blender frames a perspective camera (``BKE_camera_params_compute_viewplane``):
        AUTO fits ``sensor_width`` to the larger side; HORIZONTAL ``sensor_width`` to the
        width; VERTICAL ``sensor_height`` to the height. Shift is in units of the fitted side."""
        if sensor_fit not in SENSOR_FITS:
            raise ValueError(f"sensor_fit must be one of {SENSOR_FITS}, got {sensor_fit!r}")
        if sensor_fit == "AUTO":
            horizontal = res_x >= res_y
            sensor = sensor_width_mm
        else:
            horizontal = sensor_fit == "HORIZONTAL"
            sensor = sensor_width_mm if horizontal else sensor_height_mm
        fit_px, other_px = (res_x, res_y) if horizontal else (res_y, res_x)
        half_fit = 0.5 * sensor / lens_mm  # tan(half angle) along the fitted side
        half_other = half_fit * other_px / fit_px  # square pixels
        tan_x, tan_y = (half_fit, half_other) if horizontal else (half_other, half_fit)
        # Shift in fitted-side units -> larger-side units.
        unit = fit_px / max(res_x, res_y)
        return cls(
            math.degrees(2.0 * math.atan(tan_x)),
            math.degrees(2.0 * math.atan(tan_y)),
            int(res_x),
            int(res_y),
            shift_x * unit,
            shift_y * unit,
        )

    @classmethod
    def square(cls, fov_deg: float, size: int) -> "CameraIntrinsics":
        """A square, centred frame with ``fov_deg`` both ways (the models' own cameras)."""
        return cls(fov_deg, fov_deg, int(size), int(size))

    @classmethod
    def from_fov_x(cls, camera_angle_x: float, width: int, height: int) -> "CameraIntrinsics":
        """Square pixels, centred, horizontal FOV ``camera_angle_x`` (radians) across ``width``."""
        tan_y = math.tan(0.5 * camera_angle_x) * height / width
        return cls(math.degrees(camera_angle_x), math.degrees(2.0 * math.atan(tan_y)), int(width), int(height))

    @classmethod
    def from_focal(cls, fl_x: float, fl_y: float, cx: float, cy: float, width: int, height: int) -> "CameraIntrinsics":
        """From pixel focal lengths and principal point (``transforms.json``'s fl_x ... h)."""
        side = max(width, height)
        return cls(
            math.degrees(2.0 * math.atan(0.5 * width / fl_x)),
            math.degrees(2.0 * math.atan(0.5 * height / fl_y)),
            int(width),
            int(height),
            (0.5 * width - cx) / side,
            (cy - 0.5 * height) / side,
        )

    # --- derived values ---

    @property
    def camera_angle_x(self) -> float:
        """Horizontal field of view in radians (NeRF's ``camera_angle_x``)."""
        return math.radians(self.fov_x_deg)

    @property
    def camera_angle_y(self) -> float:
        return math.radians(self.fov_y_deg)

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def fx(self) -> float:
        return 0.5 * self.width / math.tan(0.5 * self.camera_angle_x)

    @property
    def fy(self) -> float:
        return 0.5 * self.height / math.tan(0.5 * self.camera_angle_y)

    @property
    def cx(self) -> float:
        return 0.5 * self.width - self.shift_x * max(self.width, self.height)

    @property
    def cy(self) -> float:
        return 0.5 * self.height + self.shift_y * max(self.width, self.height)

    def matrix(self) -> np.ndarray:
        """The 3x3 pixel intrinsics K (OpenCV layout; the camera's y and z flipped)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def is_simple(self) -> bool:
        """Square frame, square pixels, no shift: ``camera_angle_x`` alone describes it."""
        return self.width == self.height and abs(self.fx - self.fy) < 1e-9 * self.fx and self.shift_x == 0.0 and self.shift_y == 0.0

    def resized(self, longer_side: int) -> "CameraIntrinsics":
        """The same frame (angles, shift) at ``longer_side`` pixels along its longer side."""
        scale = longer_side / max(self.width, self.height)
        w = max(1, int(round(self.width * scale)))
        h = max(1, int(round(self.height * scale)))
        if (w, h) == (self.width, self.height):
            return self
        # Keep the angles of the frame edges: refit the FOVs to the rounded pixel counts.
        tan_x = math.tan(0.5 * self.camera_angle_x)
        tan_y = math.tan(0.5 * self.camera_angle_y)
        fov_x = math.degrees(2.0 * math.atan(tan_x * (w / (self.width * scale))))
        fov_y = math.degrees(2.0 * math.atan(tan_y * (h / (self.height * scale))))
        return CameraIntrinsics(fov_x, fov_y, w, h, self.shift_x, self.shift_y)

    def transforms_fields(self) -> dict[str, float]:
        """The keys NeRF-style tools (instant-ngp, nerfstudio) write into ``transforms.json``."""
        return {
            "camera_angle_x": self.camera_angle_x,
            "camera_angle_y": self.camera_angle_y,
            "fl_x": self.fx,
            "fl_y": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "w": self.width,
            "h": self.height,
        }

    # --- projection ---

    def project(self, c2w, points) -> tuple[np.ndarray, np.ndarray]:
        """World points to pixels (x right, y down, centres at +0.5) and depth along the axis."""
        c2w = np.asarray(c2w, dtype=np.float64)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        w2c = np.linalg.inv(c2w)
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        depth = -cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = self.cx + self.fx * cam[:, 0] / depth
            y = self.cy - self.fy * cam[:, 1] / depth
        return np.stack([x, y], axis=1), depth

    def camera_directions(self, xs=None, ys=None) -> np.ndarray:
        """Camera-space directions (z = -1) through pixel centres, (H, W, 3)."""
        xs = np.arange(self.width) + 0.5 if xs is None else np.asarray(xs, dtype=np.float64)
        ys = np.arange(self.height) + 0.5 if ys is None else np.asarray(ys, dtype=np.float64)
        gx, gy = np.meshgrid((xs - self.cx) / self.fx, -(ys - self.cy) / self.fy)
        return np.stack([gx, gy, -np.ones_like(gx)], axis=-1)

    def directions_at(self, xy) -> np.ndarray:
        """Camera-space directions (z = -1) through pixel coordinates ``xy`` (N, 2)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([(xy[:, 0] - self.cx) / self.fx, -(xy[:, 1] - self.cy) / self.fy, -np.ones(len(xy))], axis=1)

    def rays(self, c2w) -> tuple[np.ndarray, np.ndarray]:
        """World-space ray origins and unit directions through every pixel centre, (H, W, 3)."""
        c2w = np.asarray(c2w, dtype=np.float64)
        dirs = self.camera_directions() @ c2w[:3, :3].T
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        return np.broadcast_to(c2w[:3, 3], dirs.shape).copy(), dirs


@dataclass(frozen=True)
class NativeCamera:
    """The camera a view-synthesis model was trained with, as ``hello`` advertises it.

    ``None`` means "any": the model renders in whatever lens or distance it is asked for
    (the built-in default model). Distances are in the model's own world units, where the
    subject spans ``fill`` of the frame's side seen from ``radius``.
    """

    fov_deg: float | None = None  # the lens of its outputs (and its expected input)
    fill: float | None = None  # share of the frame's side the subject's larger side spans in its input
    radius: float | None = None  # distance its input view is taken to be seen from
    min_radius: float | None = None  # the distance range its outputs can take
    max_radius: float | None = None
    resolution: int | None = None  # its square output side, pixels

    def subject_size(self) -> float:
        """The subject's larger side in the model's world units (its input framing)."""
        if self.fov_deg is None or self.fill is None or self.radius is None:
            raise ValueError("a model that takes any camera has no world of its own")
        return self.fill * 2.0 * self.radius * math.tan(math.radians(self.fov_deg) / 2.0)
