"""``blend123 doctor``: what is installed, what is missing, and the exact fix."""

from __future__ import annotations

import importlib.metadata
import socket
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from .device import describe_device
from .server.config import default_jobs_dir
from .synthesis.registry import model_infos

REQUIRED = ["numpy", "msgpack", "pyzmq", "torch", "diffusers", "transformers", "trimesh", "xatlas", "scikit-image", "pillow"]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(bind: str) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "install Python 3.11 or newer")]
    for dist in REQUIRED:
        try:
            checks.append(Check(dist, True, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(dist, False, "not installed", f"pip install {dist}"))
    device = describe_device()
    if device.kind == "cuda":
        checks.append(Check("device", True, f"{device.name}, {device.free_bytes / 2**30:.1f} of {device.total_bytes / 2**30:.1f} GiB free, CUDA {device.cuda_version}"))
    else:
        checks.append(
            Check("device", True, f"{device.name}: no CUDA GPU, diffusion models will be slow; the default quick proxy runs fine")
        )
    for info in model_infos():
        checks.append(Check(f"model {info.name}", info.available, info.description if info.available else "not found", info.hint))
    checks.append(_port_check(bind))
    jobs = default_jobs_dir()
    try:
        jobs.mkdir(parents=True, exist_ok=True)
        checks.append(Check("jobs folder", True, str(jobs)))
    except OSError as exc:
        checks.append(Check("jobs folder", False, f"{jobs}: {exc}", "pass --jobs-dir to `blend123 serve`"))
    return checks


def _port_check(bind: str) -> Check:
    if not bind.startswith("tcp://"):
        return Check("port", True, f"{bind} is not a TCP endpoint")
    parts = urlsplit(bind)
    host = parts.hostname or "127.0.0.1"
    host = "0.0.0.0" if host == "*" else host
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, parts.port or 0))
    except OSError as exc:
        return Check("port", False, f"{bind}: {exc.strerror}", "another `blend123 serve` may be running; stop it or pass --bind with another port")
    return Check("port", True, f"{bind} is free")
