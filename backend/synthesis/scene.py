"""The subject's true place and size, and moving a view from a model's camera into the asking one.

The reference photo, its camera's pose and its lens fix where the subject is and how large:
its bounding box in the photo, seen through that lens at the reference camera's distance,
spans :attr:`SubjectInWorld.size` world units. Every model's output is placed with it, so
views of one subject agree with each other and with the scene whatever lens asks for them.

numpy only (no torch): the default model and every diffusion adapter share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blend123.protocol.camera import CameraIntrinsics, NativeCamera, SphericalPose

from ..images import as_rgba, subject_mask


@dataclass(frozen=True)
class SubjectInWorld:
    """The subject as the reference photo shows it, in world units."""

    centre: np.ndarray  # (3,) its bounding-box centre, on the plane through the origin facing the reference camera
    size: float  # its bounding box's larger side at that depth
    centre_px: tuple[float, float]  # the same centre in the photo's pixels (x right, y down)
    extent_px: float  # the bounding box's larger side in the photo's pixels
    photo: CameraIntrinsics  # the reference camera's lens over the photo's pixels
    reference: SphericalPose

    @property
    def pixel_size(self) -> float:
        """World units per photo pixel on the subject's plane."""
        return self.size / self.extent_px

    def prepared_to_photo(self, xy: np.ndarray, prepared_size: int, fill: float) -> np.ndarray:
        """Pixel coordinates in a frame made by ``prepare_reference(size=prepared_size, fill=fill)``
        (subject recentred, its larger side at ``fill``) back to the original photo's."""
        scale = self.extent_px / (fill * prepared_size)
        return (np.asarray(xy, dtype=np.float64) - 0.5 * prepared_size) * scale + np.asarray(self.centre_px)

    def native_camera_c2w(self, pose: SphericalPose, distance: float) -> np.ndarray:
        """A model's camera for ``pose``: its direction and orientation, aimed at the subject's
        centre from ``distance`` world units (the model always centres the subject)."""
        c2w = pose.to_c2w()
        c2w[:3, 3] = self.centre + c2w[:3, 2] * distance
        return c2w

    def world_scale(self, native: NativeCamera) -> float:
        """World units per model unit: the subject's true size over its size in the model's world."""
        return self.size / native.subject_size()


def subject_in_world(image: np.ndarray, reference: SphericalPose, reference_fov_deg: float) -> SubjectInWorld:
    """Where the subject of ``image`` (taken by ``reference`` with ``reference_fov_deg``
    across its width) is, and how large. Raises ``ImageError`` when there is no subject."""
    rgba = as_rgba(image)
    mask = subject_mask(rgba)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    centre_px = (0.5 * (x0 + x1), 0.5 * (y0 + y1))
    extent = float(max(x1 - x0, y1 - y0))
    h, w = mask.shape
    photo = CameraIntrinsics.from_fov_x(math.radians(reference_fov_deg), w, h)
    depth = reference.radius  # the reference camera aims at the origin
    direction = photo.directions_at([centre_px])[0]
    c2w = reference.to_c2w()
    centre = c2w[:3, :3] @ (direction * depth) + c2w[:3, 3]
    return SubjectInWorld(centre, extent * depth / photo.fx, centre_px, extent, photo, reference)


def resample_view(
    native: np.ndarray,
    native_c2w: np.ndarray,
    native_camera: CameraIntrinsics,
    ask_c2w: np.ndarray,
    ask_camera: CameraIntrinsics,
    plane_point: np.ndarray,
) -> np.ndarray:
    """A model's view (H, W, 4) float RGBA in [0, 1] seen again by the asking camera.

    The subject is taken to lie on the plane through ``plane_point`` facing the model's
    camera: each asking pixel's ray meets that plane and takes the model's colour there
    (bilinear). Where the model's frame does not reach, the result is transparent. For the
    model's own camera this is the identity; for a camera on the same line of sight it is a
    zoom, crop or pad: exactly, when the subject lies on the plane, and as a flat
    approximation otherwise.
    """
    normal = native_c2w[:3, 2]
    dirs = ask_camera.camera_directions() @ np.asarray(ask_c2w, dtype=np.float64)[:3, :3].T
    origin = np.asarray(ask_c2w, dtype=np.float64)[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float((np.asarray(plane_point) - origin) @ normal) / (dirs @ normal)
    points = origin + dirs * t[..., None]
    xy, depth = native_camera.project(native_c2w, points.reshape(-1, 3))
    valid = (t.reshape(-1) > 0) & (depth > 0) & np.isfinite(xy).all(axis=1)
    out = sample_bilinear(native, np.where(valid[:, None], xy, -1e9))
    return out.reshape(ask_camera.height, ask_camera.width, native.shape[2])


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample (H, W, 4) straight-alpha RGBA at pixel coordinates (centres at +0.5); outside the
    frame is transparent. Colours are interpolated premultiplied, so edges take no black fringe."""
    h, w = image.shape[:2]
    rgb, alpha = image[..., :3], image[..., 3:]
    premultiplied = np.concatenate([rgb * alpha, alpha], axis=-1)
    padded = np.pad(premultiplied, ((1, 1), (1, 1), (0, 0)))  # a transparent border
    x = np.clip(xy[:, 0] - 0.5 + 1.0, 0.0, w + 1.0)
    y = np.clip(xy[:, 1] - 0.5 + 1.0, 0.0, h + 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w)
    y0 = np.minimum(np.floor(y).astype(np.int64), h)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    value = top * (1 - fy) + bottom * fy
    a = value[:, 3:]
    with np.errstate(divide="ignore", invalid="ignore"):
        colour = np.where(a > 1e-8, value[:, :3] / a, 0.0)
    return np.concatenate([np.clip(colour, 0.0, 1.0), a], axis=1)
