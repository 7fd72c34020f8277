"""Independent references for the adapters' camera handling: a centred test subject, a
recording wrapper around a real pipeline, and the zoom a native view must undergo."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


class RecordingPipe:
    """The real pipeline, with the keyword arguments of every call kept for inspection."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self._pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def centred_disc(size: int = 64) -> np.ndarray:
    """A subject whose bounding box is centred exactly: it sits on the reference camera's axis."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = (xx - size / 2) ** 2 + ((yy - size / 2) / 0.8) ** 2 <= (0.3 * size) ** 2
    img = np.zeros((size, size, 4), np.uint8)
    img[..., 0] = np.where(xx < size / 2, 220, 30)
    img[..., 1] = (yy * 3).astype(np.uint8)
    img[..., 2] = np.where(xx < size / 2, 30, 220)
    img[..., 3] = np.where(inside, 255, 0)
    return img


def zoomed_native_view(rgba: np.ndarray, camera, native, native_radius: float, image: np.ndarray,
                       reference_radius: float, reference_fov_deg: float, pose_radius: float) -> tuple[np.ndarray, float]:
    """The model's keyed view ``rgba`` (S, S, 4) as the asking ``camera`` on the same line of
    sight sees it, for a subject centred in ``image``: an affine zoom, sampled bilinearly with
    scipy (premultiplied colours). Returns (premultiplied RGBA, zoom factor)."""
    h, w = image.shape[:2]
    columns = np.nonzero(image[..., 3].any(axis=0))[0]
    rows = np.nonzero(image[..., 3].any(axis=1))[0]
    extent = max(columns[-1] + 1 - columns[0], rows[-1] + 1 - rows[0])
    true_size = extent / w * 2.0 * reference_radius * math.tan(math.radians(reference_fov_deg / 2))
    model_size = native.fill * 2.0 * native.radius * math.tan(math.radians(native.fov_deg / 2))
    distance = native_radius * true_size / model_size  # the model's camera, in world units
    s = rgba.shape[0]
    f_native = 0.5 * s / math.tan(math.radians(native.fov_deg / 2))
    zoom = f_native * pose_radius / distance
    u = (np.arange(camera.width) + 0.5 - camera.cx) / camera.fx * zoom + 0.5 * s - 0.5
    v = (np.arange(camera.height) + 0.5 - camera.cy) / camera.fy * zoom + 0.5 * s - 0.5
    gv, gu = np.meshgrid(v, u, indexing="ij")
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    out = np.stack([ndimage.map_coordinates(premultiplied[..., c], [gv, gu], order=1, mode="grid-constant") for c in range(4)], -1)
    return out, zoom
