"""SV3D-u / SV3D-p from sgm single-file checkpoints: conversion, sampling equivalence with
generative-models' own sampler (expected data made by tests/data/generate_reference.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from blend123.protocol.errors import ProtocolError
from blend123.backend.synthesis.poses import sv3d_angles
from blend123.backend.synthesis.sv3d import SV3DPipeline, triangle_guidance
from blend123.protocol.camera import SphericalPose, orbit_relative_azimuths, world_azimuth
from tests.data.sv3d_reference import CROP, SEEDS, sv3d_inputs
from tests.data.tiny_models import SV3D_TINY_UNET_HEAD_DIM, write_sv3d_checkpoint

DATA = Path(__file__).parent / "data"
EXPECTED = np.load(DATA / "sv3d_expected.npz")
#: Latents start at sigma 700: float32 rounding of sigmas (diffusers computes them in float64)
#: leaves ~3e-4 on latents of std 0.5; a wrong camera moves them by ~0.1 even in 3 steps.
LATENT_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("sv3d")
    return {v: write_sv3d_checkpoint(root / f"{v}.safetensors", v, seed=SEEDS[v]) for v in ("sv3d_u", "sv3d_p")}


def _load(path) -> SV3DPipeline:
    return SV3DPipeline.from_pretrained(path, unet_head_dim=SV3D_TINY_UNET_HEAD_DIM)


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_matches_sgm_sampler(checkpoints, variant):
    pipe = _load(checkpoints[variant])
    assert pipe.takes_poses == (variant == "sv3d_p")
    image, noise = sv3d_inputs()
    poses = [tuple(p) for p in EXPECTED["poses"]] if variant == "sv3d_p" else None
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    # CLIP with kornia's antialiased resize (256 -> 224) reproduced.
    assert np.abs(pipe.encode_image(pixels)[0].numpy() - EXPECTED[f"{variant}_clip"]).max() < 1e-5
    latents = pipe(image, poses, num_inference_steps=int(EXPECTED["steps"]), generator=torch.Generator().manual_seed(int(EXPECTED["seed"])),
                   latents=noise, output_type="latent")
    reference = EXPECTED[f"{variant}_latents"]
    assert np.abs(latents.numpy() - reference).max() < LATENT_TOLERANCE
    frame = pipe.vae.decode(torch.from_numpy(reference[:1]) / pipe.vae.config.scaling_factor).sample
    frame = ((frame + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).detach().numpy()[CROP, CROP]
    assert np.abs(frame - EXPECTED[f"{variant}_frame0"]).max() < 1e-4


def test_cameras_are_live_in_sv3d_p(checkpoints):
    pipe = _load(checkpoints["sv3d_p"])
    image, noise = sv3d_inputs()
    poses = [tuple(p) for p in EXPECTED["poses"]]
    mirrored = [(e, (-a) % 360.0) for e, a in poses]  # the other way round the object
    kwargs = dict(num_inference_steps=int(EXPECTED["steps"]), latents=noise, output_type="latent")
    out = pipe(image, mirrored, generator=torch.Generator().manual_seed(int(EXPECTED["seed"])), **kwargs)
    assert np.abs(out.numpy() - EXPECTED["sv3d_p_latents"]).max() > 20 * LATENT_TOLERANCE


def test_sv3d_u_refuses_poses(checkpoints):
    pipe = _load(checkpoints["sv3d_u"])
    with pytest.raises(ValueError, match="sv3d-p"):
        pipe(np.zeros((64, 64, 3), np.uint8), [(0.0, 0.0)] * 21, num_inference_steps=1)


def test_checkpoint_has_sgm_layout(checkpoints):
    from safetensors import safe_open

    with safe_open(str(checkpoints["sv3d_p"]), "pt") as f:
        keys = set(f.keys())
    for key in ["model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.weight",
                "conditioner.embedders.0.open_clip.model.visual.proj", "conditioner.embedders.1.encoder.quant_conv.weight",
                "first_stage_model.decoder.conv_out.weight"]:
        assert key in keys


def test_triangle_guidance():
    scales = triangle_guidance(21, 2.5)
    assert scales[0] == pytest.approx(1.0) and scales[-1] == pytest.approx(1.0)
    assert scales[10] == pytest.approx(2.5) and int(scales.argmax()) == 10
    assert torch.all(scales[1:11] > scales[:10])


def test_sv3d_angles_follow_the_orbit_convention():
    reference = SphericalPose(10.0, world_azimuth(0.0))
    targets = [SphericalPose(10.0, world_azimuth(a)) for a in orbit_relative_azimuths()]
    polars, azimuths = sv3d_angles(reference, targets)
    expected = np.deg2rad(np.linspace(0, 360, 22)[1:] % 360)  # generative-models' default orbit
    np.testing.assert_allclose(azimuths, expected, atol=1e-9)
    np.testing.assert_allclose(polars, math.radians(80.0))


def _synth(checkpoints, variant: str = "sv3d_p"):
    from blend123.backend.synthesis.adapters import Runtime, SV3DSynthesizer
    from blend123.backend.synthesis.registry import CARDS

    name = variant.replace("_", "-")
    synth = SV3DSynthesizer(_load(checkpoints[variant]), Runtime("cpu", "float32"), CARDS[name], name)
    synth.model_size = 64
    return synth


def _request(image, poses, camera, **kwargs):
    from blend123.backend.synthesis.registry import SynthesisRequest

    return SynthesisRequest(image, poses, SphericalPose(0.0, -90.0, 2.0), 33.8, camera, **kwargs)


def test_adapter_orbit_through_the_interface(checkpoints):
    from blend123.backend.synthesis.adapters import sv3d_frames_for
    from blend123.protocol.camera import CameraIntrinsics
    from tests.conftest import blob_image

    reference = SphericalPose(0.0, -90.0)
    synth = _synth(checkpoints)
    poses = [SphericalPose(5.0, world_azimuth(a)) for a in orbit_relative_azimuths()]
    fractions = []
    views = synth(_request(blob_image(), poses, CameraIntrinsics.square(33.8, 32), progress=lambda s, f: fractions.append(f), steps=2))
    assert views.shape == (21, 32, 32, 4)
    assert fractions == [0.5, 1.0]
    # A single novel view takes the orbit slot nearest its azimuth; sv3d-u refuses off-orbit cameras.
    cameras, slots = sv3d_frames_for(reference, [SphericalPose(30.0, world_azimuth(95.0))], free_cameras=True)
    assert cameras[slots[0]] == (30.0, 95.0) and len(cameras) == 21
    with pytest.raises(ProtocolError, match="sv3d-p"):
        sv3d_frames_for(reference, [SphericalPose(30.0, world_azimuth(95.0))], free_cameras=False)


def test_a_70_degree_view_is_the_native_output_resampled(checkpoints):
    """SV3D renders at 33.8 deg from its fixed distance; the 70 deg, 4:3 view that comes back
    is that frame zoomed out about the subject centre (independent affine resample)."""
    from blend123.backend.synthesis.adapters import keyed_rgba
    from blend123.protocol.camera import CameraIntrinsics
    from tests.data.scene_reference import centred_disc, zoomed_native_view

    synth = _synth(checkpoints)
    native = synth.card.native
    image = centred_disc()
    pose = SphericalPose(0.0, world_azimuth(90.0), 3.0)  # farther than SV3D's distance: the zoom does the rest
    camera = CameraIntrinsics.from_blender(25.706, 36, 24, "AUTO", 0.0, 0.0, 80, 60)
    request = _request(image, [pose], camera, steps=2, seed=2)
    got = synth.render(request)[0]
    frame = synth.render_native(request, [SphericalPose(0.0, pose.azimuth_deg, native.radius)])[0]
    expected, _ = zoomed_native_view(keyed_rgba(frame), camera, native, native.radius, image, 2.0, 33.8, pose.radius)
    np.testing.assert_allclose(got[..., 3], expected[..., 3], atol=1e-4)
    np.testing.assert_allclose(got[..., :3] * got[..., 3:], expected[..., :3], atol=1e-4)
    assert got[..., 3].max() == 1.0 and got[0, 0, 3] == 0.0


def test_tasks_run_sv3ds_own_default_guidance(checkpoints, tmp_path):
    """Through the backend's task: guidance left unset runs SV3D's triangle peak of 2.5."""
    from blend123.backend.tasks import TaskContext, run_task
    from blend123.protocol.messages import GenerationSettings, Orbit, View
    from tests.data.scene_reference import RecordingPipe, centred_disc

    synth = _synth(checkpoints)
    synth.pipe = recorder = RecordingPipe(synth.pipe)

    class Models:
        def get(self, name):
            assert name == "sv3d-p"
            return synth

    events = []
    ctx = TaskContext("job", tmp_path, lambda stage, f: None, events.append, Models(), lambda j: [], lambda j: None)
    run_task(Orbit(centred_disc(), [0.0], views=21, settings=GenerationSettings(model="sv3d-p", resolution=32, steps=1)), ctx)
    run_task(Orbit(centred_disc(), [0.0], views=21, settings=GenerationSettings(model="sv3d-p", resolution=32, steps=1, guidance=4.0)), ctx)
    assert [c["guidance_scale"] for c in recorder.calls] == [2.5, 4.0]
    assert sum(isinstance(e, View) for e in events) == 42


def test_sv3d_u_refuses_a_camera_off_its_orbit_before_any_work(checkpoints):
    from blend123.protocol.camera import CameraIntrinsics

    synth = _synth(checkpoints, "sv3d_u")
    with pytest.raises(ProtocolError, match="sv3d-p"):
        synth.check(_request(np.zeros((64, 64, 4), np.uint8), [SphericalPose(30.0, world_azimuth(95.0))], CameraIntrinsics.square(33.8, 32)))
