"""Memory modes: the policy (free memory, BLEND123_MEMORY), and full / balanced / low giving
the same images on the tiny Zero123 and SV3D checkpoints, each mode's code path shown to run
(two UNet passes per step, chunked VAE decoding, offload hooks, sliced attention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blend123.backend.synthesis.memory import (
    GIB,
    MemoryMode,
    SlicedAttention,
    apply_memory_mode,
    choose_memory_mode,
    sliced_attention_calls,
)
from blend123.protocol.camera import SphericalPose
from blend123.protocol.errors import Blend123Error

DATA = Path(__file__).parent / "data"
#: float32 on the CPU: the modes differ only in batch sizes (summation order). Zero123
#: images (in [0, 1]): measured max |difference| 2.4e-6 (balanced), 2.1e-6 (low).
MODE_TOLERANCE = 1e-5
#: SV3D's latents start at sigma 700, so float32 rounding there reaches ~1e-4 on the
#: images (measured 9.7e-5 in balanced); a wrong camera or guidance moves them by > 1e-2.
SV3D_MODE_TOLERANCE = 5e-4


# --- policy --------------------------------------------------------------------------------


def test_mode_follows_free_memory_per_family():
    assert choose_memory_mode(None, {}) is MemoryMode.FULL  # no GPU
    assert choose_memory_mode(80 * GIB, {}, "sv3d") is MemoryMode.FULL
    assert choose_memory_mode(22 * GIB, {}, "sv3d") is MemoryMode.FULL
    assert choose_memory_mode(22 * GIB - 1, {}, "sv3d") is MemoryMode.BALANCED
    assert choose_memory_mode(13 * GIB, {}, "sv3d") is MemoryMode.BALANCED
    assert choose_memory_mode(10 * GIB, {}, "sv3d") is MemoryMode.LOW
    # A 12 GB card runs Zero123 in full but SV3D in low.
    assert choose_memory_mode(11 * GIB, {}, "zero123") is MemoryMode.FULL
    assert choose_memory_mode(11 * GIB, {}, "sv3d") is MemoryMode.LOW
    assert choose_memory_mode(5 * GIB, {}, "zero123") is MemoryMode.LOW


def test_environment_overrides_and_bad_values_say_what_to_set():
    assert choose_memory_mode(80 * GIB, {"BLEND123_MEMORY": "low"}) is MemoryMode.LOW
    assert choose_memory_mode(None, {"BLEND123_MEMORY": " Balanced "}) is MemoryMode.BALANCED
    assert choose_memory_mode(4 * GIB, {"BLEND123_MEMORY": "auto"}) is MemoryMode.LOW
    with pytest.raises(Blend123Error) as caught:
        choose_memory_mode(80 * GIB, {"BLEND123_MEMORY": "tiny"})
    assert "'tiny'" in caught.value.message and "full, balanced or low" in caught.value.hint


def test_runtime_reads_dtype_memory_and_compile_from_the_environment():
    from blend123.backend.synthesis.adapters import Runtime

    runtime = Runtime.detect("zero123", env={"BLEND123_MEMORY": "low", "BLEND123_DTYPE": "bfloat16", "BLEND123_COMPILE": "1"})
    assert (runtime.memory, runtime.dtype, runtime.compile) == ("low", torch.bfloat16, True)
    if not torch.cuda.is_available():
        assert Runtime.detect("sv3d", env={}) == Runtime("cpu", "float32", False, "full")
    for bad in ({"BLEND123_DTYPE": "fp8"}, {"BLEND123_COMPILE": "yes"}, {"BLEND123_MEMORY": "huge"}):
        with pytest.raises(Blend123Error):
            Runtime.detect("sv3d", env=bad)


def test_doctor_and_hello_report_the_mode():
    from blend123.backend.doctor import memory_check
    from blend123.backend.synthesis.registry import MODELS

    check = memory_check(free_bytes=16 * GIB, env={}, gpu=True)
    assert check.ok and "SV3D balanced" in check.detail and "Zero123 full" in check.detail and "16.0 GiB free" in check.detail
    assert "set by BLEND123_MEMORY" in memory_check(env={"BLEND123_MEMORY": "low"}, gpu=False).detail
    bad = memory_check(env={"BLEND123_MEMORY": "x"}, gpu=False)
    assert not bad.ok and bad.problem and "full, balanced or low" in bad.fix
    assert MODELS["sv3d-p"].info(16 * GIB).memory_mode == "balanced"
    assert MODELS["zero123-xl"].info(16 * GIB).memory_mode == "full"
    assert MODELS["default"].info(16 * GIB).memory_mode == ""


def test_hello_reply_without_the_field_still_decodes():
    """An older backend's hello has no memory_mode: the add-on reads it as ''."""
    import msgpack

    from blend123.protocol.codec import decode, encode
    from blend123.protocol.messages import HelloReply, ModelInfo

    reply = HelloReply("0.1.0", 1, "cuda", [ModelInfo("sv3d-p", "orbit", True, memory_mode="low")], memory_mode="low")
    frames = [bytes(f) for f in encode(reply)]
    back = decode(frames).message
    assert back.memory_mode == "low" and back.models[0].memory_mode == "low"
    header = msgpack.unpackb(frames[0], raw=False)
    del header["b"]["memory_mode"], header["b"]["models"][0]["memory_mode"]
    old = decode([msgpack.packb(header, use_bin_type=True)] + frames[1:]).message
    assert old.memory_mode == "" and old.models[0].memory_mode == ""


# --- Zero123 ---------------------------------------------------------------------------------


class Counter:
    """Forward calls of a module, and the batch size of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(lambda m, args, kwargs: self.batches.append(_batch(args, kwargs)), with_kwargs=True)

    def take(self) -> list[int]:
        out, self.batches = self.batches, []
        return out


def _batch(args, kwargs) -> int:
    x = args[0] if args else next(iter(kwargs.values()))
    return int(x.shape[0])


@pytest.fixture(scope="module")
def zero123():
    from blend123.backend.synthesis.zero123 import Zero123Pipeline

    return Zero123Pipeline.from_pretrained(DATA / "zero123_tiny")


def _zero123_views(pipe, steps: int = 2):
    from tests.test_zero123 import EXPECTED, _reference_poses

    reference, targets = _reference_poses()
    return pipe(EXPECTED["image"], targets, reference=reference, num_inference_steps=steps, guidance_scale=3.0,
                latents=torch.from_numpy(EXPECTED["noise"]))


def test_zero123_modes_give_the_same_images(zero123):
    pipe = zero123
    unet, decoder = Counter(pipe.unet), Counter(pipe.vae.decoder)
    try:
        apply_memory_mode(pipe, "full", "cpu")
        full = _zero123_views(pipe)
        views = full.shape[0]
        assert views > 1
        assert unet.take() == [2 * views] * 2 and decoder.take() == [views]  # doubled batch, one decode

        apply_memory_mode(pipe, "balanced", "cpu")
        balanced = _zero123_views(pipe)
        assert unet.take() == [views] * 4  # two passes a step
        assert decoder.take() == [2] * (views // 2) + [1] * (views % 2)
        assert np.abs(balanced - full).max() < MODE_TOLERANCE

        apply_memory_mode(pipe, "low", "cpu", attention_slice_bytes=1)  # slice every attention call
        low = _zero123_views(pipe)
        assert unet.take() == [views] * 4 and decoder.take() == [1] * views
        # CLIP, the VAE's encoder, the pose projection, the UNet, the VAE's decoder: one at a time.
        order = ["image_encoder", "vae", "projection", "unet", "vae"]
        assert list(pipe.offload.moves) == order
        assert pipe.offload.resident == "vae" and sliced_attention_calls(pipe) > 0
        assert np.abs(low - full).max() < MODE_TOLERANCE
        # A second call moves the encoder back in first: the hooks stay live.
        _zero123_views(pipe, steps=1)
        assert list(pipe.offload.moves) == order * 2

        apply_memory_mode(pipe, "full", "cpu")  # undone: hooks off, processors back
        assert pipe.offload is None
        assert not any(isinstance(p, SlicedAttention) for p in pipe.unet.attn_processors.values())
        assert "encode" not in pipe.vae.__dict__
        np.testing.assert_array_equal(_zero123_views(pipe), full)
    finally:
        unet.handle.remove()
        decoder.handle.remove()
        apply_memory_mode(pipe, "full", "cpu")


def test_place_applies_the_runtimes_mode(zero123):
    from blend123.backend.synthesis.adapters import Runtime, place

    try:
        place(zero123, Runtime("cpu", "float32", memory="low"))
        assert zero123.memory_plan.mode is MemoryMode.LOW and zero123.offload is not None
        assert zero123._execution_device == torch.device("cpu")
    finally:
        apply_memory_mode(zero123, "full", "cpu")


def test_sds_guide_in_low_mode_gives_the_full_mode_gradient(zero123):
    """Masked SDS through an offloaded pipeline: the UNet is resident when the guide starts
    (SDS takes its device from it), and the gradient is the full mode's."""
    from blend123.backend.synthesis.adapters import Runtime, Zero123Synthesizer
    from blend123.backend.synthesis.registry import CARDS
    from tests.conftest import blob_image

    synth = Zero123Synthesizer(zero123, Runtime("cpu", "float32"), CARDS["zero123-xl"], "zero123-xl")
    synth.model_size = 64
    c2w = SphericalPose(0.0, -90.0, 2.0).to_c2w()
    target = SphericalPose(10.0, 0.0, 2.0).to_c2w()
    mask = torch.ones(1, 1, 64, 64)

    def gradient():
        guide = synth.sds_guide(blob_image(), c2w)
        rendered = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        guide.loss(rendered, mask, target, torch.Generator().manual_seed(1)).backward()
        return rendered.grad

    try:
        apply_memory_mode(zero123, "full", "cpu")
        full = gradient()
        apply_memory_mode(zero123, "low", "cpu")
        guide = synth.sds_guide(blob_image(), c2w)
        assert zero123.offload.resident == "unet"
        low = gradient()
        assert full.abs().sum() > 0 and torch.allclose(low, full, atol=1e-6, rtol=1e-4)
    finally:
        apply_memory_mode(zero123, "full", "cpu")
        zero123.vae.requires_grad_(True)


# --- SV3D ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sv3d(tmp_path_factory):
    from blend123.backend.synthesis.sv3d import SV3DPipeline
    from tests.data.tiny_models import SV3D_TINY_UNET_HEAD_DIM, write_sv3d_checkpoint

    path = write_sv3d_checkpoint(tmp_path_factory.mktemp("sv3d") / "sv3d_p.safetensors", "sv3d_p", seed=5)
    return SV3DPipeline.from_pretrained(path, unet_head_dim=SV3D_TINY_UNET_HEAD_DIM)


def _subject(size: int = 64) -> np.ndarray:
    image = np.full((size, size, 3), 255, np.uint8)
    image[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = (40, 90, 200)
    return image


def _sv3d_frames(pipe, output_type: str = "np"):
    noise = torch.randn(21, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    return pipe(_subject(), None, num_inference_steps=2, generator=torch.Generator().manual_seed(3), latents=noise, output_type=output_type)


def test_sv3d_modes_give_the_same_frames(sv3d):
    pipe = sv3d
    assert pipe.vae.dtype == torch.float32  # as sgm decodes, whatever the UNet runs in
    unet, decoder = Counter(pipe.unet), Counter(pipe.vae.decoder)
    try:
        apply_memory_mode(pipe, "full", "cpu")
        full = _sv3d_frames(pipe)
        assert full.shape == (21, 64, 64, 3)
        assert unet.take() == [2, 2] and decoder.take() == [7, 7, 7]  # (cond, uncond) batch; decoding_t 7

        apply_memory_mode(pipe, "balanced", "cpu")
        balanced = _sv3d_frames(pipe)
        assert unet.take() == [1] * 4 and decoder.take() == [2] * 10 + [1]
        assert np.abs(balanced - full).max() < SV3D_MODE_TOLERANCE

        apply_memory_mode(pipe, "low", "cpu", attention_slice_bytes=1)
        low = _sv3d_frames(pipe)
        assert unet.take() == [1] * 4 and decoder.take() == [1] * 21
        assert list(pipe.offload.moves) == ["image_encoder", "vae", "unet", "vae"]  # encode, denoise, decode
        assert sliced_attention_calls(pipe) > 0
        assert np.abs(low - full).max() < SV3D_MODE_TOLERANCE
    finally:
        unet.handle.remove()
        decoder.handle.remove()
        apply_memory_mode(pipe, "full", "cpu")


# --- on a GPU (benchmarks/gpu_check.py runs these) --------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (benchmarks/gpu_check.py runs it there)")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_modes_agree_and_low_offloads(dtype):
    from blend123.backend.synthesis.zero123 import Zero123Pipeline

    pipe = Zero123Pipeline.from_pretrained(DATA / "zero123_tiny", torch_dtype=dtype).to("cuda")
    outs = {}
    for mode in ("full", "balanced", "low"):
        apply_memory_mode(pipe, mode, "cuda")
        outs[mode] = _zero123_views(pipe)
        assert np.isfinite(outs[mode]).all()
    # Half precision on a GPU: kernels may differ with the batch size; ~1e-2 on [0, 1] pixels.
    for mode in ("balanced", "low"):
        assert np.abs(outs[mode] - outs["full"]).max() < 2e-2, mode
    assert pipe._execution_device == torch.device("cuda")
    assert pipe.unet.device.type == "cpu" and pipe.vae.device.type == "cuda"  # only the last one ran stays
    apply_memory_mode(pipe, "full", "cuda")
    assert pipe.unet.device.type == "cuda"


@pytest.mark.cuda
@needs_cuda
def test_cuda_sv3d_low_mode_matches_full():
    from blend123.backend.synthesis.sv3d import SV3DPipeline
    from tests.data.tiny_models import SV3D_TINY_UNET_HEAD_DIM, write_sv3d_checkpoint
    import tempfile

    path = write_sv3d_checkpoint(Path(tempfile.mkdtemp()) / "sv3d_p.safetensors", "sv3d_p", seed=5)
    pipe = SV3DPipeline.from_pretrained(path, unet_head_dim=SV3D_TINY_UNET_HEAD_DIM, torch_dtype=torch.float16).to("cuda")
    apply_memory_mode(pipe, "full", "cuda")
    full = _sv3d_frames(pipe)
    apply_memory_mode(pipe, "low", "cuda")
    low = _sv3d_frames(pipe)
    assert np.isfinite(low).all() and np.abs(low - full).max() < 2e-2
