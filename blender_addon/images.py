"""Image data-blocks from and to uint8 RGBA arrays (first row at the top).

Blender stores pixels bottom row first as floats; ``pixels.foreach_set/get`` with a
numpy buffer moves them in one call.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from .protocol.errors import Blend123Error


class ReferenceImageError(Blend123Error):
    """The reference picture cannot be used; ``hint`` says what to pick instead."""


def new_image(name: str, rgba: np.ndarray, *, pack: bool = True) -> bpy.types.Image:
    """An sRGB image data-block holding ``rgba`` ((H, W, 4) uint8, top row first), packed."""
    h, w = rgba.shape[:2]
    image = bpy.data.images.new(name, w, h, alpha=True)
    image.alpha_mode = "STRAIGHT"
    write_pixels(image, rgba, pack=pack)
    return image


def write_pixels(image: bpy.types.Image, rgba: np.ndarray, *, pack: bool = True) -> None:
    """Replace an image's pixels with ``rgba`` (same size), packed again when asked."""
    image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1], dtype=np.float32).reshape(-1) * np.float32(1.0 / 255.0))
    if pack:
        image.pack()  # generated pixels would be lost on save otherwise


def image_from_encoded(name: str, data: bytes, size: tuple[int, int], extension: str = "png") -> bpy.types.Image:
    """An image data-block from encoded bytes (PNG...), packed as is: no re-encoding.

    Blender decodes it when the image is first used.
    """
    image = bpy.data.images.new(name, size[0], size[1], alpha=True)
    image.pack(data=data, data_len=len(data))
    image.source = "FILE"
    image.filepath_raw = f"//{bpy.path.clean_name(name)}.{extension}"
    image.alpha_mode = "STRAIGHT"
    return image


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.clip(x, 0.0031308, None), 1 / 2.4) - 0.055)


def image_to_rgba(image: bpy.types.Image) -> np.ndarray:
    """(H, W, 4) uint8, top row first, display-referred (float images are sRGB-encoded)."""
    w, h = image.size
    if w == 0 or h == 0 or not image.has_data and len(image.pixels) == 0:
        raise ReferenceImageError(f"image {image.name!r} has no pixels", "check that its file exists and can be read")
    channels = image.channels
    buf = np.empty(w * h * channels, dtype=np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, channels)[::-1]
    if channels < 4:
        px = np.concatenate([px[..., :3] if channels >= 3 else np.repeat(px[..., :1], 3, -1), np.ones((h, w, 1), np.float32)], -1)
    if image.is_float and image.colorspace_settings.name not in ("Non-Color", "sRGB"):
        px = np.concatenate([_linear_to_srgb(px[..., :3]), px[..., 3:]], -1)
    return np.clip(px * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load_file(path: str | Path) -> bpy.types.Image:
    """Load an image file (raises ReferenceImageError with a hint when it cannot be read)."""
    path = Path(bpy.path.abspath(str(path)))
    if not path.is_file():
        raise ReferenceImageError(f"no image file at {path}", "pick an existing picture (PNG, JPEG, ...)")
    try:
        image = bpy.data.images.load(str(path), check_existing=True)
    except RuntimeError as exc:
        raise ReferenceImageError(f"cannot read {path.name}: {exc}", "use a PNG or JPEG picture") from None
    if image.size[0] == 0 or image.size[1] == 0:
        bpy.data.images.remove(image)
        raise ReferenceImageError(f"cannot read {path.name}: not a picture Blender understands", "use a PNG or JPEG picture")
    return image


def file_to_rgba(path: str | Path) -> np.ndarray:
    """Pixels of an image file; the temporary data-block is removed again."""
    image = load_file(path)
    users_before = image.users
    try:
        return image_to_rgba(image)
    finally:
        if users_before == 0:
            bpy.data.images.remove(image)
