"""What the backend computes on: CUDA when a GPU is present, else the CPU."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda" or "cpu"
    name: str
    free_bytes: int = 0
    total_bytes: int = 0
    torch_version: str = ""
    cuda_version: str = ""


@functools.lru_cache(maxsize=1)
def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def loaded_torch():
    """torch if it is already imported and initialised, else None; never imports it.

    A warm-up thread may be midway through ``import torch``: the half-made module is not
    loaded yet (and nothing can have put memory on the GPU through it).
    """
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return None
    return torch


def describe_device() -> DeviceInfo:
    torch = _torch()
    if torch is None:
        return DeviceInfo("cpu", "CPU (PyTorch not installed)")
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return DeviceInfo("cuda", torch.cuda.get_device_name(), free, total, torch.__version__, torch.version.cuda or "")
    return DeviceInfo("cpu", "CPU", torch_version=torch.__version__)


def torch_device():
    """The torch device the pipeline should use."""
    torch = _torch()
    return torch.device("cuda" if torch is not None and torch.cuda.is_available() else "cpu")
