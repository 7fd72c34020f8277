"""The subject of a view that comes without alpha: keyed out of a plain background.

View-synthesis models (SV3D, Zero123) and most NeRF-style datasets hand over RGB frames
with the subject on white (or another plain colour). :func:`key_view` finds the subject:

- the background colour is the median of the frame's border, and the tolerance follows
  the border's own noise (robust spread), so noisy or slightly off-white backgrounds key
  as well as clean ones;
- background is what matches that colour and is connected to the border; enclosed
  regions of the background colour count as see-through gaps (a mug handle) only when
  they are large, so a clipped highlight inside the subject stays subject; specks of
  noise are dropped;
- along the outline, alpha is solved from the known background and the nearest inner
  subject colour (``p = a f + (1 - a) b``), and the colour is un-mixed from the
  background, so edge pixels are neither white-fringed nor counted as fully covered.

A frame whose key fails (a border that is not one plain colour, no subject, a subject
that fills the frame) is reported in :class:`KeyReport` with the reason, never taken as
all-opaque.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from blend123.protocol.errors import Blend123Error

log = logging.getLogger(__name__)

#: Smallest colour distance (RGB, 0-255) that separates subject from background.
MIN_TOLERANCE = 12.0
#: Largest tolerance: a border noisier than this is not a plain background.
MAX_TOLERANCE = 60.0
#: Tolerance in units of the border's robust noise (per-channel sigma * sqrt(3)).
NOISE_FACTOR = 4.0
#: Share of the border that must match the background colour.
PLAIN_BORDER_SHARE = 0.8
#: Enclosed background-coloured regions smaller than this share of the subject (or than
#: ``MIN_HOLE_PIXELS``) are filled: a highlight clipped to white, not a gap.
HOLE_SHARE = 0.01
MIN_HOLE_PIXELS = 16
#: Subject pieces smaller than this share of the largest piece are noise.
SPECK_SHARE = 0.02
#: A subject covering less than this share of the frame (or fewer pixels than
#: ``MIN_SUBJECT_PIXELS``) is not found; one covering more than ``MAX_SUBJECT_SHARE``
#: fills the frame (no background to key).
MIN_SUBJECT_SHARE = 0.0005
MIN_SUBJECT_PIXELS = 16
MAX_SUBJECT_SHARE = 0.95

NO_MASK_HINT = (
    "give the views an alpha channel, or render them on a plain (white) background with the "
    "whole subject inside the frame"
)


class MaskNotFound(Blend123Error):
    """No subject mask could be found for enough views."""


@dataclass(frozen=True)
class KeyReport:
    """What keying found in one view."""

    found: bool
    reason: str = ""  # why not, when not found
    background: tuple[float, float, float] | None = None  # RGB 0-255
    tolerance: float = 0.0  # RGB distance
    coverage: float = 0.0  # share of the frame that is subject

    def describe(self, index: int | None = None) -> str:
        name = "view" if index is None else f"view {index}"
        if self.found:
            bg = ", ".join(f"{c:.0f}" for c in self.background or ())
            return f"{name}: keyed out of a plain background ({bg}), subject {self.coverage:.1%} of the frame"
        return f"{name}: no subject mask ({self.reason})"


def has_alpha(rgba: np.ndarray, threshold: int = 127) -> bool:
    """True when an (H, W, 4) image's alpha marks some pixel as background."""
    return bool(rgba.shape[-1] == 4 and (rgba[..., 3] <= threshold).any())


def key_view(rgb: np.ndarray) -> tuple[np.ndarray | None, KeyReport]:
    """Key the subject of an (H, W, 3|4) uint8 frame on a plain background (alpha ignored).

    Returns ``(rgba, report)``: (H, W, 4) uint8 with straight colour and a soft alpha at the
    outline, or ``None`` with the reason in the report.
    """
    rgb = np.asarray(rgb)[..., :3].astype(np.float32)
    h, w = rgb.shape[:2]
    if h < 8 or w < 8:
        return None, KeyReport(False, f"the frame is too small ({w} x {h})")
    background, tolerance, share = _border_colour(rgb)
    if tolerance is None or share < PLAIN_BORDER_SHARE:
        why = "noise too high" if tolerance is None else f"only {share:.0%} of it matches"
        return _wide_key(rgb, background, f"the frame's border is not one plain colour ({why})")
    distance = np.linalg.norm(rgb - background, axis=2)
    subject = _subject(distance > tolerance)
    count = int(subject.sum())
    coverage = count / subject.size
    bg = tuple(float(c) for c in background)
    if count < max(MIN_SUBJECT_PIXELS, MIN_SUBJECT_SHARE * subject.size):
        return None, KeyReport(False, "no subject: the frame is all background colour", bg, tolerance, coverage)
    if coverage > MAX_SUBJECT_SHARE:
        return None, KeyReport(False, "the subject fills the frame: there is no background to key", bg, tolerance, coverage)
    alpha, colour = _soft_edges(rgb, subject, background, tolerance)
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    out[..., 3] = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return out, KeyReport(True, "", bg, tolerance, coverage)


def _wide_key(rgb: np.ndarray, background: np.ndarray, reason: str) -> tuple[np.ndarray | None, KeyReport]:
    """The reference photos' keyer (:func:`blend123.backend.images.subject_mask`: wider colour
    bands, JPEG noise, gradients) for a border too noisy for the strict key; binary alpha."""
    from ..images import ImageError, subject_mask

    rgb8 = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    try:
        mask = subject_mask(np.dstack([rgb8, np.full(rgb8.shape[:2], 255, np.uint8)]))
    except ImageError:
        return None, KeyReport(False, reason, tuple(float(c) for c in background))
    coverage = float(mask.mean())
    if coverage > MAX_SUBJECT_SHARE:
        return None, KeyReport(False, "the subject fills the frame: there is no background to key", None, 0.0, coverage)
    out = np.dstack([rgb8, np.where(mask, 255, 0).astype(np.uint8)])
    return out, KeyReport(True, "", tuple(float(c) for c in background), 0.0, coverage)


def key_views(images: np.ndarray) -> tuple[list[np.ndarray | None], list[KeyReport]]:
    """:func:`key_view` of each frame of (N, H, W, 3|4)."""
    keyed, reports = [], []
    for image in images:
        rgba, report = key_view(image)
        keyed.append(rgba)
        reports.append(report)
    return keyed, reports


def masked_views(images: np.ndarray, min_views: int = 2, what: str = "views") -> tuple[np.ndarray, np.ndarray, list[KeyReport | None]]:
    """RGBA views with a subject mask each: ``(rgba (K, H, W, 4), kept indices (K,), reports)``.

    Views with alpha keep it (report None); views without (no pixel transparent) are keyed
    out of their plain background; those where that fails are dropped with a logged
    warning. Fewer than ``min_views`` left raises :class:`MaskNotFound`.
    """
    images = np.asarray(images)
    out, kept, reports = [], [], []
    for i, image in enumerate(images):
        if image.shape[-1] == 4 and has_alpha(image):
            out.append(image)
            kept.append(i)
            reports.append(None)
            continue
        rgba, report = key_view(image)
        reports.append(report)
        if rgba is None:
            log.warning("%s dropped", report.describe(i))
            continue
        out.append(rgba)
        kept.append(i)
    if len(out) < min_views:
        failed = [f"{i}: {r.reason}" for i, r in enumerate(reports) if r is not None and not r.found]
        raise MaskNotFound(
            f"only {len(out)} of {len(images)} {what} have a subject mask (at least {min_views} needed); "
            + "; ".join(failed[:5])
            + ("; ..." if len(failed) > 5 else ""),
            NO_MASK_HINT,
        )
    return np.stack(out), np.asarray(kept, dtype=np.int64), reports


# --- the key ---------------------------------------------------------------------------------


def _border_colour(rgb: np.ndarray) -> tuple[np.ndarray, float | None, float]:
    """(background colour, tolerance or None when too noisy, share of the border matching)."""
    width = 2
    border = np.concatenate(
        [rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3), rgb[width:-width, :width].reshape(-1, 3),
         rgb[width:-width, -width:].reshape(-1, 3)]
    )
    colour = np.median(border, axis=0)
    deviation = border - colour
    # Robust per-channel noise, from the border pixels near the colour only (a subject
    # touching the border must not widen it).
    near = np.abs(deviation).max(axis=1) <= MAX_TOLERANCE
    if near.mean() < 0.5:
        return colour, None, float(near.mean())
    sigma = 1.4826 * float(np.median(np.abs(deviation[near])))
    tolerance = max(MIN_TOLERANCE, NOISE_FACTOR * sigma * float(np.sqrt(3.0)))
    if tolerance > MAX_TOLERANCE:
        return colour, None, 0.0
    share = float(np.mean(np.linalg.norm(deviation, axis=1) <= tolerance))
    return colour, tolerance, share


def _subject(foreground: np.ndarray) -> np.ndarray:
    """Subject from the pixels unlike the background: specks dropped, small holes filled."""
    labels, n = ndimage.label(foreground, structure=np.ones((3, 3), bool))
    if n == 0:
        return foreground
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= SPECK_SHARE * sizes.max()) + 1
    subject = np.isin(labels, keep)
    # Background-coloured regions not connected to the border: gaps if large, else subject.
    holes, m = ndimage.label(~subject)
    if m:
        sizes = np.bincount(holes.ravel())
        edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = sizes < max(MIN_HOLE_PIXELS, HOLE_SHARE * subject.sum())
        small[0] = False
        small[edge] = False
        subject |= small[holes]
    return subject


def _soft_edges(rgb: np.ndarray, subject: np.ndarray, background: np.ndarray, tolerance: float):
    """(alpha (H, W) in [0, 1], straight colour (H, W, 3)) with the outline un-mixed."""
    alpha = subject.astype(np.float32)
    colour = rgb.copy()
    square = np.ones((3, 3), bool)
    grown = ndimage.binary_dilation(subject, square)
    core = ndimage.binary_erosion(subject, square, iterations=2)
    if not core.any():
        core = subject
    band = grown & ~ndimage.binary_erosion(subject, square)
    if not band.any():
        return alpha, colour
    # The subject's own colour at each outline pixel: that of the nearest core pixel.
    far, (r, c) = ndimage.distance_transform_edt(~core, return_indices=True)
    rows, cols = np.nonzero(band)
    pixel = rgb[rows, cols]
    inner = rgb[r[rows, cols], c[rows, cols]]
    span = inner - background
    span2 = np.einsum("ij,ij->i", span, span)
    a = np.einsum("ij,ij->i", pixel - background, span) / np.maximum(span2, 1e-6)
    a = np.clip(a, 0.0, 1.0)
    # Where the subject's colour is too close to the background's, or its nearest inner
    # pixel is too far to stand for it (parts a few pixels thin), the mix says nothing.
    unsure = (span2 < (2.0 * tolerance) ** 2) | (far[rows, cols] > 4.0)
    a = np.where(unsure, subject[rows, cols].astype(np.float32), a)
    alpha[rows, cols] = a
    unmixed = background + (pixel - background) / np.maximum(a, 1e-3)[:, None]
    colour[rows, cols] = np.where((a >= 0.5)[:, None] & ~unsure[:, None], unmixed, inner)
    return alpha, np.clip(colour, 0.0, 255.0)
