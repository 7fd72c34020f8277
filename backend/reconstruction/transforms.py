"""Read NeRF "Blender" datasets (``transforms.json`` plus RGBA images).

Intrinsics are read as NeRF tools write them: ``fl_x, fl_y, cx, cy, w, h`` (instant-ngp,
nerfstudio) when present, else ``camera_angle_x`` across the image width, square pixels,
centred (the original Blender datasets).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from blend123.protocol.camera import CameraIntrinsics

from .masks import masked_views


def load_transforms(path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(images, c2w, camera_angle_x)`` of a ``transforms.json``; see :func:`load_transforms_camera`."""
    images, c2w, camera = load_transforms_camera(path)
    return images, c2w, camera.camera_angle_x


def load_transforms_camera(path) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
    """Read a ``transforms.json``: returns ``(images (N, H, W, 4) uint8, c2w (N, 4, 4), intrinsics)``.

    ``path`` may also be the folder that holds ``transforms.json``. ``frames[].file_path``
    is relative to the json's folder, with or without the
    ``.png`` suffix (the original NeRF datasets leave it out). Images without alpha (RGB, or
    alpha that is opaque everywhere), as view-synthesis models and many datasets give them,
    have their subject keyed out of the plain background (:mod:`.masks`); a frame where that
    fails is dropped with a logged warning, never read as all subject, and fewer than two
    frames left raise :class:`~.masks.MaskNotFound`. Raises ``FileNotFoundError`` for a
    missing json or image and ``ValueError`` naming the problem for anything malformed.
    """
    path = Path(path)
    if path.is_dir() and (path / "transforms.json").is_file():  # the folder `blend123 orbit` wrote
        path = path / "transforms.json"
    if not path.is_file():
        raise FileNotFoundError(f"no transforms file at {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with 'camera_angle_x' and 'frames'")
    angle = meta.get("camera_angle_x")
    if "fl_x" in meta and angle is None:
        angle = 1.0  # unused: the pixel focal lengths say it all
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0.0 < angle < math.pi:
        raise ValueError(f"{path}: 'camera_angle_x' must be a number in (0, pi) radians, got {angle!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: 'frames' must be a non-empty list")

    images, c2w = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise ValueError(f"{path}: frame {i} needs 'file_path' and 'transform_matrix'")
        c2w.append(_matrix(frame["transform_matrix"], f"{path}: frame {i} 'transform_matrix'"))
        images.append(_image(path.parent, frame["file_path"], f"{path}: frame {i}"))
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise ValueError(f"{path}: images differ in size: {sorted(s[:2] for s in sizes)}")
    h, w = images[0].shape[:2]
    images, kept, _ = masked_views(np.stack(images), min_views=2, what=f"frames of {path.name}")
    return images, np.stack(c2w)[kept], _intrinsics(meta, float(angle), w, h, path)


def _intrinsics(meta: dict, angle: float, width: int, height: int, path: Path) -> CameraIntrinsics:
    keys = ("fl_x", "fl_y", "cx", "cy")
    if not any(k in meta for k in keys):
        return CameraIntrinsics.from_fov_x(angle, width, height)
    values = {}
    for k in keys:
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{path}: give all of {', '.join(keys)} as numbers, or none ('{k}' is {v!r})")
        values[k] = float(v)
    # The pixel values are for a frame of w x h; images of another size scale them.
    w0, h0 = meta.get("w", width), meta.get("h", height)
    if isinstance(w0, bool) or isinstance(h0, bool) or not isinstance(w0, (int, float)) or not isinstance(h0, (int, float)) or w0 <= 0 or h0 <= 0:
        raise ValueError(f"{path}: 'w' and 'h' must be positive numbers, got {w0!r} and {h0!r}")
    sx, sy = width / w0, height / h0
    if values["fl_x"] <= 0 or values["fl_y"] <= 0:
        raise ValueError(f"{path}: 'fl_x' and 'fl_y' must be positive")
    return CameraIntrinsics.from_focal(values["fl_x"] * sx, values["fl_y"] * sy, values["cx"] * sx, values["cy"] * sy, width, height)


def _matrix(value, where: str) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not a numeric 4x4 matrix") from exc
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"{where} must be a finite 4x4 matrix, got shape {m.shape}")
    return m


def _image(folder: Path, file_path, where: str) -> np.ndarray:
    if not isinstance(file_path, str) or not file_path:
        raise ValueError(f"{where}: 'file_path' must be a non-empty string")
    candidate = folder / file_path
    if not candidate.is_file():
        candidate = candidate.with_name(candidate.name + ".png")
    if not candidate.is_file():
        raise FileNotFoundError(f"{where}: image {folder / file_path} not found")
    try:
        with Image.open(candidate) as im:
            return np.asarray(im.convert("RGBA"), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{where}: cannot read image {candidate}: {exc}") from exc
