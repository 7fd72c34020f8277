"""Reference images: loading, subject masks, framing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from blend123.backend.images import (
    MASK_MAX_SIDE,
    UNIFORM_BORDER_SHARE,
    BusyBackgroundError,
    ImageError,
    as_rgba,
    load_rgba,
    prepare_reference,
    save_rgba,
    subject_mask,
)


def ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 < 1.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def on_white(shape_mask: np.ndarray, colour=(200, 40, 30), noise: float = 0.0) -> np.ndarray:
    rgb = np.full(shape_mask.shape + (3,), 245.0)
    rgb[shape_mask] = colour
    rgb += np.random.default_rng(0).normal(0.0, noise, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# --- files ------------------------------------------------------------------------------


def test_png_round_trip_keeps_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    save_rgba(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(load_rgba(tmp_path / "a.png"), rgba)


def test_jpeg_and_greyscale_load_as_opaque_rgba(tmp_path):
    Image.fromarray(np.full((8, 9, 3), 120, np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((8, 9), 77, np.uint8)).save(tmp_path / "g.png")
    jpg, grey = load_rgba(tmp_path / "a.jpg"), load_rgba(tmp_path / "g.png")
    assert jpg.shape == (8, 9, 4) and jpg.dtype == np.uint8 and (jpg[:, :, 3] == 255).all()
    assert (grey[:, :, :3] == 77).all() and (grey[:, :, 3] == 255).all()


def test_missing_file_raises_with_hint(tmp_path):
    with pytest.raises(ImageError) as err:
        load_rgba(tmp_path / "nope.png")
    assert "nope.png" in err.value.message and err.value.hint


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_file_raises_with_hint(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as err:
        load_rgba(path)
    assert err.value.hint


def test_truncated_png_raises_with_hint(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as err:
        load_rgba(tmp_path / "cut.png")
    assert "damaged" in err.value.message and err.value.hint


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError):
        load_rgba(tmp_path)


def test_as_rgba_accepts_float_and_rgb_and_rejects_nonsense():
    out = as_rgba(np.ones((4, 5, 3), np.float32) * 0.5)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 4)
    assert (out[:, :, :3] == 128).all() and (out[:, :, 3] == 255).all()
    with pytest.raises(ImageError):
        as_rgba(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(ImageError):
        as_rgba(np.zeros((4, 5, 3), np.int32))


# --- masks ------------------------------------------------------------------------------


def test_mask_from_alpha_ignores_colours_behind_transparency():
    shape = ellipse(100, 120, 60, 50, 30, 20)
    rgba = np.random.default_rng(3).integers(0, 256, (100, 120, 4), dtype=np.uint8)  # busy background
    rgba[:, :, 3] = np.where(shape, 255, 0)
    np.testing.assert_array_equal(subject_mask(rgba), shape)


def test_mask_from_uniform_background_with_noise():
    shape = ellipse(120, 160, 70, 60, 40, 30)
    mask = subject_mask(on_white(shape, noise=4.0))
    assert iou(mask, shape) > 0.98


def test_mask_fills_small_holes_keeps_large_ones_and_drops_specks():
    small_hole = ellipse(200, 200, 60, 100, 4, 4)
    ring = ellipse(200, 200, 140, 100, 45, 45) & ~ellipse(200, 200, 140, 100, 25, 25)
    body = ellipse(200, 200, 60, 100, 40, 40) & ~small_hole
    image = on_white(body | ring)
    image[5:7, 5:7] = 0  # a speck of dust
    mask = subject_mask(image)
    assert mask[small_hole].all()  # a highlight the colour of the background: subject
    assert not mask[ellipse(200, 200, 140, 100, 20, 20)].any()  # a see-through gap: not
    assert not mask[5:7, 5:7].any()
    assert mask[ring].all()


def test_flat_image_has_no_subject():
    with pytest.raises(ImageError) as err:
        subject_mask(np.full((50, 50, 3), 90, np.uint8))
    assert "no subject" in err.value.message.lower() and err.value.hint


def test_fully_transparent_image_has_no_subject():
    with pytest.raises(ImageError) as err:
        subject_mask(np.zeros((50, 50, 4), np.uint8))
    assert "transparent" in err.value.message and err.value.hint


def test_busy_background_is_refused():
    photo = np.random.default_rng(4).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    with pytest.raises(ImageError) as err:
        subject_mask(photo)
    assert "background" in err.value.message and err.value.hint


def border_share(rgb: np.ndarray, tolerance: float = 30.0) -> float:
    """Share of border pixels near the median border colour (what the old check measured)."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(float)
    return float(np.mean(np.linalg.norm(border - np.median(border, axis=0), axis=1) <= tolerance))


def blob_background(blobs: list[tuple[float, float, float, tuple[int, int, int]]], size: int = 240) -> np.ndarray:
    """A grey backdrop with large colour blobs (cx, cy, r, colour) and a red subject in the middle."""
    rgb = np.full((size, size, 3), 230.0)
    for cx, cy, r, colour in blobs:
        rgb[ellipse(size, size, cx, cy, r, r)] = colour
    rgb[ellipse(size, size, size / 2, size / 2, 45, 60)] = (200, 40, 30)
    rgb += np.random.default_rng(5).normal(0.0, 3.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_large_colour_blobs_along_the_border_are_not_a_plain_background():
    # Two-thirds of the border is grey (enough for the old 60% rule), the rest three blobs.
    photo = blob_background([(0, 0, 60, (40, 90, 200)), (240, 120, 55, (30, 160, 60)), (60, 240, 30, (240, 200, 20))])
    assert 0.6 < border_share(photo) < UNIFORM_BORDER_SHARE
    with pytest.raises(BusyBackgroundError) as err:
        subject_mask(photo)
    assert "border" in err.value.message and "transparent background" in err.value.hint


def test_separate_blobs_on_a_mostly_plain_border_are_refused():
    # Most of the border is grey, but two separate pieces run along it: not the subject.
    photo = blob_background([(0, 120, 30, (40, 90, 200)), (240, 60, 30, (30, 160, 60))])
    assert border_share(photo) > UNIFORM_BORDER_SHARE
    with pytest.raises(BusyBackgroundError, match="separate regions"):
        subject_mask(photo)
    # One blob along the border, apart from the subject: not a cut-out either.
    photo = blob_background([(0, 120, 34, (40, 90, 200))])
    with pytest.raises(BusyBackgroundError, match="stands apart"):
        subject_mask(photo)


@pytest.mark.parametrize("case", ["cut off by the frame", "gradient backdrop", "pair of objects"])
def test_plain_backgrounds_still_pass(case):
    h, w = 200, 240
    if case == "cut off by the frame":  # a bust: the subject runs along the bottom edge
        shape = ellipse(h, w, 120, 180, 50, 70)
        image = on_white(shape, noise=3.0)
    elif case == "gradient backdrop":  # a studio sweep, light to darker
        shape = ellipse(h, w, 120, 100, 50, 60)
        image = on_white(shape, noise=2.0).astype(float)
        image[~shape] -= np.linspace(0, 35, h)[:, None, None].repeat(w, 1)[~shape]
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:  # two separate objects, neither touching the border
        shape = ellipse(h, w, 70, 100, 35, 50) | ellipse(h, w, 170, 100, 35, 50)
        image = on_white(shape, noise=3.0)
    assert iou(subject_mask(image), shape) > 0.97


def big_photo(side: int, alpha: bool) -> tuple[np.ndarray, np.ndarray]:
    shape = ellipse(side, side, 0.45 * side, 0.55 * side, 0.3 * side, 0.2 * side)
    shape &= ~ellipse(side, side, 0.3 * side, 0.55 * side, 0.01 * side, 0.01 * side)  # a tiny hole: filled
    image = on_white(shape, noise=3.0)
    if alpha:
        image = np.dstack([image, np.where(shape, 255, 0).astype(np.uint8)])
    return image, shape | ellipse(side, side, 0.3 * side, 0.55 * side, 0.01 * side, 0.01 * side)


@pytest.mark.parametrize("alpha", [False, True])
def test_large_photo_mask_is_computed_small_and_stays_accurate(alpha, record_property):
    side = 4 * MASK_MAX_SIDE
    image, expected = big_photo(side, alpha)
    start = time.perf_counter()
    mask = subject_mask(image)
    record_property("subject_mask_s", time.perf_counter() - start)  # measured, not asserted
    assert mask.shape == (side, side)
    assert iou(mask, expected) > 0.995
    # Edges stay smooth (bilinear, then halfway), not blocks of the 4x coarser grid.
    wrong = mask ^ expected
    assert wrong.sum() < 0.004 * expected.sum()
    if alpha:  # the full-resolution alpha decides the edge: exact outside the filled hole
        assert not (mask & (image[:, :, 3] == 0) & ~expected).any()


def test_large_photo_frames_like_its_small_copy():
    image, _ = big_photo(2048, alpha=False)
    small = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.BOX))
    big_frame, small_frame = prepare_reference(image, size=128), prepare_reference(small, size=128)
    assert iou(big_frame.mask, small_frame.mask) > 0.97


# --- framing ----------------------------------------------------------------------------


@pytest.mark.parametrize("size,fill", [(256, 0.8), (128, 0.5)])
def test_prepare_recentres_and_rescales(size, fill):
    shape = ellipse(300, 400, 320, 70, 50, 25)  # small, wide, near the top-right corner
    prepared = prepare_reference(on_white(shape), size=size, fill=fill)
    assert prepared.rgba.shape == (size, size, 4) and prepared.rgba.dtype == np.uint8
    ys, xs = np.nonzero(prepared.mask)
    width, height = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
    assert abs(width - fill * size) <= 1.5
    assert abs(height - fill * size / 2) <= 1.5  # aspect ratio kept
    assert abs(0.5 * (xs.min() + xs.max() + 1) - size / 2) <= 1.0
    assert abs(0.5 * (ys.min() + ys.max() + 1) - size / 2) <= 1.0


def test_prepared_alpha_is_clean_and_white_composite():
    shape = ellipse(100, 100, 40, 50, 20, 30)
    prepared = prepare_reference(on_white(shape, colour=(10, 200, 20)), size=64)
    rgba = prepared.rgba
    assert (rgba[~prepared.mask] == 0).all()
    assert (rgba[prepared.mask, 3] >= 128).all()
    white = prepared.composited_on_white()
    assert white.shape == (64, 64, 3)
    assert (white[0, 0] == 255).all()
    assert tuple(white[32, 32]) == (10, 200, 20)


def test_prepare_rejects_bad_fill():
    with pytest.raises(ValueError):
        prepare_reference(on_white(ellipse(50, 50, 25, 25, 10, 10)), fill=1.5)
