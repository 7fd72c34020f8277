"""Reference images: loading, finding the subject, and framing it the way models expect.

Only numpy and Pillow: every model adapter and the command line share this, and none of it
needs a GPU or scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Alpha at or above this counts as subject.
ALPHA_THRESHOLD = 128
#: Colour distance (RGB, 0-255) within which a pixel matches the border colour, at least.
BACKGROUND_TOLERANCE = 30.0
#: Share of border pixels that must match the border colour for it to be a background.
UNIFORM_BORDER_SHARE = 0.6
#: Enclosed non-subject regions smaller than this share of the image are filled; larger
#: ones are real see-through gaps (a mug handle) and stay background.
HOLE_FRACTION = 0.005
#: Subject pieces smaller than this share of the largest piece are noise and dropped.
SPECK_FRACTION = 0.02
#: Fewer subject pixels than this cannot be framed meaningfully.
MIN_SUBJECT_PIXELS = 16

PLAIN_BACKGROUND_HINT = (
    "Use a PNG with a transparent background, or photograph the subject on a plain, "
    "evenly coloured background."
)


class ImageError(Exception):
    """An image the pipeline cannot use; ``hint`` tells the user what to do about it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})"


# --- files ------------------------------------------------------------------------------


def load_rgba(path: str | Path) -> np.ndarray:
    """Read any image Pillow understands (PNG, JPEG, ...) as (H, W, 4) uint8 RGBA."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # phone JPEGs store rotation in EXIF
            return _to_rgba(im)
    except FileNotFoundError:
        raise ImageError(f"no image at '{path}'", "Check the file name and folder.") from None
    except IsADirectoryError:
        raise ImageError(f"'{path}' is a folder, not an image", "Choose an image file.") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"'{path}' is not an image format that can be read", "Save it as PNG or JPEG."
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(f"'{path.name}' is too large to open safely", "Scale it down first.") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's truncated/corrupt-data errors
        raise ImageError(
            f"'{path.name}' is damaged and cannot be decoded ({exc})", "Re-export or re-download the image."
        ) from None


def save_rgba(path: str | Path, array: np.ndarray) -> None:
    """Write (H, W, 4) or (H, W, 3) uint8 pixels; the format follows the file suffix."""
    Image.fromarray(as_rgba(array)).save(Path(path))


def _to_rgba(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float greyscale
        grey = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" or grey.max() > 1.0 else 1.0
        im = Image.fromarray(np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.array(im.convert("RGBA"), dtype=np.uint8)


def as_rgba(image: np.ndarray) -> np.ndarray:
    """Validate an in-memory image (uint8, or float in [0, 1]; grey, RGB or RGBA) as RGBA uint8."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(
            f"Expected an image of shape (H, W, 3 or 4), got {array.shape}", "Pass RGB or RGBA pixels."
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageError(f"Unsupported pixel type {array.dtype}", "Pass uint8 or float pixels in [0, 1].")
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 3:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(array)


# --- the subject ------------------------------------------------------------------------


def subject_mask(rgba: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the subject.

    From alpha when the image has any transparent pixel; otherwise pixels matching the
    (uniform) border colour are background. Either way specks are dropped and small
    enclosed holes filled (a highlight the colour of the background), while large ones stay
    (the gap inside a mug handle).
    """
    rgba = as_rgba(rgba)
    alpha = rgba[:, :, 3]
    if (alpha < ALPHA_THRESHOLD).any():
        mask = alpha >= ALPHA_THRESHOLD
    else:
        mask = ~_border_background(rgba[:, :, :3].astype(np.float32))
    mask = _fill_small_holes(_drop_specks(mask))
    if mask.sum() < MIN_SUBJECT_PIXELS:
        if (alpha < ALPHA_THRESHOLD).all():
            raise ImageError("The image is fully transparent: there is no subject", PLAIN_BACKGROUND_HINT)
        raise ImageError("No subject found: the image is a single flat colour", PLAIN_BACKGROUND_HINT)
    return mask


def _border_background(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the border colour; enclosed ones are sorted out with the holes."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    colour = np.median(border, axis=0)
    border_distance = np.linalg.norm(border - colour, axis=1)
    # JPEG noise and gradients widen the band, but never so far that it eats the subject.
    tolerance = float(np.clip(2.5 * np.percentile(border_distance, 75), BACKGROUND_TOLERANCE, 80.0))
    if np.mean(border_distance <= tolerance) < UNIFORM_BORDER_SHARE:
        raise ImageError(
            "The background is not a plain colour, so the subject cannot be cut out", PLAIN_BACKGROUND_HINT
        )
    return np.linalg.norm(rgb - colour, axis=2) <= tolerance


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    labels = _components(mask, diagonal=True)
    sizes = np.bincount(labels[labels >= 0])
    if sizes.size == 0:
        return mask
    keep = np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max())
    return np.isin(labels, keep)


def _fill_small_holes(mask: np.ndarray) -> np.ndarray:
    labels = _components(~mask, diagonal=False)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels[labels >= 0])
    small = sizes < HOLE_FRACTION * mask.size
    small[edge[edge >= 0]] = False  # open to the border: outside, not a hole
    filled = mask.copy()
    filled[labels >= 0] |= small[labels[labels >= 0]]
    return filled


def _components(mask: np.ndarray, diagonal: bool) -> np.ndarray:
    """Connected-component labels (0..n-1, -1 outside) by min-label propagation with
    pointer jumping: a handful of whole-array passes for ordinary shapes, no scipy."""
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    shifts = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if diagonal else [])
    flat_mask = mask.ravel()
    while True:
        nxt = labels.copy()
        for dy, dx in shifts:
            ys, yd = slice(dy, None), slice(None, h - dy)
            xs, xd = (slice(dx, None), slice(None, w - dx)) if dx >= 0 else (slice(None, w + dx), slice(-dx, None))
            np.minimum(nxt[ys, xs], labels[yd, xd], out=nxt[ys, xs])  # pull from the neighbour
            np.minimum(nxt[yd, xd], labels[ys, xs], out=nxt[yd, xd])  # and push to it
        nxt[~mask] = none
        flat = nxt.ravel()
        while True:  # follow labels to their roots: each label is a pixel index <= own
            jumped = flat.copy()
            jumped[flat_mask] = flat[flat[flat_mask]]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        nxt = flat.reshape(h, w)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    roots, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(h, w)
    if roots.size and roots[-1] == none:
        dense[labels == none] = -1
    return dense


# --- framing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedImage:
    """The subject centred in a square frame, as view-synthesis models expect it."""

    rgba: np.ndarray  # (size, size, 4) uint8, transparent outside the subject
    mask: np.ndarray  # (size, size) bool, alpha >= ALPHA_THRESHOLD

    @property
    def size(self) -> int:
        return int(self.rgba.shape[0])

    def composited_on_white(self) -> np.ndarray:
        """(size, size, 3) uint8 RGB over white: the input format of Zero123 and SV3D."""
        rgb = self.rgba[:, :, :3].astype(np.float32)
        a = self.rgba[:, :, 3:].astype(np.float32) / 255.0
        return (rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


def prepare_reference(rgba: np.ndarray, size: int = 256, fill: float = 0.8) -> PreparedImage:
    """Cut out the subject, move its bounding-box centre to the frame centre and scale it so
    its larger side spans ``fill`` of the ``size`` x ``size`` frame."""
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    rgba = as_rgba(rgba)
    mask = subject_mask(rgba)
    cut = rgba.copy()
    has_alpha = (rgba[:, :, 3] < ALPHA_THRESHOLD).any()
    # Keep soft alpha edges when the image had alpha; a keyed background gets a hard one.
    cut[:, :, 3] = np.where(mask, rgba[:, :, 3] if has_alpha else 255, 0)
    cut[~mask] = 0

    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    half = 0.5 * size * max(x1 - x0, y1 - y0) / (fill * size)  # half the source box side
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    # Pillow's resize box must lie inside the image: pad with transparency first.
    pad = int(np.ceil(max(half - cx, half - cy, cx + half - cut.shape[1], cy + half - cut.shape[0], 0.0))) + 1
    padded = np.pad(cut, ((pad, pad), (pad, pad), (0, 0)))
    box = (cx - half + pad, cy - half + pad, cx + half + pad, cy + half + pad)
    # RGBA resizing in Pillow premultiplies alpha, so no dark fringes at the edge.
    framed = np.array(Image.fromarray(padded).resize((size, size), Image.Resampling.LANCZOS, box=box))
    framed_mask = framed[:, :, 3] >= ALPHA_THRESHOLD
    framed[~framed_mask] = 0  # resampling ringing below the threshold is not subject
    if framed_mask.sum() == 0:
        raise ImageError("The subject vanished when framed at this size", "Use a larger output size.")
    return PreparedImage(rgba=framed, mask=framed_mask)
