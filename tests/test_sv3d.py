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


def test_adapter_orbit_through_the_interface(checkpoints):
    from blend123.backend.synthesis.adapters import Runtime, SV3DSynthesizer, sv3d_frames_for
    from tests.conftest import blob_image

    reference = SphericalPose(0.0, -90.0)
    pipe = _load(checkpoints["sv3d_p"])
    synth = SV3DSynthesizer(pipe, Runtime("cpu", "float32"))
    synth.model_size = 64
    poses = [SphericalPose(5.0, world_azimuth(a)) for a in orbit_relative_azimuths()]
    fractions = []
    views = synth(blob_image(), poses, reference=reference, resolution=32, progress=lambda s, f: fractions.append(f), steps=2)
    assert views.shape == (21, 32, 32, 4)
    assert fractions == [0.5, 1.0]
    # A single novel view takes the orbit slot nearest its azimuth; sv3d-u refuses off-orbit cameras.
    cameras, slots = sv3d_frames_for(reference, [SphericalPose(30.0, world_azimuth(95.0))], free_cameras=True)
    assert cameras[slots[0]] == (30.0, 95.0) and len(cameras) == 21
    with pytest.raises(ProtocolError, match="sv3d-p"):
        sv3d_frames_for(reference, [SphericalPose(30.0, world_azimuth(95.0))], free_cameras=False)
