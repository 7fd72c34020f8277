"""Zero123-XL and Stable Zero123: one view in, novel views out (diffusers-layout checkpoints).

Sampling follows the diffusers community pipeline ``Zero1to3StableDiffusionPipeline``
(examples/community/pipeline_zero1to3.py) and cvlab-columbia/zero123: CLIP image embedding
+ 4-d pose -> linear projection as the single cross-attention token; the *unscaled* VAE
latent (posterior mode) of the input concatenated to the noisy latent; classifier-free
guidance whose unconditional branch zeroes both; DDIM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor

from blend123.protocol.camera import SphericalPose

from .memory import MemoryManaged
from .poses import zero123_pose_vector
from .weights import ZERO123_PROJECTIONS, resolve

#: OpenAI CLIP normalisation (the image encoder is CLIP ViT-L/14).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
POSE_VARIANTS = ("zero123", "stable-zero123")

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step index, timestep, latents)


class PoseProjection(ModelMixin, ConfigMixin):
    """CLIP embedding (768) + pose (4) -> 768: the only new layer Zero123 adds to SD."""

    @register_to_config
    def __init__(self, in_features: int = 772, out_features: int = 768):
        super().__init__()
        self.proj = torch.nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    @classmethod
    def from_checkpoint_folder(cls, root: Path) -> "PoseProjection":
        """Either published layout: ``clip_camera_projection/`` (``proj``) or ``cc_projection/``
        (``projection``); config keys differ between them, so shapes come from the weights."""
        for folder, prefix in ZERO123_PROJECTIONS:
            sub = root / folder
            if not sub.is_dir():
                continue
            state = _read_state_dict(sub)
            weight = state[f"{prefix}.weight"]
            model = cls(in_features=int(weight.shape[1]), out_features=int(weight.shape[0]))
            model.proj.load_state_dict({"weight": weight, "bias": state[f"{prefix}.bias"]})
            return model
        names = " or ".join(f"{folder}/" for folder, _ in ZERO123_PROJECTIONS)
        raise FileNotFoundError(f"{root} has no pose projection ({names})")


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            from safetensors.torch import load_file

            return load_file(str(folder / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return torch.load(folder / name, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no weights file in {folder}")


def clip_preprocess(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> CLIP input: bicubic, corners aligned, no antialiasing (as Zero123's
    references resize), then OpenAI's normalisation. Computed in float32."""
    dtype = images.dtype
    x = F.interpolate(images.float(), size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def images_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) pixels, or a [-1, 1] tensor, as a (B, 3, H, W) tensor."""
    if isinstance(image, torch.Tensor):
        x = image if image.ndim == 4 else image[None]
        if x.min() < -1.0 or x.max() > 1.0:
            raise ValueError("image tensors must be in [-1, 1]")
        return x
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB of shape (H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Zero123Pipeline(MemoryManaged, DiffusionPipeline):
    """Novel views of one image at several poses, all denoised as one batch.

    ``memory_plan`` (see :mod:`.memory`) decides whether guidance's two halves run as one
    batch or one after the other, and how many views the VAE decodes at a time."""

    model_cpu_offload_seq = "image_encoder->projection->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        image_encoder,  # transformers.CLIPVisionModelWithProjection
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        projection: PoseProjection,
        pose_variant: str = "zero123",
    ):
        super().__init__()
        if pose_variant not in POSE_VARIANTS:
            raise ValueError(f"pose_variant must be one of {POSE_VARIANTS}, got {pose_variant!r}")
        self.register_modules(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, projection=projection)
        self.register_to_config(pose_variant=pose_variant)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        pose_variant: str = "zero123",
        torch_dtype: torch.dtype | None = None,
        **_: object,
    ) -> "Zero123Pipeline":
        """A diffusers-layout folder or a cached repo id (never downloads).

        Each component is read from its subfolder; the pose projection from either published
        folder. The pipeline class named in ``model_index.json`` is not imported.
        """
        from transformers import CLIPVisionModelWithProjection

        root = resolve(path_or_repo_id)
        dtype = torch_dtype or torch.float32
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype, local_files_only=True)
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            root / "image_encoder", torch_dtype=dtype, local_files_only=True, attn_implementation="sdpa"
        )
        scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
        # As the references do: old SD scheduler configs need steps_offset=1, clip_sample=False.
        scheduler = DDIMScheduler.from_config({**scheduler.config, "steps_offset": 1, "clip_sample": False})
        projection = PoseProjection.from_checkpoint_folder(root)
        projection.proj.to(dtype)  # a plain Linear: no mixed-precision modules to keep
        return cls(vae, encoder, unet, scheduler, projection, pose_variant=pose_variant)

    # --- conditioning ----------------------------------------------------------------------

    def pose_vectors(self, reference: SphericalPose, targets: Sequence[SphericalPose]) -> torch.Tensor:
        """(N, 4) pose inputs in this model's convention."""
        rows = [zero123_pose_vector(reference, t, self.config.pose_variant) for t in targets]
        return torch.from_numpy(np.stack(rows)).float()

    @torch.no_grad()
    def encode_conditioning(self, image: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected embeddings (N, 1, D), unscaled image latent (1, 4, h, w))."""
        clip, latent = self.encode_reference(image)
        return self.project_poses(clip, poses), latent

    @torch.no_grad()
    def encode_reference(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pose-free half of the conditioning: (CLIP image embedding (1, D), unscaled latent)."""
        device, dtype = self._execution_device, self.unet.dtype
        pixels = image.to(device=device, dtype=dtype)
        clip = self.image_encoder(clip_preprocess(pixels)).image_embeds.to(dtype)  # (1, 768)
        latent = self.vae.encode(pixels).latent_dist.mode()  # no scaling factor: Zero123 was trained so
        return clip, latent

    @torch.no_grad()
    def project_poses(self, clip: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """CLIP embedding + pose vectors (N, 4) -> the UNet's cross-attention input (N, 1, D)."""
        n = poses.shape[0]
        tokens = torch.cat([clip.expand(n, -1), poses.to(device=clip.device, dtype=clip.dtype)], dim=-1)[:, None]
        return self.projection(tokens)

    # --- sampling --------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        poses: Sequence[SphericalPose] | torch.Tensor | np.ndarray,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        reference: SphericalPose | None = None,
        eta: float = 0.0,
        output_type: str = "np",
    ) -> np.ndarray | torch.Tensor:
        """Views of ``image`` (one, prepared: subject centred on white) at every pose.

        ``poses`` are target :class:`SphericalPose` s (seen from ``reference``, default the
        front camera) or raw (N, 4) pose vectors. ``latents`` (N, 4, h, w) replaces the
        initial noise. Returns (N, H, W, 3) floats in [0, 1], or latents.
        """
        if not isinstance(poses, torch.Tensor) and len(poses) and isinstance(poses[0], SphericalPose):
            poses = self.pose_vectors(reference or SphericalPose(0.0, -90.0, poses[0].radius), poses)
        poses = torch.as_tensor(np.asarray(poses) if not isinstance(poses, torch.Tensor) else poses).float()
        if poses.ndim != 2 or poses.shape[1] != 4:
            raise ValueError(f"poses must be (N, 4) pose vectors or SphericalPoses, got shape {tuple(poses.shape)}")
        pixels = images_to_tensor(image)
        if pixels.shape[0] != 1:
            raise ValueError("one input image per call")
        height, width = pixels.shape[-2:]
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"image size must be a multiple of {self.vae_scale_factor}, got {width}x{height}")
        device, dtype = self._execution_device, self.unet.dtype
        n = poses.shape[0]
        cfg = guidance_scale > 1.0

        embeds, image_latent = self.encode_conditioning(pixels, poses)
        image_latents = image_latent.expand(n, -1, -1, -1)
        # The unconditional branch zeroes both inputs; in full mode it is the batch's first half.
        batched = cfg and self.memory_plan.batched_cfg
        if batched:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (n, self.unet.config.out_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:  # drawn in float32 whatever the dtype: a seed gives the same noise in all
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        step_kwargs = _step_kwargs(self.scheduler, generator, eta)

        for i, t in enumerate(self.scheduler.timesteps):
            scaled = self.scheduler.scale_model_input(latents, t)
            if batched:
                model_input = torch.cat([torch.cat([scaled] * 2), image_latents], dim=1)
                uncond, cond = self.unet(model_input, t, encoder_hidden_states=embeds).sample.chunk(2)
            elif cfg:  # one pass after the other: half the activations
                uncond_in = torch.cat([scaled, torch.zeros_like(image_latents)], dim=1)
                uncond = self.unet(uncond_in, t, encoder_hidden_states=torch.zeros_like(embeds)).sample
                cond = self.unet(torch.cat([scaled, image_latents], dim=1), t, encoder_hidden_states=embeds).sample
            else:
                noise = self.unet(torch.cat([scaled, image_latents], dim=1), t, encoder_hidden_states=embeds).sample
            if cfg:
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
            if callback is not None:
                callback(i, int(t), latents)

        if output_type == "latent":
            return latents
        chunk = self.memory_plan.decode_frames or n
        decoded = torch.cat([self.vae.decode(part / self.vae.config.scaling_factor).sample for part in latents.split(chunk)])
        return (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()


def _step_kwargs(scheduler, generator, eta: float) -> dict:
    import inspect

    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs
