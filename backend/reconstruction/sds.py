"""Masked score distillation: a Zero123-class model paints what no input view saw.

Score distillation (DreamFusion's SDS, with Zero123's view conditioning as in Zero-1-to-3's
3D stage): render the current asset from a new pose, encode it into the model's latent
space, add noise at a random level, and let the model, conditioned on the reference image
and the relative pose, predict that noise. ``w(t) (predicted - added noise)`` is the
direction that makes the render more like what the model expects there; it is applied as
the gradient of the latents, without backpropagating through the model.

Here it is *masked*: only pixels whose surface no input camera saw contribute, so the
orbit's own evidence is never overruled; ``refine.py`` applies it to the albedo in the
last refinement steps only (``RefineOptions.sds_steps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from blend123.protocol.camera import SphericalPose, spherical_from_c2w


@dataclass
class SDSGuide:
    """A loaded Zero123-class pipeline and the reference view it is conditioned on."""

    pipeline: object  # blend123.backend.synthesis.zero123.Zero123Pipeline
    image: np.ndarray  # (S, S, 3) float in [0, 1]: the prepared reference (subject on white)
    reference_c2w: np.ndarray  # (4, 4): the camera that took it, in the reconstruction's world
    guidance_scale: float = 3.0
    min_step: float = 0.02  # noise levels are drawn from [min_step, max_step] of the schedule
    max_step: float = 0.98

    def __post_init__(self) -> None:
        image = np.asarray(self.image, dtype=np.float32)
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
            raise ValueError(f"the SDS reference image must be (S, S, 3), got {image.shape}")
        factor = self.pipeline.vae_scale_factor
        if image.shape[0] % factor:
            raise ValueError(f"the SDS reference image size must be a multiple of {factor}, got {image.shape[0]}")
        self.image = image
        # Gradients pass through the VAE encoder to the render, never into its weights:
        # without this every SDS step would also compute and pile up weight gradients.
        self.pipeline.vae.requires_grad_(False)
        self._reference: tuple[torch.Tensor, torch.Tensor] | None = None  # (CLIP embedding, latent)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def loss(
        self,
        rendered: torch.Tensor,
        mask: torch.Tensor,
        target_c2w: np.ndarray,
        generator: torch.Generator,
        centre: np.ndarray = np.zeros(3),
    ) -> torch.Tensor:
        """SDS surrogate loss of one render (1, 3, S, S) in [0, 1] (subject on white).

        ``mask`` (1, 1, S, S) is 1 where the gradient may act. Poses are taken about
        ``centre`` (the subject's). The loss's gradient with respect to ``rendered`` is the
        masked SDS direction; its value means nothing.
        """
        pipe = self.pipeline
        device, dtype = pipe.unet.device, pipe.unet.dtype
        # The encoder spreads gradients beyond the latent mask: cut them at the pixels.
        rendered = torch.where(mask > 0.5, rendered, rendered.detach())
        reference = spherical_from_c2w(self.reference_c2w, centre)
        target = spherical_from_c2w(target_c2w, centre)
        embeds, image_latent = self._encode(reference, target)
        scaling = pipe.vae.config.scaling_factor
        latents = pipe.vae.encode((rendered * 2.0 - 1.0).to(device=device, dtype=dtype)).latent_dist.mean * scaling
        schedule = pipe.scheduler.config.num_train_timesteps
        low, high = int(self.min_step * schedule), int(self.max_step * schedule)
        t = torch.randint(low, high + 1, (1,), generator=generator).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=dtype)
        with torch.no_grad():
            noisy = pipe.scheduler.add_noise(latents.detach(), noise, t)
            model_input = torch.cat([torch.cat([noisy] * 2), torch.cat([torch.zeros_like(image_latent), image_latent])], 1)
            predicted = pipe.unet(
                model_input, t.expand(2), encoder_hidden_states=torch.cat([torch.zeros_like(embeds), embeds])
            ).sample
            uncond, cond = predicted.chunk(2)
            predicted = uncond + self.guidance_scale * (cond - uncond)
            alpha_bar = pipe.scheduler.alphas_cumprod.to(device)[t].to(dtype)
            grad = (1.0 - alpha_bar) * (predicted - noise)
            latent_mask = F.adaptive_avg_pool2d(mask.to(device=device, dtype=dtype), latents.shape[-2:]) > 0.5
            grad = torch.nan_to_num(grad * latent_mask)
        # d(loss)/d(latents) = grad: the usual SDS surrogate.
        return 0.5 * F.mse_loss(latents, (latents - grad).detach(), reduction="sum")

    def _encode(self, reference: SphericalPose, target: SphericalPose) -> tuple[torch.Tensor, torch.Tensor]:
        """(pose-projected embedding, image latent); the image is encoded once, poses every call."""
        pipe = self.pipeline
        if self._reference is None:
            pixels = torch.as_tensor(self.image).permute(2, 0, 1)[None] * 2.0 - 1.0
            self._reference = pipe.encode_reference(pixels)
        clip, latent = self._reference
        return pipe.project_poses(clip, pipe.pose_vectors(reference, [target])), latent
