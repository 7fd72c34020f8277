"""The diffusion pipelines behind the backend's ``ViewSynthesizer`` interface.

Input preparation as the models were trained: subject cut out (alpha, or a uniform border
colour), recentred, its larger side scaled to the model's ``fill`` of the frame, composited
on white. Each model renders in its own camera (its lens, its distances: the model's card);
the result, alpha keyed out of the white background, is then resampled into the asking
camera's exact intrinsics at the subject's true world scale (:mod:`.scene`), so what comes
back is the view *that* camera would see: zoomed, cropped or padded with transparency, and
non-square for a non-square frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from blend123.protocol.camera import CameraIntrinsics, SphericalPose, relative_azimuth, wrap_degrees
from blend123.protocol.errors import BAD_REQUEST, Blend123Error, ProtocolError

from ..images import ImageError, as_rgba, prepare_reference
from ..progress import ProgressFn
from .registry import ModelCard, SynthesisRequest
from .scene import SubjectInWorld, resample_view, subject_in_world

log = logging.getLogger(__name__)


DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Runtime:
    """Where and how a pipeline runs: CUDA in half precision, else CPU in fp32; the memory
    mode (:mod:`.memory`) from the free GPU memory. ``BLEND123_DTYPE``, ``BLEND123_MEMORY``
    and ``BLEND123_COMPILE=1`` override, on either device."""

    device: str
    dtype_name: str  # "float16", "bfloat16" or "float32"
    compile: bool = False
    memory: str = "full"  # a MemoryMode value

    @classmethod
    def detect(cls, family: str = "sv3d", env=None) -> "Runtime":
        import torch

        from .memory import choose_memory_mode

        env = os.environ if env is None else env
        cuda = torch.cuda.is_available()
        name = env.get("BLEND123_DTYPE", "") or ("float16" if cuda else "float32")
        if name not in DTYPES:
            raise Blend123Error(f"BLEND123_DTYPE={name!r} is not a dtype blend123 runs", "set BLEND123_DTYPE to float16, bfloat16 or float32, or unset it")
        compile_ = env.get("BLEND123_COMPILE", "")
        if compile_ not in ("", "0", "1"):
            raise Blend123Error(f"BLEND123_COMPILE={compile_!r} is neither 0 nor 1", "set BLEND123_COMPILE=1 to torch.compile the UNet, or unset it")
        free = int(torch.cuda.mem_get_info()[0]) if cuda else None
        memory = choose_memory_mode(free, env, family).value
        return cls("cuda" if cuda else "cpu", name, compile_ == "1", memory)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def place(pipe, runtime: Runtime):
    """Move a pipeline to its device and set its memory mode; SDPA attention is diffusers'
    and transformers' default on torch 2; ``torch.compile`` of the UNet is opt-in
    (BLEND123_COMPILE=1)."""
    import torch

    from .memory import MemoryPlan, apply_memory_mode

    if not MemoryPlan.for_mode(runtime.memory).cpu_offload:  # offloaded weights wait on the CPU
        pipe.to(runtime.device)
    pipe.set_progress_bar_config(disable=True)
    if runtime.compile:
        pipe.unet = torch.compile(pipe.unet, fullgraph=False)
    apply_memory_mode(pipe, runtime.memory, runtime.device)
    return pipe


def keyed_rgba(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) float on white -> (H, W, 4) float RGBA in [0, 1], the white background keyed
    out as 8-bit pixels would be (:func:`~..reconstruction.masks.key_view`: soft alpha along
    the outline, colour un-mixed from the white).

    A frame whose key fails is cut out by the matting model when one is installed; else
    :class:`~..images.ImageError` says why (never the whole frame taken as the subject).
    """
    from ..reconstruction.masks import NO_MASK_HINT, key_view

    rgb8 = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    rgba, report = key_view(rgb8)
    if rgba is not None:
        return rgba.astype(np.float64) / 255.0
    from .. import matting  # optional: rembg + a local ONNX model

    if matting.missing_hint():
        raise ImageError(f"a generated view cannot be keyed: {report.reason}", NO_MASK_HINT)
    alpha = matting.matte_subject(rgb8).astype(np.float64)
    return np.concatenate([rgb8.astype(np.float64) / 255.0, alpha[..., None]], axis=-1)


def to_uint8(views: np.ndarray) -> np.ndarray:
    return (np.clip(views, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class NativeView:
    """Where a model's camera stands for one asked pose."""

    pose: SphericalPose  # in the model's own world units (what the pipeline is given)
    c2w: np.ndarray  # the same camera in the request's world


class _Adapter:
    """What the server calls; subclasses run one pipeline family in its native camera."""

    def __init__(self, pipe, runtime: Runtime, card: ModelCard, name: str = "") -> None:
        self.pipe = pipe
        self.runtime = runtime
        self.card = card
        self.name = name or type(self).__name__
        self.model_size = int(card.native.resolution or 256)
        self.last_peak_vram_bytes = 0

    # --- the request contract ---

    def check(self, request: SynthesisRequest) -> None:
        self.card.refuse_unsupported(self.name, request)

    def __call__(self, request: SynthesisRequest) -> np.ndarray:
        return to_uint8(self.render(request))

    def render(self, request: SynthesisRequest) -> np.ndarray:
        """(N, h, w, 4) float RGBA in the asking camera: the native views, resampled."""
        self.check(request)
        subject = subject_in_world(request.image, request.reference, request.reference_fov_deg)
        natives = [self.native_view(subject, request.reference, pose) for pose in request.poses]
        frames = self.render_native(request, [n.pose for n in natives])
        camera = self.native_intrinsics()
        out = np.zeros((len(frames), request.camera.height, request.camera.width, 4))
        for i, (frame, native, pose) in enumerate(zip(frames, natives, request.poses)):
            try:
                rgba = keyed_rgba(frame)
            except ImageError as exc:  # dropped: left fully transparent, and said so
                log.warning("%s view %d (%s) has no subject mask and is left empty: %s", self.name, i, pose, exc)
                continue
            out[i] = resample_view(rgba, native.c2w, camera, pose.to_c2w(), request.camera, subject.centre)
        return out

    def render_native(self, request: SynthesisRequest, poses: Sequence[SphericalPose]) -> np.ndarray:
        """(N, S, S, 3) floats on white in the model's own camera, one per native pose."""
        raise NotImplementedError

    def sds_guide(self, image: np.ndarray, c2w: np.ndarray):
        raise ProtocolError(
            BAD_REQUEST,
            f"{self.name} is not a Zero123-class model: it cannot guide SDS",
            "use zero123-xl or stable-zero123 (see `blend123 doctor` for what is installed)",
        )

    # --- the model's own camera ---

    def native_intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics.square(self.card.native.fov_deg, self.model_size)

    def native_reference(self, reference: SphericalPose) -> SphericalPose:
        return SphericalPose(reference.elevation_deg, reference.azimuth_deg, self.card.native.radius)

    def native_view(self, subject: SubjectInWorld, reference: SphericalPose, pose: SphericalPose) -> NativeView:
        """The model's camera for ``pose``: the distance ratio to the reference as asked, within
        the model's range (the rest is left to the resampling's zoom)."""
        n = self.card.native
        radius = min(max(n.radius * pose.radius / reference.radius, n.min_radius), n.max_radius)
        native_pose = SphericalPose(pose.elevation_deg, pose.azimuth_deg, radius)
        return NativeView(native_pose, subject.native_camera_c2w(pose, radius * subject.world_scale(n)))

    # --- running ---

    def prepared(self, image: np.ndarray) -> np.ndarray:
        """The input as the model sees it: subject recentred, rescaled, composited on white."""
        return prepare_reference(as_rgba(image), size=self.model_size, fill=self.card.native.fill).composited_on_white()

    def _settings(self, request: SynthesisRequest) -> tuple[int, float]:
        """(steps, guidance): the request's, or this model's own defaults."""
        steps = self.card.default_steps if request.steps is None else request.steps
        guidance = self.card.default_guidance if request.guidance is None else request.guidance
        return int(steps), float(guidance)

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

    def render_native(self, request: SynthesisRequest, poses: Sequence[SphericalPose]) -> np.ndarray:
        prepared = self.prepared(request.image)
        steps, guidance = self._settings(request)
        return self._run(
            lambda: self.pipe(
                prepared,
                list(poses),
                reference=self.native_reference(request.reference),
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=self._generator(request.seed),
                callback=self._steps_callback(request.progress, steps),
            )
        )

    def sds_guide(self, image: np.ndarray, c2w: np.ndarray):
        """Masked SDS's guide: this pipeline, the photo prepared as the model takes it, its camera."""
        from ..reconstruction.sds import SDSGuide

        prepared = self.prepared(image).astype(np.float32) / 255.0
        if self.pipe.offload is not None:
            # SDS reads its device from the UNet: in low mode, start with the UNet resident (it
            # is again after every step), so that device is the execution device.
            self.pipe.offload.bring("unet")
        return SDSGuide(self.pipe, prepared, np.asarray(c2w, dtype=np.float64), guidance_scale=float(self.card.default_guidance))


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
    """SV3D-u / SV3D-p: one 21-frame denoising pass per call, at SV3D's fixed distance."""

    def check(self, request: SynthesisRequest) -> None:
        super().check(request)
        sv3d_frames_for(request.reference, request.poses, self.pipe.takes_poses)  # refuses what it cannot render

    def render_native(self, request: SynthesisRequest, poses: Sequence[SphericalPose]) -> np.ndarray:
        reference = request.reference
        prepared = self.prepared(request.image)
        steps, guidance = self._settings(request)
        cameras, slots = sv3d_frames_for(reference, poses, self.pipe.takes_poses)
        frames = self._run(
            lambda: self.pipe(
                prepared,
                cameras if self.pipe.takes_poses else None,
                elevation_deg=reference.elevation_deg,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=self._generator(request.seed),
                callback=self._steps_callback(request.progress, steps),
            )
        )
        picked = frames[slots]
        # As the official sampler does for its last frame: the input view is the input image.
        for k, (elevation, azimuth) in enumerate(cameras[i] for i in slots):
            if abs(wrap_degrees(azimuth)) < 1e-6 and abs(elevation - reference.elevation_deg) < 1e-6:
                picked[k] = prepared.astype(np.float32) / 255.0
        return picked
