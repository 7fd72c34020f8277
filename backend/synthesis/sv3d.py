"""SV3D-u and SV3D-p: one image in, a 21-view orbit out, from the official sgm checkpoints.

Sampling follows generative-models (``scripts/sampling/simple_video_sample.py`` with
``sv3d_{u,p}.yaml``): EDM sigmas (700 -> 0.002, rho 7), v-prediction with EDM c_noise,
Euler steps; CLIP (OpenCLIP ViT-H) embedding as cross-attention context; the input's
*unscaled* VAE latent (of the image plus ``cond_aug`` noise) concatenated to every frame;
``[cond_aug | polar | azimuth]`` sinusoidal embeddings (256 + 512 + 512, only the first for
SV3D-u) projected and added to every frame's time embedding; per-frame triangular CFG
whose unconditional branch zeroes the CLIP embedding and the latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.utils.torch_utils import randn_tensor

from . import sv3d_convert
from .memory import MemoryManaged
from .weights import resolve
from .zero123 import CLIP_MEAN, CLIP_SIZE, CLIP_STD, images_to_tensor

NUM_FRAMES = 21
COND_AUG = 1e-5
CAMERA_DIMS = (256, 512, 512)  # cond_aug, polar, azimuth
StepCallback = Callable[[int, int, torch.Tensor], None]


def sinusoid(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """sgm's timestep embedding: [cos | sin] of x times geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def camera_vector(cond_aug: float, polars: torch.Tensor, azimuths: torch.Tensor, adm_dim: int) -> torch.Tensor:
    """(F, adm_dim) vector conditioning per frame; SV3D-u (256) embeds only cond_aug."""
    frames = polars.shape[0]
    parts = [sinusoid(torch.full((frames,), cond_aug, device=polars.device), CAMERA_DIMS[0])]
    if adm_dim == sum(CAMERA_DIMS):
        parts += [sinusoid(polars, CAMERA_DIMS[1]), sinusoid(azimuths, CAMERA_DIMS[2])]
    elif adm_dim != CAMERA_DIMS[0]:
        raise ValueError(f"unexpected SV3D vector size {adm_dim}")
    return torch.cat(parts, dim=-1)


def triangle_guidance(frames: int, max_scale: float, min_scale: float = 1.0) -> torch.Tensor:
    """Per-frame CFG scale: min at the first and last frame (next to and at the input view),
    max half-way round the orbit (generative-models' TrianglePredictionGuider, period 1)."""
    values = torch.linspace(0, 1, frames)
    wave = 2 * (values - torch.floor(values + 0.5)).abs()
    return wave * (max_scale - min_scale) + min_scale


def antialiased_clip_resize(x: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """Gaussian blur then bicubic (corners aligned), as kornia.geometry.resize(antialias=True)
    does in sgm's OpenCLIP embedder: sigma = (factor - 1) / 2, odd kernel >= 3 of ~4 sigma,
    reflect padding. (torch's own antialias=True resize is a different filter.)"""
    h, w = x.shape[-2:]
    factors = (h / size, w / size)
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        sizes = [int(max(4.0 * s, 3)) for s in sigmas]
        sizes = [k if k % 2 else k + 1 for k in sizes]
        for axis, (k, s) in enumerate(zip(sizes, sigmas)):
            n = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
            kernel = torch.exp(-(n**2) / (2.0 * s * s))
            kernel = kernel / kernel.sum()
            c = x.shape[1]
            if axis == 0:
                weight, pad = kernel.view(1, 1, k, 1).repeat(c, 1, 1, 1), (0, 0, k // 2, k // 2)
            else:
                weight, pad = kernel.view(1, 1, 1, k).repeat(c, 1, 1, 1), (k // 2, k // 2, 0, 0)
            x = F.conv2d(F.pad(x, pad, mode="reflect"), weight, groups=c)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """diffusers' spatio-temporal UNet, with the vector conditioning given *per frame*:
    SV3D's camera differs from frame to frame, SVD's micro-conditioning did not."""

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,  # (B, F, C, H, W)
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,  # (B, 1, D)
        camera_embeds: torch.Tensor,  # (B, F, adm) sinusoids, see camera_vector
        return_dict: bool = False,
    ):
        batch, frames = sample.shape[:2]
        t = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))  # (B, E)
        aug = self.add_embedding(camera_embeds.reshape(batch * frames, -1).to(sample.dtype))
        emb = emb.repeat_interleave(frames, dim=0) + aug
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)
        x = self.conv_in(sample.flatten(0, 1))
        image_only = torch.zeros(batch, frames, dtype=x.dtype, device=x.device)
        skips = (x,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            x, res = block(hidden_states=x, temb=emb, image_only_indicator=image_only, **kwargs)
            skips += res
        x = self.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=context, image_only_indicator=image_only)
        for block in self.up_blocks:
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, image_only_indicator=image_only, **kwargs)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        out = x.reshape(batch, frames, *x.shape[1:])
        return out if not return_dict else {"sample": out}


def edm_scheduler() -> EulerDiscreteScheduler:
    """sgm's EulerEDMSampler + EDMDiscretization(sigma_max=700) + VScalingWithEDMcNoise as a
    diffusers scheduler: Karras sigmas are EDM's rho-7 ramp; 'leading' spacing makes the
    initial noise scale sqrt(sigma_max^2 + 1) as sgm's sampler does; timesteps 0.25 log sigma."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        final_sigmas_type="zero",
        steps_offset=0,
    )


class SV3DPipeline(MemoryManaged, DiffusionPipeline):
    """A 21-view orbit (or any 21 cameras, SV3D-p) of one image, denoised together.

    The VAE stays in float32 whatever the UNet's dtype, as generative-models runs it
    (``disable_first_stage_autocast``); ``memory_plan`` (see :mod:`.memory`) decides whether
    guidance's two halves run as one batch and how many frames the VAE decodes at a time."""

    model_cpu_offload_seq = "image_encoder->unet->vae"

    def __init__(self, vae: AutoencoderKL, image_encoder, unet: SV3DUNet, scheduler: EulerDiscreteScheduler):
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def takes_poses(self) -> bool:
        """SV3D-p: cameras are inputs; SV3D-u: a static orbit at the input's elevation."""
        return self.unet.config.projection_class_embeddings_input_dim == sum(CAMERA_DIMS)

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, filename: str = "", **kwargs) -> "SV3DPipeline":
        """``sv3d_p.safetensors`` / ``sv3d_u.safetensors`` (a file, a folder holding it, or a
        cached repo id such as ``stabilityai/sv3d`` with ``filename``)."""
        path = resolve(path_or_repo_id, filename)
        if path.is_dir():
            names = [filename] if filename else ["sv3d_p.safetensors", "sv3d_u.safetensors"]
            found = [path / n for n in names if (path / n).is_file()]
            if not found:
                raise FileNotFoundError(f"no {' or '.join(names)} in {path}")
            path = found[0]
        return cls.from_single_file(path, **kwargs)

    @classmethod
    def from_single_file(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        unet_head_dim: int = sv3d_convert.UNET_HEAD_DIM,
        clip_head_dim: int = sv3d_convert.CLIP_HEAD_DIM,
    ) -> "SV3DPipeline":
        from safetensors.torch import load_file
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        dtype = torch_dtype or torch.float32
        parts = sv3d_convert.split_checkpoint(load_file(str(path)))
        with torch.device("meta"):  # no random init of ~2.5B parameters; weights assigned below
            unet_cfg = sv3d_convert.unet_config(parts.unet, unet_head_dim)
            unet = SV3DUNet(**unet_cfg)
            vae_cfg = sv3d_convert.vae_config(parts.vae)
            vae = AutoencoderKL(**vae_cfg)
            clip_cfg = sv3d_convert.clip_config(parts.clip, clip_head_dim)
            clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))
        _assign(unet, sv3d_convert.convert_unet(parts.unet, unet_cfg), dtype)
        _assign(vae, sv3d_convert.convert_vae(parts.vae, vae_cfg), torch.float32)  # sgm: VAE never autocast
        _assign(clip, sv3d_convert.convert_clip(parts.clip, clip_cfg), dtype)
        clip.config._attn_implementation = "sdpa"
        return cls(vae.eval(), clip.eval(), unet.eval(), edm_scheduler())

    # --- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        x = antialiased_clip_resize(pixels.float())
        x = (x + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(x).image_embeds[:, None]  # (1, 1, D)

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        poses: Sequence[tuple[float, float]] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.5,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        elevation_deg: float = 0.0,
        min_guidance_scale: float = 1.0,
        cond_aug: float = COND_AUG,
        decode_chunk_size: int = 7,
        output_type: str = "np",
    ) -> np.ndarray | torch.Tensor:
        """Frames of ``image`` (prepared: subject centred on white, 576 px for real weights).

        ``poses``: SV3D-p only, 21 (elevation deg, azimuth deg relative to the input view)
        pairs; default the model's own orbit (azimuths 360 (i + 1) / 21, input view last) at
        ``elevation_deg``. ``guidance_scale`` is the triangle's peak (the back view).
        ``latents`` (21, 4, h, w) replace the initial noise; the ``generator`` then only
        draws the conditioning image's noise augmentation (before the latents otherwise).
        Returns (21, H, W, 3) floats in [0, 1] (the model's frames; the caller decides
        whether to paste the input over the input view), or latents.
        """
        if poses is None:
            poses = [(elevation_deg, 360.0 * (i + 1) / NUM_FRAMES % 360.0) for i in range(NUM_FRAMES)]
        elif not self.takes_poses:
            raise ValueError("SV3D-u takes no poses: it renders its static orbit; use sv3d-p for other cameras")
        if len(poses) != NUM_FRAMES:
            raise ValueError(f"SV3D renders exactly {NUM_FRAMES} views, got {len(poses)} poses")
        device, dtype = self._execution_device, self.unet.dtype
        pixels = images_to_tensor(image).to(device=device, dtype=torch.float32)
        if pixels.shape[0] != 1:
            raise ValueError("one input image per call")
        h, w = (s // self.vae_scale_factor for s in pixels.shape[-2:])

        embeds = self.encode_image(pixels).to(dtype)
        augmented = pixels + cond_aug * randn_tensor(pixels.shape, generator=generator, device=device, dtype=torch.float32)
        image_latent = self.vae.encode(augmented.to(self.vae.dtype)).latent_dist.mode().to(dtype)  # unscaled

        polars = torch.tensor([math.radians(90.0 - e) for e, _ in poses], device=device)
        azimuths = torch.tensor([math.radians(a % 360.0) for _, a in poses], device=device)
        vector = camera_vector(cond_aug, polars, azimuths, self.unet.config.projection_class_embeddings_input_dim)
        # Unconditional branch first; the camera vector is the same in both.
        context = torch.cat([torch.zeros_like(embeds), embeds])
        concat = torch.stack([torch.zeros_like(image_latent), image_latent])  # (2, 1, 4, h, w)
        concat = concat.expand(2, NUM_FRAMES, -1, -1, -1)
        vector = vector[None].expand(2, -1, -1)
        scales = triangle_guidance(NUM_FRAMES, guidance_scale, min_guidance_scale).to(device).view(NUM_FRAMES, 1, 1, 1)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (NUM_FRAMES, self.unet.config.out_channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma

        for i, t in enumerate(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t).to(dtype)
            x = torch.cat([x[None].expand(2, -1, -1, -1, -1), concat], dim=2)
            if self.memory_plan.batched_cfg:
                out = self.unet(x, t, context, vector).float()
                uncond, cond = out[0], out[1]
            else:  # one pass after the other: half the activations
                uncond, cond = (self.unet(x[k : k + 1], t, context[k : k + 1], vector[k : k + 1]).float()[0] for k in (0, 1))
            # Mixing v-predictions mixes the denoised estimates sgm's guider mixes: same thing.
            guided = uncond + scales * (cond - uncond)
            latents = self.scheduler.step(guided, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(i, int(i), latents)  # continuous EDM timesteps: report the step index

        if output_type == "latent":
            return latents
        frames = []
        for chunk in latents.split(self.memory_plan.decode_frames or decode_chunk_size):
            frames.append(self.vae.decode((chunk / self.vae.config.scaling_factor).to(self.vae.dtype)).sample.float())
        video = torch.cat(frames)
        return ((video + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _assign(module: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Load a converted state dict into a meta-initialised module, exactly (strict)."""
    state = {k: v.to(dtype) for k, v in state.items()}
    expected = set(module.state_dict())
    missing, extra = expected - set(state), set(state) - expected
    # Non-persistent buffers (e.g. CLIP position ids) are rebuilt below, never in checkpoints.
    buffers = {name for name, _ in module.named_buffers()}
    missing -= buffers
    if missing or extra:
        raise ValueError(f"checkpoint does not fit {type(module).__name__}: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    module.load_state_dict(state, strict=False, assign=True)
    for name, buffer in list(module.named_buffers()):
        if buffer.is_meta:
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "position_ids":
                owner.register_buffer(leaf, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
            else:
                raise ValueError(f"buffer {name} has no value")
