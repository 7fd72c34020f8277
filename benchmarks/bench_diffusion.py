"""View-synthesis speed and peak VRAM with the real architectures and random weights.

CUDA: Zero123-XL per view at 256x256 (20 and 50 DDIM steps, CFG), SV3D-p 21-view orbit at
576x576 (25 and 50 Euler steps, triangular CFG), fp16 (``--dtype bfloat16`` to compare),
in each memory mode asked for (``--memory full balanced low``; see
backend/synthesis/memory.py). SV3D's VAE runs in float32 as generative-models runs it.
CPU: a smoke run of the same code with the tiny test models (numbers only prove it runs),
or with ``--full`` the real architectures (fp32) for what they cost without a GPU.

    python benchmarks/bench_diffusion.py [--dtype float16] [--compile] [--json out.json]
    python benchmarks/bench_diffusion.py --models sv3d --memory full balanced low --steps 25
    python benchmarks/bench_diffusion.py --full --models zero123 --views 1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def full_zero123(dtype, device):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from blend123.backend.synthesis.zero123 import PoseProjection, Zero123Pipeline

    with torch.device(device):
        unet = UNet2DConditionModel(in_channels=8, out_channels=4, cross_attention_dim=768, attention_head_dim=8, sample_size=32)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                              num_attention_heads=16, patch_size=14, image_size=224, projection_dim=768))
        proj = PoseProjection(772, 768)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = Zero123Pipeline(vae, clip, unet, scheduler, proj)
    return pipe.to(device, dtype)


def full_sv3d(dtype, device):
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from blend123.backend.synthesis.sv3d import SV3DPipeline, SV3DUNet, edm_scheduler

    with torch.device(device):
        unet = SV3DUNet(projection_class_embeddings_input_dim=1280, num_frames=21)
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, use_post_quant_conv=False)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                                                              patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"))
    pipe = SV3DPipeline(vae, clip, unet, edm_scheduler()).to(device, dtype)
    pipe.vae.to(torch.float32)  # as SV3DPipeline.from_single_file loads it
    return pipe


def tiny_pipelines(tmp: Path):
    from blend123.backend.synthesis.sv3d import SV3DPipeline
    from blend123.backend.synthesis.zero123 import Zero123Pipeline
    from tests.data.tiny_models import SV3D_TINY_UNET_HEAD_DIM, write_sv3d_checkpoint

    zero = Zero123Pipeline.from_pretrained(REPO / "tests" / "data" / "zero123_tiny")
    sv3d = SV3DPipeline.from_pretrained(write_sv3d_checkpoint(tmp / "sv3d_p.safetensors", "sv3d_p"), unet_head_dim=SV3D_TINY_UNET_HEAD_DIM)
    return zero, sv3d


def quiet(pipe, compile_unet: bool) -> None:
    """No progress bars while timing; ``torch.compile`` the UNet if asked."""
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    pipe.set_progress_bar_config(disable=True)


def subject_on_white(size: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A flat-coloured block on white: input preparation finds it like a real subject."""
    image = np.full((size, size, 3), 255, np.uint8)
    image[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = colour
    return image


def timed(fn, device) -> tuple[float, int, int]:
    """(seconds, peak allocated bytes, peak reserved bytes) of one call."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device != "cuda":
        return seconds, 0, 0
    return seconds, int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNets (CUDA)")
    parser.add_argument("--views", type=int, nargs="+", default=[4], help="Zero123 views per batch (several: one run each)")
    parser.add_argument("--memory", nargs="+", default=["full"], choices=["full", "balanced", "low"], help="memory modes to run")
    parser.add_argument("--full", action="store_true", help="the real architectures on the CPU too (slow)")
    parser.add_argument("--models", nargs="+", default=["zero123", "sv3d"], choices=["zero123", "sv3d"])
    parser.add_argument("--steps", type=int, nargs="+", help="step counts (default: 20 50 for Zero123, 25 50 for SV3D; 2 for the smoke run)")
    parser.add_argument("--json", type=Path)
    return parser


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    from blend123.backend.synthesis.memory import apply_memory_mode
    from blend123.protocol.camera import SphericalPose

    parser = build_parser()
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    full = cuda or args.full
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    torch.set_grad_enabled(False)
    label = torch.cuda.get_device_name() if cuda else ("cpu" if full else "cpu (smoke: tiny models)")
    results = {"device": label, "dtype": str(dtype).split(".")[-1], "threads": torch.get_num_threads(), "runs": []}

    def steps_for(defaults: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(args.steps) if args.steps else defaults if full else (2,)

    def record(run: dict) -> None:
        results["runs"].append(run)
        print(json.dumps(run), flush=True)

    tiny = None if full else tiny_pipelines(Path(tempfile.mkdtemp()))
    if "zero123" in args.models:
        zero, z_size = (full_zero123(dtype, device), 256) if full else (tiny[0], 64)
        quiet(zero, compile_unet=args.compile and cuda)
        image = subject_on_white(z_size, (180, 60, 40))
        most = max(args.views)
        poses = [SphericalPose(10.0, -90.0 + 360.0 * i / most) for i in range(most)]
        for mode in args.memory:
            apply_memory_mode(zero, mode, device)
            # Warm-up (kernels, cuDNN's autotuning, compile) at every batch size timed: on an H200 a
            # 1-view call after a 4-view warm-up took 0.82-0.92 s once, then 0.53 s.
            for views in sorted(set(args.views)):
                zero(image, poses[:views], num_inference_steps=2)
            for steps in steps_for((20, 50)):
                for views in args.views:
                    seconds, peak, reserved = timed(lambda: zero(image, poses[:views], num_inference_steps=steps, guidance_scale=3.0,
                                                                 generator=torch.Generator().manual_seed(0)), device)
                    record({"model": "zero123-xl", "memory": mode, "size": z_size, "steps": steps, "views": views, "seconds": round(seconds, 3),
                            "seconds_per_view": round(seconds / views, 3), "peak_vram_gib": round(peak / 2**30, 2),
                            "peak_reserved_gib": round(reserved / 2**30, 2)})
        apply_memory_mode(zero, "full", device)
        del zero
        if cuda:
            torch.cuda.empty_cache()
    if "sv3d" in args.models:
        sv3d, s_size = (full_sv3d(dtype, device), 576) if full else (tiny[1], 64)
        quiet(sv3d, compile_unet=args.compile and cuda)
        image = subject_on_white(s_size, (40, 90, 200))
        for mode in args.memory:
            apply_memory_mode(sv3d, mode, device)
            sv3d(image, None, num_inference_steps=1)  # warm-up
            for steps in steps_for((25, 50)):
                seconds, peak, reserved = timed(lambda: sv3d(image, None, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)), device)
                record({"model": "sv3d-p", "memory": mode, "size": s_size, "steps": steps, "views": 21, "seconds": round(seconds, 3),
                        "seconds_per_view": round(seconds / 21, 3), "peak_vram_gib": round(peak / 2**30, 2),
                        "peak_reserved_gib": round(reserved / 2**30, 2)})
        apply_memory_mode(sv3d, "full", device)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
