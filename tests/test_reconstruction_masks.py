"""Subject masks of views without alpha (RGB on a plain background), and reporting failed keys."""

from __future__ import annotations

import numpy as np
import pytest

from blend123.backend.reconstruction.masks import MaskNotFound, key_view, masked_views

from .recon_fixtures import scene


def _on_white(rgba: np.ndarray, gain=(1.0, 1.0, 1.0), noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Composite on white, then an exposure/white-balance gain and noise on the whole frame."""
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    rgb = rgba[..., :3] * a + 255.0 * (1.0 - a)
    rgb = rgb * np.asarray(gain) + np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _disc(size: int = 96, radius: float = 30.0, hole: float = 0.0, supersample: int = 8) -> np.ndarray:
    """Coverage (size, size) of a disc (or a ring with a ``hole`` radius) at the centre, antialiased."""
    n = size * supersample
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / supersample - size / 2
    r = np.hypot(x, y)
    inside = (r <= radius) & (r >= hole)
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _coloured(coverage: np.ndarray, colour=(200, 60, 40)) -> np.ndarray:
    rgba = np.zeros(coverage.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.rint(coverage * 255).astype(np.uint8)
    return rgba


@pytest.mark.parametrize("gain, noise", [((1.0, 1.0, 1.0), 0.0), ((0.93, 0.97, 1.0), 2.0), ((1.06, 1.0, 0.95), 3.0)])
def test_rgb_on_white_views_give_the_true_mask(gain, noise):
    s = scene()
    for i in range(0, len(s.images), 4):
        rgba, report = key_view(_on_white(s.images[i], gain, noise, seed=i))
        assert report.found, report.reason
        assert _iou(rgba[..., 3] > 127, s.images[i, ..., 3] > 127) > 0.97


def test_the_outline_gets_its_coverage_as_alpha_and_no_white_fringe():
    coverage = _disc()
    rgba, report = key_view(_on_white(_coloured(coverage)))
    assert report.found
    edge = (coverage > 0.05) & (coverage < 0.95)
    alpha = rgba[..., 3] / 255.0
    assert np.abs(alpha[edge] - coverage[edge]).mean() < 0.08
    assert _iou(alpha > 0.5, coverage > 0.5) > 0.98
    # Edge colour is the subject's, not mixed with the white background.
    solid = alpha > 0.5
    assert np.abs(rgba[solid, :3].astype(int) - [200, 60, 40]).max() <= 12


def test_a_clipped_highlight_stays_subject_and_a_large_gap_stays_background():
    ring = _coloured(_disc(radius=40.0, hole=14.0))
    rgb = _on_white(ring)
    rgb[30:33, 20:23] = 255  # a highlight clipped to white, inside the ring's body
    rgba, report = key_view(rgb)
    assert report.found
    alpha = rgba[..., 3] > 127
    assert alpha[30:33, 20:23].all()
    assert not alpha[44:52, 44:52].any()  # the gap in the middle is see-through


@pytest.mark.parametrize(
    "frame, reason",
    [
        (np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), "border is not one plain colour"),
        (np.full((64, 64, 3), 255, dtype=np.uint8), "no subject"),
        (np.dstack([np.tile(np.linspace(0, 255, 64), (64, 1)).astype(np.uint8)] * 3), "border is not one plain colour"),
    ],
)
def test_a_frame_that_cannot_be_keyed_is_reported_not_made_opaque(frame, reason):
    rgba, report = key_view(frame)
    assert rgba is None and not report.found
    assert reason in report.reason
    assert reason in report.describe(3) and "view 3" in report.describe(3)


def test_views_with_alpha_are_kept_and_failed_keys_dropped(caplog):
    s = scene(64)
    views = [s.images[0], np.dstack([_on_white(s.images[1]), np.full((64, 64), 255, np.uint8)]), s.images[2]]
    views.append(np.dstack([np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)] + [np.full((64, 64), 255, np.uint8)]))
    with caplog.at_level("WARNING"):
        rgba, kept, reports = masked_views(np.stack(views))
    assert kept.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(rgba[0], s.images[0])  # alpha given: untouched
    assert reports[0] is None and reports[1].found and not reports[3].found
    assert _iou(rgba[1, ..., 3] > 127, s.images[1, ..., 3] > 127) > 0.95  # opaque alpha: keyed
    assert "view 3" in caplog.text and "dropped" in caplog.text
    with pytest.raises(MaskNotFound) as error:
        masked_views(np.stack([views[3], views[3], views[0]]))
    assert error.value.hint


def test_generated_frames_are_keyed_and_a_failed_key_is_an_error_not_the_whole_frame():
    from blend123.backend import matting
    from blend123.backend.images import ImageError
    from blend123.backend.synthesis.adapters import keyed_rgba

    coverage = _disc(64, 20.0)
    frame = _on_white(_coloured(coverage)).astype(np.float64) / 255.0
    rgba = keyed_rgba(frame)
    assert _iou(rgba[..., 3] > 0.5, coverage > 0.5) > 0.97
    if matting.missing_hint():  # no matting model to fall back on: the failure is said
        busy = np.random.default_rng(3).random((64, 64, 3))
        with pytest.raises(ImageError, match="cannot be keyed"):
            keyed_rgba(busy)
