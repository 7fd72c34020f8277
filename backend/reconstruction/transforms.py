"""Read NeRF "Blender" datasets (``transforms.json`` plus RGBA images)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image


def load_transforms(path) -> tuple[np.ndarray, np.ndarray, float]:
    """Read a ``transforms.json``: returns ``(images (N, H, W, 4) uint8, c2w (N, 4, 4), camera_angle_x)``.

    ``frames[].file_path`` is relative to the json's folder, with or without the
    ``.png`` suffix (the original NeRF datasets leave it out). Images without alpha get an
    opaque one. Raises ``FileNotFoundError`` for a missing json or image and
    ``ValueError`` naming the problem for anything malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no transforms file at {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object with 'camera_angle_x' and 'frames'")
    angle = meta.get("camera_angle_x")
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
    return np.stack(images), np.stack(c2w), float(angle)


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
