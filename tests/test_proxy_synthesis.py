"""The built-in "default" model: a geometric proxy rendered from requested poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from blend123.backend.images import ImageError, load_rgba, prepare_reference
from blend123.backend.progress import JobCancelled
from blend123.backend.progress import no_progress
from blend123.backend.synthesis.proxy import ProxyViewSynthesizer
from blend123.backend.synthesis.registry import SynthesisRequest
from blend123.protocol.camera import DEFAULT_FOV_DEG, CameraIntrinsics, SphericalPose, world_azimuth

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RED, BLUE, GREEN, MAGENTA = (220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 30, 200)


def render(synth, image, poses, reference=SphericalPose(0.0, -90.0), resolution=256, progress=no_progress, camera=None, reference_fov=DEFAULT_FOV_DEG):
    """Views through the model's interface; a square camera of the default lens unless given."""
    camera = camera or CameraIntrinsics.square(DEFAULT_FOV_DEG, resolution)
    return synth(SynthesisRequest(image, poses, reference, reference_fov, camera, progress=progress))


def rel(relative_deg: float, elevation_deg: float = 0.0) -> SphericalPose:
    return SphericalPose(elevation_deg, world_azimuth(relative_deg))


def ellipse_image(left, right, top=None, bottom=None, size=200) -> np.ndarray:
    """A transparent image with an ellipse coloured by halves: left/right, or top/bottom."""
    yy, xx = np.mgrid[:size, :size]
    shape = ((xx - size / 2) / (0.4 * size)) ** 2 + ((yy - size / 2) / (0.3 * size)) ** 2 < 1.0
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[shape & (xx < size / 2)] = (*left, 255)
    rgba[shape & (xx >= size / 2)] = (*right, 255)
    if top is not None:
        rgba[shape & (yy < size / 2)] = (*top, 255)
        rgba[shape & (yy >= size / 2)] = (*bottom, 255)
    return rgba


def count(view: np.ndarray, colour, tolerance: int = 60) -> int:
    """Visible pixels near ``colour`` (the back is shaded darker, hence the tolerance)."""
    close = np.abs(view[:, :, :3].astype(int) - np.array(colour)).max(axis=2) <= tolerance
    return int((close & (view[:, :, 3] > 0)).sum())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def synth() -> ProxyViewSynthesizer:
    return ProxyViewSynthesizer()


@pytest.fixture(scope="module")
def halves() -> np.ndarray:
    return ellipse_image(RED, BLUE)


def test_is_the_default_model_and_says_what_it_is():
    assert ProxyViewSynthesizer.name == "default"
    assert "not diffusion" in ProxyViewSynthesizer.description


def test_output_shape_dtype_and_binary_alpha(synth, halves):
    views = render(synth, halves, [rel(0), rel(30, 20)], resolution=128)
    assert views.shape == (2, 128, 128, 4) and views.dtype == np.uint8
    alpha = views[:, :, :, 3]
    assert set(np.unique(alpha)) == {0, 255}
    assert (views[alpha == 0] == 0).all()  # transparent background, no colour behind it


def test_no_poses_gives_no_views(synth, halves):
    assert render(synth, halves, []).shape == (0, 256, 256, 4)


@pytest.mark.parametrize(
    "reference", [SphericalPose(0.0, -90.0), SphericalPose(20.0, -60.0, 2.5)], ids=["front", "tilted"]
)
def test_reference_pose_reproduces_the_input(synth, halves, reference):
    # Through the reference camera's own lens, at the photo's size: the photo itself.
    view = render(synth, halves, [reference], reference=reference, camera=CameraIntrinsics.square(DEFAULT_FOV_DEG, 200))[0]
    mask = halves[:, :, 3] > 0
    assert iou(view[:, :, 3] > 0, mask) > 0.95
    inner = ndimage.binary_erosion(mask, iterations=2)
    # The vertex lattice is coarser than the photo: a colour edge may move by a pixel.
    inner &= ndimage.binary_erosion(halves[:, :, 0] > 128, iterations=2) | ndimage.binary_erosion(halves[:, :, 2] > 128, iterations=2)
    assert np.abs(view[inner, :3].astype(int) - halves[inner, :3]).max() <= 2


def test_plus_90_shows_the_right_side_minus_90_the_left(synth, halves):
    right_side, left_side = render(synth, halves, [rel(90), rel(-90)])
    assert world_azimuth(90) == 0.0  # camera on +X, looking toward -X
    assert count(right_side, BLUE) > 5 * count(right_side, RED)
    assert count(left_side, RED) > 5 * count(left_side, BLUE)


def test_back_view_is_the_mirrored_front(synth, halves):
    front, back = render(synth, halves, [rel(0), rel(180)])
    assert iou(back[:, :, 3] > 0, np.fliplr(front[:, :, 3] > 0)) > 0.9
    left, right = back[:, :128], back[:, 128:]
    assert count(left, BLUE) > 5 * count(left, RED)
    assert count(right, RED) > 5 * count(right, BLUE)
    # The guessed far side is shaded a little darker than the seen front.
    assert back[back[:, :, 3] > 0, :3].mean() < front[front[:, :, 3] > 0, :3].mean()


def test_positive_elevation_looks_down_on_the_top(synth):
    image = ellipse_image(RED, RED, top=GREEN, bottom=MAGENTA)
    above, below = render(synth, image, [rel(0, 60), rel(0, -60)])
    assert count(above, GREEN) > 2 * count(above, MAGENTA)
    assert count(below, MAGENTA) > 2 * count(below, GREEN)


def test_nearer_surface_hides_the_farther(synth):
    """A U seen from its right: the right arm stands in front of the left one."""
    u = np.zeros((200, 200, 4), np.uint8)
    u[30:170, 30:70] = (*RED, 255)
    u[30:170, 130:170] = (*BLUE, 255)
    u[130:170, 30:170] = (*GREEN, 255)
    from_right, from_left = render(synth, u, [rel(90), rel(-90)])
    assert count(from_right, BLUE) > 1000 and count(from_right, RED) < 50
    assert count(from_left, RED) > 1000 and count(from_left, BLUE) < 50


@pytest.mark.parametrize("pose", [rel(45, 10), rel(90), rel(150, -30), rel(0, 89), rel(200, 45)])
def test_views_are_solid(synth, halves, pose):
    """No holes or speckles: the alpha of every view is one filled blob."""
    alpha = render(synth, halves, [pose])[0][:, :, 3] > 0
    assert alpha.sum() > 1000
    assert not (ndimage.binary_fill_holes(alpha) & ~alpha).any()
    assert ndimage.label(alpha)[1] == 1


def test_deterministic_across_instances(halves):
    poses = [rel(a, 15) for a in (0, 77, 180)]
    np.testing.assert_array_equal(render(ProxyViewSynthesizer(), halves, poses), render(ProxyViewSynthesizer(), halves, poses))


def test_proxy_is_built_once_per_image(synth, halves):
    assert synth.surface(halves, 256) is synth.surface(halves.copy(), 256)
    assert synth.surface(halves, 256) is not synth.surface(np.fliplr(halves).copy(), 256)


def test_progress_once_per_view(synth, halves):
    calls = []
    render(synth, halves, [rel(a) for a in (0, 90, 180, 270)], progress=lambda stage, f: calls.append((stage, f)))
    assert calls == [("views", 0.25), ("views", 0.5), ("views", 0.75), ("views", 1.0)]


def test_cancel_from_progress_stops_the_call(synth, halves):
    calls = []

    def progress(stage: str, fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        render(synth, halves, [rel(a) for a in range(0, 360, 30)], progress=progress)
    assert len(calls) == 2


def test_rgb_image_on_plain_background_and_other_resolutions(synth):
    rgb = np.full((150, 180, 3), 250, np.uint8)
    rgb[40:110, 50:140] = RED
    for resolution in (64, 320):
        view = render(synth, rgb, [rel(0)], resolution=resolution)[0]
        assert view.shape == (resolution, resolution, 4)
        alpha = view[:, :, 3] > 0
        # A 90 px wide box in a 180 px wide photo, seen with the photo's own lens from its
        # camera: half the view's width, whatever the resolution (its true size, not refitted).
        assert abs(alpha.any(0).sum() - 0.5 * resolution) <= 2


def test_unusable_image_raises_image_error(synth):
    with pytest.raises(ImageError) as err:
        render(synth, np.full((64, 64, 3), 128, np.uint8), [rel(0)])
    assert err.value.hint


def test_duck_beak_faces_the_viewers_right(synth):
    """The example duck's beak points to the viewer's right: seen from relative +90 the
    orange beak faces the camera; from -90 the body hides it."""
    duck = load_rgba(EXAMPLES / "duck.png")
    front, right, left = render(synth, duck, [rel(0, 8), rel(90, 8), rel(-90, 8)], reference=rel(0, 8))
    photo_mask = np.asarray(Image.fromarray(duck[:, :, 3]).resize(front.shape[1::-1], Image.Resampling.BILINEAR)) >= 128
    assert iou(front[:, :, 3] > 0, photo_mask) > 0.95  # the reference view is the photo
    orange = (245, 80, 10)
    assert count(right, orange, 50) > 200
    assert count(right, orange, 50) > 10 * count(left, orange, 50)
