"""The adapters in bfloat16 and float16 on the CPU (tiny checkpoints): finite views close to
float32's; SV3D's VAE kept in float32 as generative-models runs it; ``BLEND123_COMPILE=1``
giving the same views as eager.

Tolerances are on the views in [0, 1] that ``render_native`` returns (3 Zero123 views, SV3D's
21), 2 sampling steps, measured on a 2-core x86 CPU with torch 2.13 (max / mean |difference|
from float32):

=========  ==================  ==================
           Zero123             SV3D
=========  ==================  ==================
bfloat16   0.029 / 0.0030      0.084 / 0.0063
float16    0.0027 / 0.00034    0.0097 / 0.00075
=========  ==================  ==================

SV3D's are larger: its EDM sampling starts at sigma 700, so the UNet's input rounding is
amplified. Another seed moves the views by 0.17 (Zero123) and 0.22 (SV3D) on average, far
above every mean allowed here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blend123.backend.synthesis.adapters import Runtime, SV3DSynthesizer, Zero123Synthesizer, place
from blend123.backend.synthesis.registry import CARDS, SynthesisRequest
from blend123.protocol.camera import CameraIntrinsics, SphericalPose, world_azimuth
from tests.conftest import blob_image

DATA = Path(__file__).parent / "data"
#: (max, mean) |difference| from float32 allowed, per family and dtype (1.4-2x measured).
TOLERANCES = {
    ("zero123", "bfloat16"): (0.04, 0.005),
    ("zero123", "float16"): (0.006, 0.0006),
    ("sv3d", "bfloat16"): (0.15, 0.013),
    ("sv3d", "float16"): (0.02, 0.0015),
}


def _request(poses, seed: int = 4) -> SynthesisRequest:
    return SynthesisRequest(blob_image(), poses, SphericalPose(0.0, -90.0, 2.0), 33.8, CameraIntrinsics.square(33.8, 32), steps=2, seed=seed)


def _zero123(dtype_name: str, memory: str = "full", env=None) -> Zero123Synthesizer:
    from blend123.backend.synthesis.zero123 import Zero123Pipeline

    runtime = Runtime("cpu", dtype_name, memory=memory) if env is None else Runtime.detect("zero123", env=env)
    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny", torch_dtype=runtime.dtype)
    synth = Zero123Synthesizer(place(pipe, runtime), runtime, CARDS["zero123-xl"], "zero123-xl")
    synth.model_size = 64
    return synth


ZERO123_POSES = [SphericalPose(0.0, world_azimuth(a)) for a in (30.0, 120.0, 200.0)]


@pytest.fixture(scope="module")
def sv3d_path(tmp_path_factory):
    from tests.data.tiny_models import write_sv3d_checkpoint

    return write_sv3d_checkpoint(tmp_path_factory.mktemp("sv3d") / "sv3d_p.safetensors", "sv3d_p", seed=5)


def _sv3d(path, dtype_name: str) -> SV3DSynthesizer:
    from blend123.backend.synthesis.sv3d import SV3DPipeline
    from tests.data.tiny_models import SV3D_TINY_UNET_HEAD_DIM

    runtime = Runtime("cpu", dtype_name)
    pipe = SV3DPipeline.from_pretrained(path, unet_head_dim=SV3D_TINY_UNET_HEAD_DIM, torch_dtype=runtime.dtype)
    synth = SV3DSynthesizer(place(pipe, runtime), runtime, CARDS["sv3d-p"], "sv3d-p")
    synth.model_size = 64
    return synth


def _sv3d_poses():
    return [SphericalPose(0.0, world_azimuth(a)) for a in np.linspace(0.0, 360.0, 22)[1:] % 360.0]


@pytest.fixture(scope="module")
def zero123_fp32():
    synth = _zero123("float32")
    request = _request(ZERO123_POSES)
    return synth.render_native(request, ZERO123_POSES), synth.render_native(_request(ZERO123_POSES, seed=5), ZERO123_POSES)


@pytest.fixture(scope="module")
def sv3d_fp32(sv3d_path):
    synth = _sv3d(sv3d_path, "float32")
    poses = _sv3d_poses()
    return synth.render_native(_request(poses), poses), synth.render_native(_request(poses, seed=5), poses)


def _close(views, reference, other_seed, key):
    max_tol, mean_tol = TOLERANCES[key]
    assert views.dtype == np.float32 and np.isfinite(views).all()
    diff = np.abs(views - reference)
    assert diff.max() < max_tol and diff.mean() < mean_tol, (key, diff.max(), diff.mean())
    assert np.abs(other_seed - reference).mean() > 5 * mean_tol  # the tolerance can tell views apart


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_zero123_adapter_in_half_precision(zero123_fp32, dtype_name):
    synth = _zero123(dtype_name)
    assert synth.pipe.unet.dtype == getattr(torch, dtype_name) and synth.pipe.vae.dtype == getattr(torch, dtype_name)
    _close(synth.render_native(_request(ZERO123_POSES), ZERO123_POSES), *zero123_fp32, ("zero123", dtype_name))


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_sv3d_adapter_in_half_precision_decodes_in_float32(sv3d_fp32, sv3d_path, dtype_name):
    synth = _sv3d(sv3d_path, dtype_name)
    assert synth.pipe.unet.dtype == getattr(torch, dtype_name) and synth.pipe.image_encoder.dtype == getattr(torch, dtype_name)
    assert synth.pipe.vae.dtype == torch.float32  # sgm: disable_first_stage_autocast
    poses = _sv3d_poses()
    _close(synth.render_native(_request(poses), poses), *sv3d_fp32, ("sv3d", dtype_name))


def test_zero123_bfloat16_in_low_memory_mode(zero123_fp32):
    """The cheapest configuration an artist can pick: bf16 weights, offload, sliced attention."""
    synth = _zero123("bfloat16", memory="low")
    assert synth.pipe.offload is not None
    _close(synth.render_native(_request(ZERO123_POSES), ZERO123_POSES), *zero123_fp32, ("zero123", "bfloat16"))


@pytest.mark.slow  # inductor compiles C++ kernels: ~3 min on a 2-core CPU
def test_compile_gives_the_same_views(zero123_fp32):
    """BLEND123_COMPILE=1 on the CPU: the UNet through torch.compile (inductor), same views."""
    synth = _zero123("", env={"BLEND123_COMPILE": "1", "BLEND123_DTYPE": "float32", "BLEND123_MEMORY": "full"})
    assert synth.runtime.compile and isinstance(synth.pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
    start = time.perf_counter()
    views = synth.render_native(_request(ZERO123_POSES), ZERO123_POSES)
    seconds = time.perf_counter() - start
    assert np.abs(views - zero123_fp32[0]).max() < 1e-4, seconds
