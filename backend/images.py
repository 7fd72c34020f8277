"""Reference images: loading, finding the subject, and framing it the way models expect.

numpy and Pillow (and scipy's labelling for masks): every model adapter and the command
line share this, and none of it needs a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from blend123.protocol.errors import Blend123Error

#: Alpha at or above this counts as subject.
ALPHA_THRESHOLD = 128
#: Colour distance (RGB, 0-255) within which a pixel matches the border colour, at least.
BACKGROUND_TOLERANCE = 30.0
#: The widest colour band (RGB distance) that still counts as one background colour.
MAX_TOLERANCE = 80.0
#: Share of border pixels that must match the border colour for it to be a background: the
#: subject may run along a fifth of the border (cut off by the frame), a background of
#: colour blobs does more.
UNIFORM_BORDER_SHARE = 0.8
#: A foreground piece covering this share of the border runs along it (not a graze).
BORDER_CONTACT_SHARE = 0.01
#: Pieces at least this share of the largest one are separate objects, not details.
SEPARATE_PIECE_FRACTION = 0.1
#: Masks are computed on a copy at most this many pixels on its longer side.
MASK_MAX_SIDE = 512
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


class ImageError(Blend123Error):
    """An image the pipeline cannot use; ``hint`` tells the user what to do about it."""


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


def save_rgba(path: str | Path, array: np.ndarray, *, fast: bool = False) -> None:
    """Write (H, W, 4) or (H, W, 3) uint8 pixels; the format follows the file suffix.

    ``fast`` trades a third more bytes for a PNG written ~3x faster: for a job's own views,
    written once per view while the user waits and read back at most once.
    """
    options = {"compress_level": 1} if fast and Path(path).suffix.lower() == ".png" else {}
    Image.fromarray(as_rgba(array)).save(Path(path), **options)


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


def subject_mask(rgba: np.ndarray, *, matte: bool = False) -> np.ndarray:
    """Boolean (H, W) mask of the subject.

    From alpha when the image has any transparent pixel; otherwise pixels matching the
    (plain) border colour are background. A photo whose border is not a plain colour is
    refused, or with ``matte`` cut out by the optional matting model (``blend123[matting]``).
    Either way specks are dropped and small enclosed holes filled (a highlight the colour
    of the background), while large ones stay (the gap inside a mug handle).

    Large photos are analysed at most ``MASK_MAX_SIDE`` pixels wide: the component passes
    grow faster than the pixel count (a 4000 x 4000 photo took minutes), and the framing
    that follows never needs more.
    """
    rgba = as_rgba(rgba)
    has_alpha = bool((rgba[:, :, 3] < ALPHA_THRESHOLD).any())
    small = _downscaled(rgba, MASK_MAX_SIDE)
    mask, edge_rule = _subject_mask_small(small, has_alpha, matte)
    if small.shape == rgba.shape:
        return mask
    return _upscaled_mask(mask, rgba, edge_rule)


@dataclass(frozen=True)
class _EdgeRule:
    """How a full-resolution pixel near the edge of the small mask is classified."""

    colour: np.ndarray | None = None  # keyed: the background colour; None: by alpha
    tolerance: float = 0.0

    def subject(self, pixels: np.ndarray) -> np.ndarray:
        if self.colour is None:
            return pixels[:, 3] >= ALPHA_THRESHOLD
        return np.linalg.norm(pixels[:, :3].astype(np.float32) - self.colour, axis=1) > self.tolerance


def _subject_mask_small(rgba: np.ndarray, has_alpha: bool, matte: bool) -> tuple[np.ndarray, _EdgeRule | None]:
    alpha = rgba[:, :, 3]
    rule: _EdgeRule | None = None
    if has_alpha:
        mask, rule = _fill_small_holes(_drop_specks(alpha >= ALPHA_THRESHOLD)), _EdgeRule()
    else:
        try:
            mask, colour, tolerance = _keyed_mask(rgba[:, :, :3].astype(np.float32))
            rule = _EdgeRule(colour, tolerance)
        except BusyBackgroundError:
            from . import matting  # optional: rembg + a local ONNX model

            if not matte or matting.missing_hint():
                raise  # its hint names the extra and where the model goes
            mask = _fill_small_holes(_drop_specks(matting.matte_subject(rgba[:, :, :3])))
    if mask.sum() < MIN_SUBJECT_PIXELS:
        if has_alpha and (alpha < ALPHA_THRESHOLD).all():
            raise ImageError("The image is fully transparent: there is no subject", PLAIN_BACKGROUND_HINT)
        raise ImageError("No subject found: the image is a single flat colour", PLAIN_BACKGROUND_HINT)
    return mask, rule


def _downscaled(rgba: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgba.shape[:2]
    if max(h, w) <= max_side:
        return rgba
    # Averaging whole blocks of pixels: no aliasing of noise, and much faster than a
    # resampling filter (nor premultiplied alpha, which only the mask reads here).
    factor = -(-max(h, w) // max_side)
    return np.asarray(Image.fromarray(rgba).reduce(factor))


def _upscaled_mask(mask: np.ndarray, rgba: np.ndarray, rule: _EdgeRule | None) -> np.ndarray:
    """The small mask at full size, its edge decided at full resolution.

    Inside the upscaled mask (coverage 255) is subject, holes filled; outside (0) is not;
    the thin band between is classified pixel by pixel as the small mask was (alpha or the
    key colour), so edges are neither blocky nor shifted by the downscale's blending. A
    matte has no per-pixel rule: there the bilinear coverage is cut halfway.
    """
    h, w = rgba.shape[:2]
    coverage = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR))
    if rule is None:
        return coverage >= 128
    full = coverage == 255
    band = np.nonzero((coverage > 0) & ~full)
    full[band] = rule.subject(rgba[band])
    return full


class BusyBackgroundError(ImageError):
    """The background is not a plain colour (a photo): keying cannot cut the subject out."""


def _busy(detail: str) -> BusyBackgroundError:
    return BusyBackgroundError(
        f"The background is not a plain colour ({detail}), so the subject cannot be cut out", busy_background_hint()
    )


def busy_background_hint() -> str:
    """What to do about a photo on a busy background; names the matting extra when it is missing."""
    from .matting import missing_hint  # lazy: matting imports this module

    extra = missing_hint()
    return PLAIN_BACKGROUND_HINT + (f" Or cut it out automatically: {extra}" if extra else "")


def _keyed_mask(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The subject on a plain background: everything not of the border colour, checked;
    with that colour and its tolerance.

    A background of a few large colour blobs can have a dominant colour along most of the
    border, so besides that share the rest of the border must be the subject's: foreground
    touching the border may come from one large piece only, and then no other large piece
    may stand apart from it.
    """
    background, colour, tolerance = _border_background(rgb)
    foreground = ~background
    labels = _components(foreground, diagonal=True)
    sizes = np.bincount(labels[labels >= 0])
    if sizes.size == 0:
        return foreground, colour, tolerance
    kept = sizes >= SPECK_FRACTION * sizes.max()
    edge = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    touching = np.bincount(edge[edge >= 0], minlength=sizes.size)
    # Grazing the frame with a few pixels is fine; a piece along it is not background.
    on_border = np.flatnonzero(kept & (touching >= BORDER_CONTACT_SHARE * edge.size))
    large = np.flatnonzero(sizes >= SEPARATE_PIECE_FRACTION * sizes.max())
    if on_border.size > 1:
        raise _busy(f"{on_border.size} separate regions run along the image border")
    if on_border.size == 1 and large.size > 1:
        raise _busy("a large region along the image border stands apart from the subject")
    mask = np.isin(labels, np.flatnonzero(kept))  # specks dropped
    return _fill_small_holes(mask), colour, tolerance


def _border_background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixels of the border colour (enclosed ones are sorted out with the holes), the
    colour and the tolerance."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    colour = np.median(border, axis=0)
    border_distance = np.linalg.norm(border - colour, axis=1)
    # JPEG noise and gradients widen the band, but never so far that it eats the subject;
    # measured on the pixels near the border colour, so blobs of other colours cannot widen it.
    near = border_distance[border_distance <= MAX_TOLERANCE]
    spread = np.percentile(near, 75) if near.size else MAX_TOLERANCE
    tolerance = float(np.clip(2.5 * spread, BACKGROUND_TOLERANCE, MAX_TOLERANCE))
    share = float(np.mean(border_distance <= tolerance))
    if share < UNIFORM_BORDER_SHARE:
        raise _busy(f"only {share:.0%} of the border is of one colour")
    return np.linalg.norm(rgb - colour, axis=2) <= tolerance, colour, tolerance


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
    """Connected-component labels (0..n-1 in raster order of first pixel, -1 outside)."""
    from scipy import ndimage  # lazy: only keying and cleaning masks need it

    structure = np.ones((3, 3), bool) if diagonal else ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(mask, structure=structure)
    return labels.astype(np.int64) - 1


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
    mask = subject_mask(rgba, matte=True)
    has_alpha = bool((rgba[:, :, 3] < ALPHA_THRESHOLD).any())

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    half = 0.5 * size * max(x1 - x0, y1 - y0) / (fill * size)  # half the source box side
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    # Only the source box and the resampling filter's reach around it are cut out: copying
    # and padding a whole 4000 px photo costs more than the framing itself. Outside the
    # image the window is transparent, as Pillow's resize box must lie inside the image.
    margin = int(np.ceil(3.0 * max(2.0 * half / size, 1.0))) + 2  # Lanczos reaches 3 scaled pixels
    wx0, wy0 = int(np.floor(cx - half)) - margin, int(np.floor(cy - half)) - margin
    wx1, wy1 = int(np.ceil(cx + half)) + margin, int(np.ceil(cy + half)) + margin
    window = np.zeros((wy1 - wy0, wx1 - wx0, 4), np.uint8)
    sx0, sy0, sx1, sy1 = max(wx0, 0), max(wy0, 0), min(wx1, rgba.shape[1]), min(wy1, rgba.shape[0])
    source, inside = rgba[sy0:sy1, sx0:sx1], mask[sy0:sy1, sx0:sx1]
    part = window[sy0 - wy0 : sy1 - wy0, sx0 - wx0 : sx1 - wx0]
    part[inside] = source[inside]
    # Keep soft alpha edges when the image had alpha; a keyed background gets a hard one.
    if not has_alpha:
        part[inside, 3] = 255
    box = (cx - half - wx0, cy - half - wy0, cx + half - wx0, cy + half - wy0)
    padded = window
    # RGBA resizing in Pillow premultiplies alpha, so no dark fringes at the edge.
    framed = np.array(Image.fromarray(padded).resize((size, size), Image.Resampling.LANCZOS, box=box))
    framed_mask = framed[:, :, 3] >= ALPHA_THRESHOLD
    framed[~framed_mask] = 0  # resampling ringing below the threshold is not subject
    if framed_mask.sum() == 0:
        raise ImageError("The subject vanished when framed at this size", "Use a larger output size.")
    return PreparedImage(rgba=framed, mask=framed_mask)
