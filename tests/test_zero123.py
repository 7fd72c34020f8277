"""Zero123-XL / Stable Zero123: pose convention, both published layouts, equivalence with the
diffusers community pipeline (expected outputs in tests/data, made by generate_reference.py)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from blend123.backend.progress import JobCancelled
from blend123.backend.synthesis.poses import zero123_pose_vector
from blend123.backend.synthesis.zero123 import Zero123Pipeline
from blend123.protocol.camera import SphericalPose, world_azimuth
from tests.data.scene_reference import RecordingPipe, centred_disc, zoomed_native_view
from tests.data.tiny_models import write_zero123_checkpoint

DATA = Path(__file__).parent / "data"
EXPECTED = np.load(DATA / "zero123_expected.npz")
#: float32 on CPU, same weights and noise: only summation order differs.
TOLERANCE = 1e-4


def _reference_poses():
    e0, a0, r0 = EXPECTED["reference_pose"]
    reference = SphericalPose(float(e0), world_azimuth(float(a0)), float(r0))
    targets = [SphericalPose(float(e), world_azimuth(float(a)), float(r)) for e, a, r in EXPECTED["target_poses"]]
    return reference, targets


def _zero123_get_T(reference_position, target_position):
    """Zero123's own recipe (zero123/ldm/data/simple.py get_T) from camera positions in
    Blender world: polar atan2(|xy|, z), azimuth atan2(y, x), radius |p|."""

    def spherical(p):
        x, y, z = p
        return math.atan2(math.hypot(x, y), z), math.atan2(y, x), math.sqrt(x * x + y * y + z * z)

    t0, a0, r0 = spherical(reference_position)
    t1, a1, r1 = spherical(target_position)
    da = (a1 - a0) % (2 * math.pi)
    return np.array([t1 - t0, math.sin(da), math.cos(da), r1 - r0])


def test_pose_vector_matches_zero123_recipe_from_blender_positions():
    reference = SphericalPose(20.0, world_azimuth(0.0), 2.0)
    for elevation, relative, radius in [(20.0, 90.0, 2.0), (-15.0, -45.0, 1.7), (60.0, 180.0, 2.5)]:
        target = SphericalPose(elevation, world_azimuth(relative), radius)
        ours = zero123_pose_vector(reference, target)
        np.testing.assert_allclose(ours, _zero123_get_T(reference.position(), target.position()), atol=1e-12)


def test_pose_vector_signs():
    reference = SphericalPose(0.0, world_azimuth(0.0), 2.0)
    right = zero123_pose_vector(reference, SphericalPose(0.0, world_azimuth(90.0), 2.0))
    # Relative +90 puts the camera on +X, the viewer's right: Zero123's d_azimuth is +90 deg.
    assert SphericalPose(0.0, world_azimuth(90.0)).position()[0] > 1.9
    assert right[1] == pytest.approx(1.0) and right[2] == pytest.approx(0.0, abs=1e-12)
    above = zero123_pose_vector(reference, SphericalPose(30.0, world_azimuth(0.0), 2.0))
    assert above[0] == pytest.approx(-math.radians(30.0))  # camera up = polar down
    stable = zero123_pose_vector(SphericalPose(10.0, -90.0, 2.0), SphericalPose(30.0, 0.0, 3.0), "stable-zero123")
    assert stable[3] == pytest.approx(math.radians(80.0))  # the input's absolute polar, not a radius delta


@pytest.mark.parametrize("variant,key", [("zero123", "zero123_views"), ("stable-zero123", "stable_zero123_views")])
def test_matches_community_pipeline(variant, key):
    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny", pose_variant=variant)
    reference, targets = _reference_poses()
    out = pipe(EXPECTED["image"], targets, reference=reference, num_inference_steps=int(EXPECTED["steps"]),
               guidance_scale=float(EXPECTED["guidance"]), latents=torch.from_numpy(EXPECTED["noise"]))
    assert out.shape == EXPECTED[key].shape
    assert np.abs(out - EXPECTED[key]).max() < TOLERANCE
    # The other variant's pose vector gives another image: the 4th value is live.
    other = "stable_zero123_views" if key == "zero123_views" else "zero123_views"
    assert np.abs(out - EXPECTED[other]).max() > 100 * TOLERANCE


def test_cc_projection_layout_loads_to_the_same_model(tmp_path):
    """kxic's layout: cc_projection/ with `projection.*`, same numbers through the same loader."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "kxic"
    shutil.copytree(DATA / "zero123_tiny", copy)
    state = load_file(str(copy / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    shutil.rmtree(copy / "clip_camera_projection")
    (copy / "cc_projection").mkdir()
    save_file({k.replace("proj.", "projection."): v for k, v in state.items()}, str(copy / "cc_projection" / "diffusion_pytorch_model.safetensors"))
    pipe = Zero123Pipeline.from_pretrained(copy)
    reference, targets = _reference_poses()
    out = pipe(EXPECTED["image"], targets, reference=reference, num_inference_steps=int(EXPECTED["steps"]),
               guidance_scale=float(EXPECTED["guidance"]), latents=torch.from_numpy(EXPECTED["noise"]))
    assert np.abs(out - EXPECTED["zero123_views"]).max() < TOLERANCE


@pytest.mark.parametrize("layout", ["clip_camera_projection", "cc_projection"])
def test_fresh_tiny_checkpoint_in_each_layout(tmp_path, layout):
    folder = write_zero123_checkpoint(tmp_path / layout, layout, seed=3)
    assert (folder / layout / "diffusion_pytorch_model.safetensors").is_file()
    pipe = Zero123Pipeline.from_pretrained(folder, pose_variant="stable-zero123")
    image = np.full((64, 64, 3), 255, np.uint8)
    image[16:48, 20:44] = (200, 40, 40)
    steps = []
    out = pipe(image, [SphericalPose(0.0, 0.0)], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               callback=lambda i, t, latents: steps.append(i))
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    assert steps == [0, 1]


def test_batched_poses_equal_one_by_one():
    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny")
    reference, targets = _reference_poses()
    noise = torch.from_numpy(EXPECTED["noise"])
    batched = pipe(EXPECTED["image"], targets, reference=reference, num_inference_steps=2, latents=noise)
    single = pipe(EXPECTED["image"], targets[1:2], reference=reference, num_inference_steps=2, latents=noise[1:2])
    assert np.abs(batched[1] - single[0]).max() < TOLERANCE


def test_cancel_from_the_callback_stops_sampling():
    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny")
    calls = []

    def callback(i, t, latents):
        calls.append(i)
        if i == 1:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        pipe(EXPECTED["image"], [SphericalPose(0.0, 0.0)], num_inference_steps=10, callback=callback)
    assert calls == [0, 1]


def _synth(name: str = "zero123-xl", model_size: int = 64):
    from blend123.backend.synthesis.adapters import Runtime, Zero123Synthesizer
    from blend123.backend.synthesis.registry import CARDS

    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny")
    synth = Zero123Synthesizer(pipe, Runtime("cpu", "float32"), CARDS[name], name)
    synth.model_size = model_size  # the tiny VAE works at any multiple of 8
    return synth


def _request(image, poses, camera, **kwargs):
    from blend123.backend.synthesis.registry import SynthesisRequest

    return SynthesisRequest(image, poses, SphericalPose(0.0, -90.0, 2.0), 33.8, camera, **kwargs)


def test_adapter_returns_rgba_in_the_asking_camera(tmp_path):
    from blend123.protocol.camera import CameraIntrinsics
    from tests.conftest import blob_image

    synth = _synth()
    fractions = []
    camera = CameraIntrinsics.from_blender(50, 36, 24, "AUTO", 0.0, 0.0, 48, 32)
    views = synth(_request(blob_image(), [SphericalPose(0.0, 0.0), SphericalPose(10.0, 30.0)], camera,
                           progress=lambda stage, f: fractions.append(f), steps=2, seed=1))
    assert views.shape == (2, 32, 48, 4) and views.dtype == np.uint8
    assert fractions == [0.5, 1.0]


def test_a_70_degree_view_is_the_native_output_resampled():
    """The model renders in its own 49.1 deg camera; the 70 deg view that comes back is that
    output zoomed out about the subject centre (an independent affine resample here)."""
    from blend123.backend.synthesis.adapters import keyed_rgba
    from blend123.protocol.camera import CameraIntrinsics

    synth = _synth()
    native = synth.card.native
    image = centred_disc()
    pose = SphericalPose(15.0, world_azimuth(40.0), 2.0)  # the reference's distance: native radius 1.85
    camera = CameraIntrinsics.from_blender(25.706, 36, 24, "AUTO", 0.0, 0.0, 80, 60)  # 70 deg across 80 px
    assert camera.fov_x_deg == pytest.approx(70.0, abs=0.1)
    request = _request(image, [pose], camera, steps=2, seed=3)
    got = synth.render(request)[0]
    frame = synth.render_native(request, [SphericalPose(pose.elevation_deg, pose.azimuth_deg, native.radius)])[0]
    expected, zoom = zoomed_native_view(keyed_rgba(frame), camera, native, native.radius, image, 2.0, 33.8, pose.radius)
    np.testing.assert_allclose(got[..., 3], expected[..., 3], atol=1e-4)
    np.testing.assert_allclose(got[..., :3] * got[..., 3:], expected[..., :3], atol=1e-4)
    s = synth.model_size
    # Zoomed out: the model's whole frame is a smaller square inside, transparent around it.
    assert 0.5 * s / zoom * camera.fx < camera.cx and got[0, 0, 3] == 0.0 and got[..., 3].max() == 1.0


@pytest.mark.parametrize("name, guidance", [("zero123-xl", 3.0), ("stable-zero123", 5.0)])
def test_tasks_run_the_models_own_default_guidance(tmp_path, monkeypatch, name, guidance):
    """Through the backend's task and the model registry, a request that leaves guidance
    unset runs the model's own default; one that sets it runs that."""
    from blend123.backend.synthesis.registry import WEIGHTS, ResidentModel
    from blend123.backend.tasks import TaskContext, run_task
    from blend123.protocol.messages import GenerationSettings, NovelView, View

    monkeypatch.setenv(WEIGHTS[name].env_var, str(DATA / "zero123_tiny"))
    models = ResidentModel()
    model = models.get(name)
    model.model_size = 64
    model.pipe = recorder = RecordingPipe(model.pipe)
    events = []
    ctx = TaskContext("job", tmp_path, lambda stage, f: None, events.append, models, lambda j: [], lambda j: None)
    poses = np.array([[0.0, 90.0, 0.0]])
    run_task(NovelView(centred_disc(), poses, GenerationSettings(model=name, resolution=32, steps=2)), ctx)
    run_task(NovelView(centred_disc(), poses, GenerationSettings(model=name, resolution=32, steps=2, guidance=1.5)), ctx)
    assert [c["guidance_scale"] for c in recorder.calls] == [guidance, 1.5]
    assert sum(isinstance(e, View) for e in events) == 2
