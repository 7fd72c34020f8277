"""The diffusion pipelines behind the backend's ``ViewSynthesizer`` interface.

Input preparation as the models were trained: subject cut out (alpha, or a uniform border
colour), recentred, its larger side scaled to ``FILL`` of the frame, composited on white.
Outputs come back as RGBA at the requested resolution; alpha keys out the white
background, so reconstruction gets masks as it does from the default model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from blend123.protocol.camera import SphericalPose, relative_azimuth, wrap_degrees
from blend123.protocol.errors import BAD_REQUEST, ProtocolError

from ..images import ImageError, as_rgba, prepare_reference, subject_mask
from ..progress import ProgressFn, no_progress

#: Share of the frame the subject's larger side spans (Zero123's and SV3D's renders: ~0.8).
FILL = 0.8


@dataclass(frozen=True)
class Runtime:
    """Where and how a pipeline runs: CUDA in half precision, else CPU in fp32."""

    device: str
    dtype_name: str  # "float16", "bfloat16" or "float32"
    compile: bool = False

    @classmethod
    def detect(cls) -> "Runtime":
        import torch

        if torch.cuda.is_available():
            name = os.environ.get("BLEND123_DTYPE", "float16")
            if name not in ("float16", "bfloat16", "float32"):
                raise ValueError(f"BLEND123_DTYPE must be float16, bfloat16 or float32, got {name!r}")
            return cls("cuda", name, os.environ.get("BLEND123_COMPILE", "") == "1")
        return cls("cpu", "float32")

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def place(pipe, runtime: Runtime):
    """Move a pipeline to its device; SDPA attention is diffusers' and transformers' default
    on torch 2; ``torch.compile`` of the UNet is opt-in (BLEND123_COMPILE=1)."""
    import torch

    pipe.to(runtime.device)
    pipe.set_progress_bar_config(disable=True)
    if runtime.compile:
        pipe.unet = torch.compile(pipe.unet, fullgraph=False)
    return pipe


def _rgba_views(frames: np.ndarray, resolution: int) -> np.ndarray:
    """(N, H, W, 3) floats on white -> (N, res, res, 4) uint8 with the background keyed out."""
    out = np.zeros((len(frames), resolution, resolution, 4), np.uint8)
    for i, frame in enumerate(frames):
        rgb = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if rgb.shape[0] != resolution:
            rgb = np.asarray(Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS))
        try:
            alpha = np.where(subject_mask(rgb), 255, 0).astype(np.uint8)
        except ImageError:  # no clean white border: keep the whole frame
            alpha = np.full(rgb.shape[:2], 255, np.uint8)
        out[i, :, :, :3], out[i, :, :, 3] = rgb, alpha
    return out


class _Adapter:
    """What the server calls; subclasses run one pipeline family."""

    accepts_settings = True  # the task passes steps, guidance and seed
    max_poses_per_call = 1
    model_size = 256
    default_guidance = 3.0

    def __init__(self, pipe, runtime: Runtime) -> None:
        self.pipe = pipe
        self.runtime = runtime
        self.last_peak_vram_bytes = 0

    def prepared(self, image: np.ndarray) -> np.ndarray:
        """The input as the model sees it: subject recentred, rescaled, composited on white."""
        return prepare_reference(as_rgba(image), size=self.model_size, fill=FILL).composited_on_white()

    def _generator(self, seed: int):
        import torch

        return torch.Generator(device="cpu").manual_seed(int(seed))

    def _steps_callback(self, progress: ProgressFn, steps: int):
        # progress raises JobCancelled when the job is cancelled: that unwinds the loop.
        return lambda i, t, latents: progress("diffusion", (i + 1) / steps)

    def _run(self, fn):
        import torch

        cuda = self.runtime.device == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            return fn()
        finally:
            if cuda:
                self.last_peak_vram_bytes = int(torch.cuda.max_memory_allocated())


class Zero123Synthesizer(_Adapter):
    """Zero123-XL / Stable Zero123: every requested pose of a call in one batch."""

    max_poses_per_call = 8
    model_size = 256

    def __init__(self, pipe, runtime: Runtime, default_guidance: float) -> None:
        super().__init__(pipe, runtime)
        self.default_guidance = default_guidance

    def __call__(
        self,
        image: np.ndarray,
        poses: Sequence[SphericalPose],
        *,
        reference: SphericalPose,
        camera_angle_x: float = math.radians(33.8),
        resolution: int = 256,
        progress: ProgressFn = no_progress,
        steps: int = 50,
        guidance: float | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        prepared = self.prepared(image)
        frames = self._run(
            lambda: self.pipe(
                prepared,
                list(poses),
                reference=reference,
                num_inference_steps=steps,
                guidance_scale=self.default_guidance if guidance is None else guidance,
                generator=self._generator(seed),
                callback=self._steps_callback(progress, steps),
            )
        )
        return _rgba_views(frames, resolution)


def sv3d_frames_for(reference: SphericalPose, poses: Sequence[SphericalPose], free_cameras: bool) -> tuple[list[tuple[float, float]], list[int]]:
    """SV3D's 21 (elevation, relative azimuth) cameras for a request, and where each requested
    pose lands among them. Its own orbit at the reference elevation, with each requested pose
    put in place of the orbit frame nearest in azimuth (SV3D-p); SV3D-u only renders its orbit."""
    from .sv3d import NUM_FRAMES

    orbit = [(reference.elevation_deg, 360.0 * (i + 1) / NUM_FRAMES % 360.0) for i in range(NUM_FRAMES)]
    if len(poses) > NUM_FRAMES:
        raise ProtocolError(BAD_REQUEST, f"SV3D renders at most {NUM_FRAMES} views per call", "request fewer views, or several jobs")
    wanted = [(p.elevation_deg, relative_azimuth(p.azimuth_deg, reference.azimuth_deg) % 360.0) for p in poses]
    if len(wanted) == NUM_FRAMES and free_cameras:
        return wanted, list(range(NUM_FRAMES))
    slots, free = [], set(range(NUM_FRAMES))
    for elevation, azimuth in wanted:
        best = min(free, key=lambda i: abs(wrap_degrees(orbit[i][1] - azimuth)))
        on_orbit = abs(wrap_degrees(orbit[best][1] - azimuth)) < 0.5 and abs(elevation - reference.elevation_deg) < 0.5
        if not free_cameras and not on_orbit:
            raise ProtocolError(
                BAD_REQUEST,
                f"sv3d-u renders only its fixed orbit (21 azimuths, 360/21 deg apart, at the reference elevation); "
                f"elevation {elevation:g}, azimuth {azimuth:g} is not on it",
                "use sv3d-p for other cameras",
            )
        free.discard(best)
        slots.append(best)
        if free_cameras:
            orbit[best] = (elevation, azimuth)
    return orbit, slots


class SV3DSynthesizer(_Adapter):
    """SV3D-u / SV3D-p: one 21-frame denoising pass per call."""

    max_poses_per_call = 21
    model_size = 576
    default_guidance = 2.5

    def __call__(
        self,
        image: np.ndarray,
        poses: Sequence[SphericalPose],
        *,
        reference: SphericalPose,
        camera_angle_x: float = math.radians(33.8),
        resolution: int = 576,
        progress: ProgressFn = no_progress,
        steps: int = 50,
        guidance: float | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        prepared = self.prepared(image)
        cameras, slots = sv3d_frames_for(reference, poses, self.pipe.takes_poses)
        frames = self._run(
            lambda: self.pipe(
                prepared,
                cameras if self.pipe.takes_poses else None,
                elevation_deg=reference.elevation_deg,
                num_inference_steps=steps,
                guidance_scale=self.default_guidance if guidance is None else guidance,
                generator=self._generator(seed),
                callback=self._steps_callback(progress, steps),
            )
        )
        picked = frames[slots]
        # As the official sampler does for its last frame: the input view is the input image.
        for k, (elevation, azimuth) in enumerate(cameras[i] for i in slots):
            if abs(wrap_degrees(azimuth)) < 1e-6 and abs(elevation - reference.elevation_deg) < 1e-6:
                picked[k] = prepared.astype(np.float32) / 255.0
        return _rgba_views(picked, resolution)
