"""Which view-synthesis models this backend knows, which are installed, and loading them.

One model is resident at a time: loading another releases the previous one first, so a
24 GB card never holds two diffusion models at once.
"""

from __future__ import annotations

import gc
import math
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from blend123.protocol.camera import CameraIntrinsics, NativeCamera, SphericalPose
from blend123.protocol.errors import BAD_REQUEST, MODEL_UNAVAILABLE, UNKNOWN_MODEL, ProtocolError
from blend123.protocol.messages import ModelInfo

from ..device import loaded_torch
from ..progress import ProgressFn, no_progress


@dataclass(frozen=True)
class ModelCard:
    """What a model is, as far as a request is concerned: its own camera and its defaults.
    One card per model, here; ``hello`` advertises it and the adapter runs by it."""

    native: NativeCamera = NativeCamera()  # all None: any lens, any distance
    default_steps: int | None = None
    default_guidance: float | None = None
    max_poses_per_call: int = 1  # poses denoised together (SV3D: a whole orbit)
    takes: tuple[str, ...] = ()  # optional settings it honours: "steps", "guidance", "seed"

    def refuse_unsupported(self, name: str, request: "SynthesisRequest") -> None:
        """A clear error for a setting this model has no use for (rather than ignoring it)."""
        for setting, value in (("steps", request.steps), ("guidance", request.guidance)):
            if value is not None and setting not in self.takes:
                raise ProtocolError(
                    BAD_REQUEST,
                    f"model {name!r} has no {setting} setting (got {value})",
                    f"leave {setting} unset for {name!r}, or pick a diffusion model",
                )


@dataclass(frozen=True)
class SynthesisRequest:
    """Everything a model needs to render views; each model honours or refuses each field.

    ``reference`` and ``reference_fov_deg`` are the camera that took ``image``; ``camera``
    is the asking camera's lens at the size of the views to return (one lens for all poses).
    ``steps``/``guidance`` ``None`` run the model's own defaults.
    """

    image: np.ndarray
    poses: Sequence[SphericalPose]
    reference: SphericalPose
    reference_fov_deg: float
    camera: CameraIntrinsics
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    progress: ProgressFn = no_progress


class ViewSynthesizer(Protocol):
    """Anything that renders novel views of a reference image at spherical poses.

    One that holds no tensors may say so with ``holds_tensors = False``: releasing it
    then skips the garbage-collection pass that frees a model's memory.
    """

    card: ModelCard

    def check(self, request: SynthesisRequest) -> None:
        """Raise :class:`ProtocolError` for a field this model cannot honour, before any work."""
        ...

    def __call__(self, request: SynthesisRequest) -> np.ndarray:
        """(N, camera.height, camera.width, 4) uint8 RGBA, one view per pose, transparent background."""
        ...

    def sds_guide(self, image: np.ndarray, c2w: np.ndarray):
        """What masked SDS needs (a ``reconstruction.sds.SDSGuide``); ProtocolError when this
        model cannot guide SDS."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "views", "orbit" or "views+orbit"
    description: str
    load: Callable[[], ViewSynthesizer]
    # Returns "" when the model can be loaded, otherwise what to download and where.
    missing: Callable[[], str] = lambda: ""
    card: ModelCard = ModelCard()
    family: str = ""  # memory-mode family ("zero123", "sv3d"); "" for models without one

    def info(self, free_bytes: int | None = None) -> ModelInfo:
        """``free_bytes``: free GPU memory (None: no GPU), for the memory mode it would load in."""
        from .memory import mode_now

        hint = self.missing()
        c = self.card
        return ModelInfo(
            self.name, self.kind, available=not hint, description=self.description, hint=hint,
            native=c.native, default_steps=c.default_steps, default_guidance=c.default_guidance, takes=list(c.takes),
            memory_mode=mode_now(self.family, free_bytes) if self.family else "",
        )


# The models' own cameras (METHOD.md): Zero123 was trained on Objaverse renders with a 35 mm
# lens on a 32 mm sensor (49.1 deg) from 1.5-2.2 units; SV3D on 33.8 deg orbits at a fixed
# distance. Both take their input with the subject's larger side at ~0.8 of the frame. Our
# Zero123 input is taken to be seen from the middle of its range, so a radius change of
# about +-20% goes to the model and the rest is a zoom of its output.
ZERO123_FOV_DEG = 2.0 * math.degrees(math.atan(16.0 / 35.0))
INPUT_FILL = 0.8
CARDS: dict[str, ModelCard] = {
    "default": ModelCard(max_poses_per_call=1),  # deterministic: every seed gives the same views
    "zero123-xl": ModelCard(
        NativeCamera(ZERO123_FOV_DEG, INPUT_FILL, 1.85, 1.5, 2.2, 256), 50, 3.0, 8, ("steps", "guidance", "seed")
    ),
    "stable-zero123": ModelCard(  # its 4th pose input is the input's polar angle: no radius control
        NativeCamera(ZERO123_FOV_DEG, INPUT_FILL, 1.85, 1.85, 1.85, 256), 50, 5.0, 8, ("steps", "guidance", "seed")
    ),
    "sv3d-u": ModelCard(NativeCamera(33.8, INPUT_FILL, 2.0, 2.0, 2.0, 576), 50, 2.5, 21, ("steps", "guidance", "seed")),
    "sv3d-p": ModelCard(NativeCamera(33.8, INPUT_FILL, 2.0, 2.0, 2.0, 576), 50, 2.5, 21, ("steps", "guidance", "seed")),
}


def _load_proxy() -> ViewSynthesizer:
    from .proxy import ProxyViewSynthesizer

    return ProxyViewSynthesizer()


def _diffusion_spec(name: str, kind: str, description: str, source) -> ModelSpec:
    from .weights import locate, missing_hint

    def load() -> ViewSynthesizer:
        from .adapters import Runtime, SV3DSynthesizer, Zero123Synthesizer, place

        path = locate(source)
        if path is None:
            raise ProtocolError(MODEL_UNAVAILABLE, f"model {name!r} is not installed on this backend", missing_hint(source))
        runtime = Runtime.detect(family)
        if source.filename:
            from .sv3d import SV3DPipeline

            return SV3DSynthesizer(place(SV3DPipeline.from_single_file(path, torch_dtype=runtime.dtype), runtime), runtime, CARDS[name], name)
        from .zero123 import Zero123Pipeline

        pipe = Zero123Pipeline.from_pretrained(path, pose_variant=source.extra["pose_variant"], torch_dtype=runtime.dtype)
        return Zero123Synthesizer(place(pipe, runtime), runtime, CARDS[name], name)

    family = "sv3d" if source.filename else "zero123"
    return ModelSpec(name, kind, description, load, lambda: missing_hint(source), CARDS[name], family)


def _weights_sources():
    from .weights import WeightsSource

    return {
        "zero123-xl": WeightsSource("zero123-xl", ("ashawkey/zero123-xl-diffusers", "kxic/zero123-xl"), size_hint="2.5 GB fp16",
                                    extra={"pose_variant": "zero123"}),
        "stable-zero123": WeightsSource("stable-zero123", ("ashawkey/stable-zero123-diffusers",), size_hint="2.5 GB fp16",
                                        extra={"pose_variant": "stable-zero123"}),
        "sv3d-u": WeightsSource("sv3d-u", ("stabilityai/sv3d",), filename="sv3d_u.safetensors", size_hint="9.4 GB"),
        "sv3d-p": WeightsSource("sv3d-p", ("stabilityai/sv3d",), filename="sv3d_p.safetensors", size_hint="9.4 GB"),
    }


WEIGHTS = _weights_sources()

MODELS: dict[str, ModelSpec] = {
    "default": ModelSpec(
        "default",
        "views+orbit",
        "quick proxy (geometric, not diffusion): an inflated silhouette, no weights needed",
        _load_proxy,
        card=CARDS["default"],
    ),
    "zero123-xl": _diffusion_spec("zero123-xl", "views", "Zero123-XL: novel views by view-conditioned diffusion (256 px)", WEIGHTS["zero123-xl"]),
    "stable-zero123": _diffusion_spec("stable-zero123", "views", "Stable Zero123: novel views, better at elevations (256 px)", WEIGHTS["stable-zero123"]),
    "sv3d-u": _diffusion_spec("sv3d-u", "orbit", "SV3D-u: a consistent 21-view orbit at the input's elevation (576 px)", WEIGHTS["sv3d-u"]),
    "sv3d-p": _diffusion_spec("sv3d-p", "views+orbit", "SV3D-p: 21 views along any orbit or camera path (576 px)", WEIGHTS["sv3d-p"]),
}


def model_infos() -> list[ModelInfo]:
    from .memory import gpu_free_bytes

    free = gpu_free_bytes()
    return [spec.info(free) for spec in MODELS.values()]


def check_model(name: str) -> ModelSpec:
    """The model's spec, or a ProtocolError that says what to do."""
    spec = MODELS.get(name)
    if spec is None:
        raise ProtocolError(UNKNOWN_MODEL, f"unknown model {name[:64]!r}", f"available: {', '.join(MODELS)}")
    hint = spec.missing()
    if hint:
        raise ProtocolError(MODEL_UNAVAILABLE, f"model {name!r} is not installed on this backend", hint)
    return spec


class ResidentModel:
    """Holds at most one loaded model; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._name = ""
        self._model: ViewSynthesizer | None = None

    def get(self, name: str) -> ViewSynthesizer:
        spec = check_model(name)
        with self._lock:
            if self._name != name:
                self.release()
                self._model = spec.load()
                self._name = name
            return self._model

    def release(self) -> None:
        model, self._model, self._name = self._model, None, ""
        # A model's tensors can sit in reference cycles: collect them now. Nothing held, or
        # a model without tensors (the proxy), needs no pass (0.1-0.2 s with torch loaded).
        if model is not None and getattr(model, "holds_tensors", True):
            del model
            gc.collect()
            free_accelerator_memory()

    def release_if_memory_short(self, needed_bytes: int = 8 << 30) -> bool:
        """Unload the resident model when the GPU has less than ``needed_bytes`` free (call
        before reconstruction); True when it did. No GPU: nothing to do."""
        torch = loaded_torch()
        if torch is None or not torch.cuda.is_available() or self._model is None:
            return False
        free, _ = torch.cuda.mem_get_info()
        if free >= needed_bytes:
            return False
        with self._lock:
            self.release()
        return True


def free_accelerator_memory() -> None:
    torch = loaded_torch()  # never import torch just to free nothing
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
