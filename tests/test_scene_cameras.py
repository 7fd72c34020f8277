"""Scene-exact views: the asking camera's own lens on every view, the subject at its true size.

Blender's framing rules, the settings' single owner, the default model's zoom and true
scale, non-square shifted frames, and the intrinsics in ``transforms.json`` and back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from blend123.backend.images import load_rgba, subject_mask
from blend123.backend.reconstruction.pipeline import load_transforms, load_transforms_camera
from blend123.backend.synthesis.proxy import ProxyViewSynthesizer
from blend123.backend.synthesis.registry import CARDS, MODELS, SynthesisRequest
from blend123.backend.synthesis.scene import resample_view, subject_in_world
from blend123.backend.tasks import TaskContext, run_task, square_views
from blend123.protocol import settings as S
from blend123.protocol.camera import (
    DEFAULT_FOV_DEG,
    CameraIntrinsics,
    SphericalPose,
    camera_angle_x_from_lens,
    project_points,
    reference_pose,
    world_azimuth,
)
from blend123.protocol.codec import decode, encode
from blend123.protocol.errors import ProtocolError
from blend123.protocol.messages import GenerationSettings, NovelView, Orbit, Reconstruct, View

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REFERENCE = reference_pose(0.0, 2.0)


# --- Blender's framing -----------------------------------------------------------------------


def test_auto_fit_landscape_is_the_lens_across_the_width():
    cam = CameraIntrinsics.from_blender(50, 36, 24, "AUTO", 0, 0, 1920, 1080)
    assert cam.camera_angle_x == pytest.approx(camera_angle_x_from_lens(50, 36))
    assert cam.fx == pytest.approx(cam.fy)  # square pixels
    assert (cam.cx, cam.cy) == (960, 540)


def test_auto_fit_portrait_puts_the_sensor_width_on_the_height():
    cam = CameraIntrinsics.from_blender(50, 36, 24, "AUTO", 0, 0, 1080, 1920)
    assert cam.camera_angle_y == pytest.approx(camera_angle_x_from_lens(50, 36))
    assert cam.fx == pytest.approx(cam.fy)


def test_vertical_fit_uses_the_sensor_height():
    cam = CameraIntrinsics.from_blender(50, 36, 24, "VERTICAL", 0, 0, 1920, 1080)
    assert cam.camera_angle_y == pytest.approx(2 * math.atan(12 / 50))


@pytest.mark.parametrize("fit, res", [("AUTO", (1920, 1080)), ("HORIZONTAL", (1080, 1920)), ("VERTICAL", (1920, 1080))])
def test_lens_shift_moves_the_frame_by_a_share_of_the_fitted_side(fit, res):
    """A point on the frame-plane at (shift_x * fitted width, shift_y * ...) in front of the
    camera is where the shifted frame's centre is: it lands on the image centre."""
    lens, sw, sh, sx, sy = 40.0, 36.0, 24.0, 0.2, -0.1
    cam = CameraIntrinsics.from_blender(lens, sw, sh, fit, sx, sy, *res)
    horizontal = fit == "HORIZONTAL" or (fit == "AUTO" and res[0] >= res[1])
    fitted = (sw if fit != "VERTICAL" else sh) / lens  # frame side at distance 1
    point = np.array([[sx * fitted, sy * fitted, -1.0]])  # camera at the origin looking down -Z
    xy, _ = cam.project(np.eye(4), point)
    np.testing.assert_allclose(xy[0], [0.5 * res[0], 0.5 * res[1]], atol=1e-6)
    assert horizontal == (fit != "VERTICAL")


def test_simple_cameras_project_like_project_points():
    c2w = SphericalPose(20.0, 30.0, 2.5).to_c2w()
    points = np.random.default_rng(0).normal(size=(50, 3)) * 0.3
    cam = CameraIntrinsics.from_fov_x(0.7, 200, 120)
    a, da = cam.project(c2w, points)
    b, db = project_points(c2w, 0.7, 200, 120, points)
    np.testing.assert_allclose(a, b, atol=1e-9)
    np.testing.assert_allclose(da, db)


def test_focal_lengths_and_principal_point_round_trip():
    cam = CameraIntrinsics.from_blender(35, 36, 24, "AUTO", 0.1, 0.05, 1280, 720)
    back = CameraIntrinsics.from_focal(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    for field in ("fov_x_deg", "fov_y_deg", "shift_x", "shift_y"):
        assert getattr(back, field) == pytest.approx(getattr(cam, field))


def test_resized_keeps_the_frame_angles():
    cam = CameraIntrinsics.from_blender(50, 36, 24, "AUTO", 0.1, 0, 1920, 1080).resized(256)
    assert (cam.width, cam.height) == (256, 144)
    assert cam.camera_angle_x == pytest.approx(camera_angle_x_from_lens(50, 36))
    assert cam.cx == pytest.approx(128 - 0.1 * 256)


# --- one owner for settings ------------------------------------------------------------------


def test_messages_take_defaults_and_bounds_from_settings():
    g = GenerationSettings()
    assert g.steps is None and g.guidance is None  # the model's own defaults
    assert (g.resolution, g.radius, g.reference_fov_deg) == (S.RESOLUTION.default, S.RADIUS.default, S.REFERENCE_FOV.default)
    assert Reconstruct(source_job="j").texture_size == S.TEXTURE_SIZE.default
    with pytest.raises(ProtocolError, match="texture_size"):
        Reconstruct(source_job="j", texture_size=int(S.TEXTURE_SIZE.high) + 1).validate()
    with pytest.raises(ProtocolError, match="steps"):
        GenerationSettings(steps=int(S.STEPS.high) + 1).validate()


@pytest.mark.parametrize("radius", [math.inf, 1e9, -1.0, 1e-6])
def test_every_radius_is_finite_and_bounded(radius):
    image = np.zeros((16, 16, 4), np.uint8)
    with pytest.raises(ProtocolError, match="radius"):
        GenerationSettings(radius=radius).validate()
    with pytest.raises(ProtocolError, match="radius"):  # each pose's own, too
        NovelView(image, np.array([[0.0, 0.0, radius]])).validate()


def test_camera_travels_the_wire_and_bad_cameras_are_refused():
    cam = CameraIntrinsics.from_blender(85, 36, 24, "AUTO", 0.05, 0.0, 1920, 1080)
    msg = NovelView(np.zeros((16, 16, 4), np.uint8), np.array([[0.0, 30.0, 0.0]]), GenerationSettings(camera=cam))
    assert decode(encode(msg)).message.settings.camera == cam
    bad = NovelView(msg.image, msg.poses, GenerationSettings(camera=CameraIntrinsics(math.nan, 20.0, 64, 64)))
    with pytest.raises(ProtocolError, match="fov_x"):
        bad.validate()


def test_hello_advertises_each_models_native_camera_and_defaults():
    infos = {spec.name: spec.info() for spec in MODELS.values()}
    assert infos["default"].native.fov_deg is None and infos["default"].takes == []
    assert infos["zero123-xl"].native.fov_deg == pytest.approx(49.13, abs=0.01)
    assert infos["zero123-xl"].default_guidance == 3.0 and infos["stable-zero123"].default_guidance == 5.0
    assert infos["sv3d-p"].native.fov_deg == 33.8 and infos["sv3d-p"].default_guidance == 2.5
    assert infos["sv3d-u"].native.min_radius == infos["sv3d-u"].native.max_radius  # a fixed distance


def test_default_model_refuses_settings_it_has_no_use_for():
    duck = load_rgba(EXAMPLES / "duck.png")
    request = SynthesisRequest(duck, [REFERENCE], REFERENCE, 33.8, CameraIntrinsics.square(33.8, 64), guidance=3.0)
    with pytest.raises(ProtocolError, match="guidance"):
        ProxyViewSynthesizer().check(request)


# --- the default model: lenses and true scale ---------------------------------------------


def _extent(view: np.ndarray) -> tuple[float, float, float]:
    """(larger side, centre x, centre y) of the subject's bounding box, pixels."""
    ys, xs = np.nonzero(view[..., 3] > 127)
    return max(xs.ptp() + 1, ys.ptp() + 1), 0.5 * (xs.min() + xs.max() + 1), 0.5 * (ys.min() + ys.max() + 1)


@pytest.fixture(scope="module")
def duck() -> np.ndarray:
    return load_rgba(EXAMPLES / "duck.png")


def test_a_longer_lens_zooms_in(duck):
    """From one pose, the subject's size goes as 1 / tan(fov / 2): the reference lens fixes
    the subject, the asking lens only frames it."""
    synth = ProxyViewSynthesizer()
    pose = SphericalPose(0.0, world_azimuth(20.0), 3.0)  # far enough that 25 deg still frames it all
    size = {}
    for fov in (25.0, 40.0, 70.0):
        view = synth(SynthesisRequest(duck, [pose], REFERENCE, 33.8, CameraIntrinsics.square(fov, 256)))[0]
        size[fov] = _extent(view)[0]
    for fov in (25.0, 70.0):
        expected = math.tan(math.radians(20.0)) / math.tan(math.radians(fov / 2))
        assert size[fov] / size[40.0] == pytest.approx(expected, rel=0.03)


def test_the_reference_lens_fixes_the_subjects_world_size(duck):
    """The same photo said to be taken with a wider lens shows a larger subject."""
    s1 = subject_in_world(duck, REFERENCE, 30.0)
    s2 = subject_in_world(duck, REFERENCE, 60.0)
    assert s2.size / s1.size == pytest.approx(math.tan(math.radians(30)) / math.tan(math.radians(15)))
    h, w = duck.shape[:2]
    ys, xs = np.nonzero(subject_mask(duck))
    assert s1.size == pytest.approx((max(xs.ptp(), ys.ptp()) + 1) / w * 2 * 2.0 * math.tan(math.radians(15)))


def test_a_shifted_16_9_frame_is_a_crop_of_a_wider_square_one(duck):
    """Shift and aspect are honoured exactly: the shifted 320x180 frame equals the matching
    window of a centred square frame with the same focal length."""
    synth = ProxyViewSynthesizer()
    pose = SphericalPose(10.0, world_azimuth(35.0), 2.4)
    f = 400.0
    shifted = CameraIntrinsics.from_focal(f, f, 128.0, 106.0, 320, 180)  # shift (0.1, 0.05)
    assert shifted.shift_x == pytest.approx(0.1) and shifted.shift_y == pytest.approx(0.05)
    wide = CameraIntrinsics.from_focal(f, f, 320.0, 320.0, 640, 640)
    a = synth(SynthesisRequest(duck, [pose], REFERENCE, 33.8, shifted))[0]
    b = synth(SynthesisRequest(duck, [pose], REFERENCE, 33.8, wide))[0][214 : 214 + 180, 192 : 192 + 320]
    assert a.shape == (180, 320, 4)
    ma, mb = a[..., 3] > 0, b[..., 3] > 0
    assert ma.sum() > 1000 and (ma & mb).sum() / (ma | mb).sum() > 0.99


# --- resampling a model's view into the asking camera --------------------------------------


def test_resampling_to_the_models_own_camera_is_the_identity():
    rng = np.random.default_rng(1)
    native = rng.random((32, 32, 4))
    native[..., 3] = 1.0
    cam = CameraIntrinsics.square(49.1, 32)
    c2w = SphericalPose(10.0, 40.0, 1.8).to_c2w()
    np.testing.assert_allclose(resample_view(native, c2w, cam, c2w, cam, np.zeros(3)), native, atol=1e-9)


def test_a_wider_asking_lens_pads_with_transparency():
    native = np.ones((32, 32, 4))
    c2w = SphericalPose(0.0, -90.0, 2.0).to_c2w()
    out = resample_view(native, c2w, CameraIntrinsics.square(30.0, 32), c2w, CameraIntrinsics.square(70.0, 64), np.zeros(3))
    assert out[0, 0, 3] == 0.0 and out[32, 32, 3] == 1.0
    covered = (out[..., 3] > 0.5).any(axis=0).sum()
    assert covered == pytest.approx(64 * math.tan(math.radians(15)) / math.tan(math.radians(35)), abs=1.5)


# --- tasks: views, transforms.json and reconstruction inputs --------------------------------


class _Models:
    def __init__(self, model) -> None:
        self.model = model

    def get(self, name):
        return self.model

    def release_if_memory_short(self) -> bool:
        return False


def _context(tmp_path: Path, model, events: list) -> TaskContext:
    return TaskContext("job", tmp_path, lambda stage, f: None, events.append, _Models(model), lambda j: [], lambda j: None)


def test_views_and_transforms_record_the_returned_intrinsics(tmp_path, duck):
    """A 16:9 shifted 85 mm camera: every View and transforms.json carry the pixels' own
    intrinsics, and the reader gives them back."""
    cam = CameraIntrinsics.from_blender(85, 36, 24, "AUTO", 0.05, -0.02, 1920, 1080)
    settings = GenerationSettings(camera=cam, resolution=160, reference_fov_deg=33.8)
    events: list = []
    run_task(Orbit(duck, [10.0], views=3, settings=settings), _context(tmp_path, ProxyViewSynthesizer(), events))
    views = [e for e in events if isinstance(e, View)]
    returned = cam.resized(160)
    assert len(views) == 3 and all(v.camera == returned and v.image.shape == (90, 160, 4) for v in views)
    assert views[0].camera_angle_x == pytest.approx(returned.camera_angle_x)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (160, 90) and meta["cx"] == pytest.approx(returned.cx)
    images, c2w, back = load_transforms_camera(tmp_path / "transforms.json")
    assert images.shape == (3, 90, 160, 4)
    for field in ("fov_x_deg", "fov_y_deg", "shift_x", "shift_y", "width", "height"):
        assert getattr(back, field) == pytest.approx(getattr(returned, field))
    assert load_transforms(tmp_path / "transforms.json")[2] == pytest.approx(returned.camera_angle_x)


def test_a_model_lens_orbit_round_trips_its_intrinsics(tmp_path):
    """A synthetic orbit in a lens other than the model's (as a diffusion model returns it,
    resampled into the asking camera) written and read back: same intrinsics, same rays."""
    from blend123.backend.tasks import write_transforms
    from PIL import Image

    cam = CameraIntrinsics.from_blender(28, 36, 24, "VERTICAL", -0.1, 0.08, 96, 64)
    assert abs(cam.fov_x_deg - CARDS["zero123-xl"].native.fov_deg) > 5
    frames = []
    for i in range(3):
        Image.fromarray(np.full((64, 96, 4), 40 * i, np.uint8)).save(tmp_path / f"v{i}.png")
        frames.append({"file_path": f"v{i}.png", "transform_matrix": SphericalPose(5.0, 60.0 * i, 2.0).to_c2w().tolist()})
    write_transforms(tmp_path / "transforms.json", cam, frames)
    _, _, back = load_transforms_camera(tmp_path / "transforms.json")
    c2w = SphericalPose(5.0, 0.0, 2.0).to_c2w()
    np.testing.assert_allclose(back.rays(c2w)[1], cam.rays(c2w)[1], atol=1e-9)


def test_square_views_keep_every_pixels_ray():
    """Reconstruction runs in square, centred frames: a shifted 16:9 view is resampled into
    one whose rays through the same scene point agree."""
    cam = CameraIntrinsics.from_blender(50, 36, 24, "AUTO", 0.1, 0.05, 160, 90)
    image = np.zeros((1, 90, 160, 4), np.uint8)
    image[0, 30:40, 100:110] = 255  # a white square
    squared, angle = square_views(image, cam)
    square = CameraIntrinsics.square(math.degrees(angle), squared.shape[1])
    c2w = np.eye(4)
    point = np.concatenate([cam.directions_at([[105.0, 35.0]])[0] * 3.0])[None]
    xy, _ = square.project(c2w, point)
    x, y = np.floor(xy[0]).astype(int)
    assert squared[0, y, x, 3] == 255 and squared[0, 0, 0, 3] == 0
    assert square_views(image[:, :, :90], CameraIntrinsics.square(40.0, 90))[0] is not None


def test_a_proxy_orbit_in_a_wide_lens_keeps_the_subjects_world_size(tmp_path, duck):
    """The same subject seen by a 70 deg orbit and a 33.8 deg one: the silhouettes agree once
    the lenses are undone (same world size), though the pixels differ by 2.2x."""
    events33, events70 = [], []
    base = dict(resolution=128, reference_fov_deg=33.8)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    run_task(Orbit(duck, [10.0], views=2, settings=GenerationSettings(camera=CameraIntrinsics.square(33.8, 128), **base)),
             _context(tmp_path / "a", ProxyViewSynthesizer(), events33))
    run_task(Orbit(duck, [10.0], views=2, settings=GenerationSettings(camera=CameraIntrinsics.square(70.0, 128), **base)),
             _context(tmp_path / "b", ProxyViewSynthesizer(), events70))
    narrow = [e for e in events33 if isinstance(e, View)][0]
    wide = [e for e in events70 if isinstance(e, View)][0]
    ratio = _extent(narrow.image)[0] / _extent(wide.image)[0]
    assert ratio == pytest.approx(math.tan(math.radians(35)) / math.tan(math.radians(16.9)), rel=0.05)


def test_an_orbit_in_a_wide_lens_reconstructs_at_the_subjects_true_size(server_factory, client_factory, duck):
    """Through the server, as a user runs it: orbits at 33.8 deg and at 70 deg (the subject
    2.2x smaller in the pixels) reconstruct to meshes of the same world size."""
    from blend123.protocol.messages import Mesh

    server = server_factory()
    client = client_factory(server.endpoint, timeout_s=60)
    extents = {}
    for fov in (33.8, 70.0):
        settings = GenerationSettings(resolution=192, reference_fov_deg=33.8, camera=CameraIntrinsics.square(fov, 192))
        orbit = client.submit(Orbit(duck, [10.0], settings=settings))
        assert list(client.events(orbit))[-1].state == "done"
        job = client.submit(Reconstruct(source_job=orbit, texture_size=64, max_faces=3000))
        (mesh,) = [e for e in client.events(job) if isinstance(e, Mesh)]
        extents[fov] = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
    np.testing.assert_allclose(extents[70.0], extents[33.8], rtol=0.08)
