"""Cutting the subject out of a real photo: rembg with a matting model found locally.

Optional (``pip install 'blend123[matting]'``). Used only when a reference has no alpha and
its border is not a plain colour, where keying cannot work. Like the diffusion weights,
the ONNX model is never downloaded by blend123; it is looked for, in this order, at:

1. ``$BLEND123_MODEL_MATTING``: the ``.onnx`` file, or a folder holding one;
2. ``<models folder>/matting/`` (the folder ``blend123 doctor`` prints);
3. rembg's own folder, ``$U2NET_HOME`` (default ``~/.u2net``), for the files rembg itself
   downloads (``u2net.onnx``, ``isnet-general-use.onnx``, ...).

The model is loaded through rembg's custom-model sessions (``new_session("u2net_custom",
model_path=...)``, ``"dis_custom"`` for IS-Net), which read the given file and never fetch.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import ALPHA_THRESHOLD, PLAIN_BACKGROUND_HINT, ImageError
from .synthesis.weights import models_dir

ENV_VAR = "BLEND123_MODEL_MATTING"
EXTRA = "blend123[matting]"
#: The model files rembg publishes that a custom session can load, best first.
KNOWN_MODELS = (
    "birefnet-general.onnx",
    "isnet-general-use.onnx",
    "u2net.onnx",
    "silueta.onnx",
    "u2netp.onnx",
    "u2net_human_seg.onnx",
)
RECOMMENDED = "u2net.onnx"
RECOMMENDED_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"


@dataclass(frozen=True)
class MattingStatus:
    """What ``doctor`` and ``hello`` report about matting."""

    available: bool
    model: Path | None
    detail: str  # one line: what was found
    hint: str  # "" when available, else what to install and where the model goes


def models_folder() -> Path:
    return models_dir() / "matting"


def u2net_home() -> Path:
    """rembg's own model folder, computed as rembg does."""
    default = os.path.join(os.environ.get("XDG_DATA_HOME", "~"), ".u2net")
    return Path(os.environ.get("U2NET_HOME", default)).expanduser()


def _onnx_in(path: Path, names_only: bool = False) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    if not path.is_dir():
        return None
    for name in KNOWN_MODELS:
        if (path / name).is_file():
            return path / name
    if names_only:  # rembg's folder also holds models no custom session loads (SAM, ...)
        return None
    found = sorted(p for p in path.glob("*.onnx") if p.is_file())
    return found[0] if found else None


def locate_model() -> Path | None:
    """The local matting model, or None. Never downloads."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        # An explicit setting wins, even when wrong: the hint then names that path.
        return _onnx_in(Path(configured).expanduser())
    return _onnx_in(models_folder()) or _onnx_in(u2net_home(), names_only=True)


def rembg_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("rembg", "onnxruntime"))


def missing_hint() -> str:
    """'' when matting works, else the extra to install and where the model goes."""
    steps = []
    if not rembg_installed():
        steps.append(f"pip install '{EXTRA}'")
    configured = os.environ.get(ENV_VAR)
    if locate_model() is None:
        if configured:
            steps.append(f"{ENV_VAR}={configured} holds no .onnx model: point it at one")
        else:
            steps.append(
                f"put a matting model such as {RECOMMENDED} ({RECOMMENDED_URL}) in {models_folder()}/ "
                f"(or set {ENV_VAR} to the .onnx file)"
            )
    return "; ".join(steps) + "." if steps else ""


def status() -> MattingStatus:
    model = locate_model()
    hint = missing_hint()
    if not hint:
        return MattingStatus(True, model, f"rembg with {model}", "")
    installed = "rembg installed" if rembg_installed() else "rembg not installed"
    where = f"model {model}" if model else "no model found"
    return MattingStatus(False, model, f"{installed}, {where}", hint)


# --- running ----------------------------------------------------------------------------

_lock = threading.Lock()
_sessions: dict[tuple[str, int], object] = {}


def _session_name(model: Path) -> str:
    """rembg's custom session for the model's family, known by its file name."""
    name = model.name.lower()
    if name.startswith(("isnet", "dis")):
        return "dis_custom"  # IS-Net: 1024 px, mean 0.5
    if name.startswith("birefnet"):
        return "birefnet"  # 1024 px, ImageNet statistics, sigmoid output
    return "u2net_custom"  # U^2-Net family (u2net, u2netp, silueta): 320 px


def _new_session(model: Path):
    import rembg

    name = _session_name(model)
    if name != "birefnet":
        return rembg.new_session(name, model_path=str(model))
    # rembg has no custom BiRefNet session: its own class, told to read this file instead of
    # fetching one (the same override the custom sessions make).
    import onnxruntime as ort
    from rembg.sessions.birefnet_general import BiRefNetSessionGeneral

    class LocalBiRefNet(BiRefNetSessionGeneral):
        @classmethod
        def download_models(cls, *args, **kwargs) -> str:
            return kwargs["model_path"]

    return LocalBiRefNet("birefnet-general", ort.SessionOptions(), model_path=str(model))


def _session():
    hint = missing_hint()
    if hint:
        raise ImageError("The background is not a plain colour and automatic cut-out is not set up", PLAIN_BACKGROUND_HINT + " Or " + hint)
    model = locate_model()
    assert model is not None  # missing_hint() said so
    key = (str(model), model.stat().st_mtime_ns)
    with _lock:  # one session per model file, shared by the worker's jobs
        if key not in _sessions:
            try:
                _sessions.clear()
                _sessions[key] = _new_session(model)
            except Exception as exc:  # onnxruntime's errors have no common base class
                raise ImageError(
                    f"The matting model {model} cannot be loaded ({type(exc).__name__}: {exc})",
                    f"use a rembg model such as {RECOMMENDED}, IS-Net or BiRefNet as an .onnx file",
                ) from None
        return _sessions[key]


def matte_subject(rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W) subject mask of an (H, W, 3) uint8 photo, from the matting model."""
    session = _session()
    import rembg

    image = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3]))
    try:
        matte = rembg.remove(image, session=session, only_mask=True)
    except Exception as exc:  # a model of another signature fails inside onnxruntime
        raise ImageError(
            f"The matting model {locate_model()} failed on this image ({type(exc).__name__}: {exc})",
            f"use a rembg model such as {RECOMMENDED}, IS-Net or BiRefNet as an .onnx file",
        ) from None
    alpha = np.asarray(matte.convert("L"))
    if alpha.shape != rgb.shape[:2]:
        alpha = np.asarray(matte.convert("L").resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR))
    return alpha >= ALPHA_THRESHOLD
