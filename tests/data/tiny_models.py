"""Tiny, randomly initialised checkpoints in the exact published layouts (no downloads).

Zero123: the diffusers folder of ashawkey/zero123-xl-diffusers (``clip_camera_projection/``
with ``proj``) or kxic/zero123-xl (``cc_projection/`` with ``projection``).
SV3D: the single sgm safetensors file of stabilityai/sv3d (``sv3d_u.safetensors``,
``sv3d_p.safetensors``), keys as generative-models names them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# --- Zero123 ------------------------------------------------------------------------------

ZERO123_IMAGE = 64  # pixels; the VAE keeps SD's factor 8, so latents are 8x8
CLIP_DIM = 32  # stands for 768


def tiny_zero123_components(seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from blend123.backend.synthesis.zero123 import PoseProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=ZERO123_IMAGE // 8,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=CLIP_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=ZERO123_IMAGE,
    )
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=CLIP_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            projection_dim=CLIP_DIM,
            hidden_act="quick_gelu",
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    projection = PoseProjection(CLIP_DIM + 4, CLIP_DIM)
    # Random weights everywhere (SD zero-initialises nothing that matters here, but make
    # sure conditioning paths are live).
    with torch.no_grad():
        for module in (unet, vae, clip, projection):
            for p in module.parameters():
                if p.ndim >= 1 and p.abs().sum() == 0:
                    p.normal_(0.0, 0.02)
    return vae, clip, unet, scheduler, projection


def write_zero123_checkpoint(folder: Path, layout: str = "clip_camera_projection", seed: int = 0, half: bool = False) -> Path:
    """A tiny Zero123 checkpoint in a published diffusers layout; returns ``folder``.

    ``half`` stores float16 weights (as the published fp16 checkpoints do; smaller files).
    """
    vae, clip, unet, scheduler, projection = tiny_zero123_components(seed)
    if half:
        for module in (vae, clip, unet, projection):
            module.half()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    clip.save_pretrained(folder / "image_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    write_projection(folder, projection, layout)
    fe = folder / "feature_extractor"
    fe.mkdir(exist_ok=True)
    (fe / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}))
    projection_class = ["zero123", "CLIPCameraProjection"] if layout == "clip_camera_projection" else ["pipeline_zero1to3", "CCProjection"]
    index = {
        "_class_name": "Zero123Pipeline" if layout == "clip_camera_projection" else "Zero1to3StableDiffusionPipeline",
        "_diffusers_version": "0.21.0",
        layout: projection_class,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder


# --- SV3D ---------------------------------------------------------------------------------

SV3D_MANIFEST = Path(__file__).resolve().parent / "sv3d_tiny_keys.json"
#: Head sizes of the tiny models (the real ones: 64 per UNet head, 80 per CLIP head).
SV3D_TINY_UNET_HEAD_DIM = 16


def tiny_value(key: str, shape: tuple[int, ...], rng) -> torch.Tensor:
    """A deterministic random value for one parameter, scaled so activations stay sane.

    sgm zero-initialises several output layers; random values keep every path live.
    """
    import numpy as np

    n = rng.standard_normal(shape).astype(np.float32)
    if key.endswith("mix_factor"):
        value = n
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        value = n * (0.7 / np.sqrt(fan_in))
    elif key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_in.weight", "norm_out.weight",
                       "ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight", ".0.weight")) and len(shape) == 1:
        value = 1.0 + 0.1 * n
    else:
        value = 0.05 * n
    return torch.from_numpy(np.ascontiguousarray(value)).to(torch.float16)


def write_sv3d_checkpoint(path: Path, variant: str, seed: int = 0) -> Path:
    """A tiny ``sv3d_u.safetensors`` / ``sv3d_p.safetensors`` with generative-models' key names
    (from the committed manifest, recorded from sgm's own modules) and seeded random values."""
    import numpy as np
    from safetensors.torch import save_file

    manifest = json.loads(SV3D_MANIFEST.read_text())[variant]
    rng = np.random.default_rng(seed)
    state = {key: tiny_value(key, tuple(shape), rng) for key, shape in manifest}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_projection(folder: Path, projection: "PoseProjection", layout: str) -> None:
    """Save a projection in one published layout, as the published checkpoints ship it."""
    from safetensors.torch import save_file

    from blend123.backend.synthesis.weights import ZERO123_PROJECTIONS

    names = dict(ZERO123_PROJECTIONS)
    if layout not in names:
        raise ValueError(f"layout must be one of {list(names)}")
    prefix = names[layout]
    sub = folder / layout
    sub.mkdir(parents=True, exist_ok=True)
    weight, bias = projection.proj.weight.detach().contiguous(), projection.proj.bias.detach().contiguous()
    save_file({f"{prefix}.weight": weight, f"{prefix}.bias": bias}, str(sub / "diffusion_pytorch_model.safetensors"))
    d_out, d_in = weight.shape
    if layout == "clip_camera_projection":  # ashawkey/*-diffusers (dreamgaussian's CLIPCameraProjection)
        config = {"_class_name": "CLIPCameraProjection", "_diffusers_version": "0.21.0", "embedding_dim": d_out, "additional_embeddings": d_in - d_out}
    else:  # kxic/* (the community pipeline's CCProjection)
        config = {"_class_name": "CCProjection", "_diffusers_version": "0.21.0", "in_channel": d_in, "out_channel": d_out}
    (sub / "config.json").write_text(json.dumps(config, indent=1))
