"""Degraded variants of the rendered input views: what view-synthesis models hand over.

SV3D's and Zero123's samplers (and most NeRF-style datasets) give RGB on white, without
alpha, with exposure and colour drifting a little from frame to frame and silhouettes that
disagree by a pixel or two. :func:`degrade_views` makes that out of clean RGBA renders,
deterministically per object:

- each view is shifted by 1 to 2 px in a random direction (bilinear, alpha with it): the
  silhouettes and the texture disagree between views as generated ones do;
- composited on white and the alpha dropped;
- a per-view gain in linear light: exposure ``1 +- EXPOSURE`` times a per-channel white
  balance ``1 +- WHITE_BALANCE`` (uniform), applied to the whole frame and clipped, so the
  white background stays white where the gain brightens and turns grey where it darkens;
- Gaussian noise of ``NOISE`` (sRGB, 0-255) and 8-bit rounding.

:func:`write_degraded` writes them as RGB PNGs with a ``transforms.json`` beside the clean
ones (``<object>/degraded/``), so the benchmark reads them through the same loader a user's
dataset goes through.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

EXPOSURE = 0.08
WHITE_BALANCE = 0.04
NOISE = 2.0
SHIFT_PX = (1.0, 2.0)
VERSION = 1


@dataclass(frozen=True)
class Degradation:
    """What was done to one view."""

    shift: tuple[float, float]  # (dx, dy) pixels
    gain: tuple[float, float, float]  # linear-light gain per channel


def degrade_views(images: np.ndarray, seed: int) -> tuple[np.ndarray, list[Degradation]]:
    """(N, H, W, 4) uint8 RGBA renders -> (N, H, W, 3) uint8 RGB on white, degraded."""
    rng = np.random.default_rng(seed)
    out, made = [], []
    for rgba in images:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        length = rng.uniform(*SHIFT_PX)
        shift = (float(length * np.cos(angle)), float(length * np.sin(angle)))
        gain = rng.uniform(1.0 - EXPOSURE, 1.0 + EXPOSURE) * rng.uniform(1.0 - WHITE_BALANCE, 1.0 + WHITE_BALANCE, 3)
        moved = _shifted(rgba.astype(np.float64) / 255.0, shift)
        a = moved[..., 3:4]
        on_white = _to_linear(moved[..., :3]) * a + (1.0 - a)  # straight colour over white, in linear light
        frame = _to_srgb(np.clip(on_white * gain, 0.0, 1.0)) * 255.0
        frame += rng.normal(0.0, NOISE, frame.shape)
        out.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        made.append(Degradation(shift, tuple(float(g) for g in gain)))
    return np.stack(out), made


def write_degraded(object_folder: Path) -> Path:
    """Write ``<object>/degraded/`` from ``<object>/input/`` (once per ``VERSION``); returns
    its ``transforms.json``."""
    source = object_folder / "input" / "transforms.json"
    target = object_folder / "degraded"
    meta_path = target / "transforms.json"
    key = f"{VERSION}:{zlib.crc32(source.read_bytes())}"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("degraded_key") == key:
        return meta_path
    meta = json.loads(source.read_text())
    images = np.stack([np.asarray(Image.open(source.parent / f["file_path"]).convert("RGBA")) for f in meta["frames"]])
    degraded, made = degrade_views(images, zlib.crc32(object_folder.name.encode()))
    target.mkdir(parents=True, exist_ok=True)
    for frame, image, done in zip(meta["frames"], degraded, made):
        Image.fromarray(image, "RGB").save(target / frame["file_path"])
        frame["degradation"] = {"shift_px": done.shift, "gain": done.gain}
        frame.pop("albedo_path", None)
    meta["degraded_key"] = key
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta_path


def _shifted(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels, bilinear, transparent where nothing moves in."""
    from scipy import ndimage

    premult = image.copy()
    premult[..., :3] *= premult[..., 3:4]
    moved = np.stack(
        [ndimage.shift(premult[..., c], (shift[1], shift[0]), order=1, mode="constant", cval=0.0) for c in range(4)],
        axis=-1,
    )
    alpha = moved[..., 3:4]
    moved[..., :3] = np.where(alpha > 1e-6, moved[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.clip(moved, 0.0, 1.0)


def _to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)
