"""Which view-synthesis models this backend knows, which are installed, and loading them.

One model is resident at a time: loading another releases the previous one first, so a
24 GB card never holds two diffusion models at once.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from blend123.protocol.camera import SphericalPose
from blend123.protocol.errors import MODEL_UNAVAILABLE, UNKNOWN_MODEL, ProtocolError
from blend123.protocol.messages import ModelInfo

from ..progress import ProgressFn


class ViewSynthesizer(Protocol):
    """Anything that renders novel views of a reference image at spherical poses."""

    def __call__(
        self,
        image: np.ndarray,
        poses: Sequence[SphericalPose],
        *,
        reference: SphericalPose,
        camera_angle_x: float,
        resolution: int,
        progress: ProgressFn,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "views", "orbit" or "views+orbit"
    description: str
    load: Callable[[], ViewSynthesizer]
    # Returns "" when the model can be loaded, otherwise what to download and where.
    missing: Callable[[], str] = lambda: ""

    def info(self) -> ModelInfo:
        hint = self.missing()
        return ModelInfo(self.name, self.kind, available=not hint, description=self.description, hint=hint)


def _load_proxy() -> ViewSynthesizer:
    from .proxy import ProxyViewSynthesizer

    return ProxyViewSynthesizer()


MODELS: dict[str, ModelSpec] = {
    "default": ModelSpec(
        "default",
        "views+orbit",
        "quick proxy (geometric, not diffusion): an inflated silhouette, no weights needed",
        _load_proxy,
    ),
}


def model_infos() -> list[ModelInfo]:
    return [spec.info() for spec in MODELS.values()]


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
        self._model, self._name = None, ""
        gc.collect()
        free_accelerator_memory()


def free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to free nothing
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
