"""``blend123 doctor``: what is installed, what is missing, and the exact fix.

Only what the backend cannot run without counts as a problem (and makes the command exit
1). Diffusion weights, the matting extra and a faster PyTorch build are optional: they are
listed as such, each with the command that adds it.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .device import describe_device
from .server.config import default_jobs_dir
from .synthesis.registry import model_infos
from .synthesis.weights import models_dir

REQUIRED = ["numpy", "msgpack", "pyzmq", "torch", "diffusers", "transformers", "trimesh", "xatlas", "scikit-image", "pillow"]
#: CUDA builds PyTorch publishes wheels for (``https://download.pytorch.org/whl/cuXYZ``).
TORCH_CUDA_BUILDS = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False  # not ok here is a missing extra, not a broken install

    @property
    def problem(self) -> bool:
        return not self.ok and not self.optional


@dataclass(frozen=True)
class GpuInfo:
    """NVIDIA GPUs as the driver reports them, independent of the installed PyTorch."""

    names: tuple[str, ...] = ()
    driver_cuda: tuple[int, int] | None = None  # the newest CUDA the driver runs


def run_checks(bind: str) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "install Python 3.11 or newer")]
    for dist in REQUIRED:
        try:
            checks.append(Check(dist, True, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(dist, False, "not installed", f"pip install {dist}"))
    checks.append(_device_check())
    checks.append(torch_check())
    checks.append(memory_check())
    for info in model_infos():
        if info.available:
            checks.append(Check(f"model {info.name}", True, info.description))
        else:
            checks.append(Check(f"model {info.name}", False, "weights not found (optional)", info.hint, optional=True))
    checks.append(matting_check())
    checks.append(_port_check(bind))
    jobs = default_jobs_dir()
    try:
        jobs.mkdir(parents=True, exist_ok=True)
        checks.append(Check("jobs folder", True, str(jobs)))
    except OSError as exc:
        checks.append(Check("jobs folder", False, f"{jobs}: {exc}", "pass --jobs-dir to `blend123 serve`"))
    checks.append(Check("models folder", True, f"{models_dir()} (or $BLEND123_MODELS_DIR)"))
    return checks


# --- PyTorch and the GPU ----------------------------------------------------------------


def _device_check() -> Check:
    device = describe_device()
    if device.kind == "cuda":
        free, total = device.free_bytes / 2**30, device.total_bytes / 2**30
        return Check("device", True, f"{device.name}, {free:.1f} of {total:.1f} GiB free, CUDA {device.cuda_version}")
    return Check("device", True, f"{device.name}: diffusion models will be slow here; the default quick proxy runs fine")


def memory_check(free_bytes: int | None = None, env=None, gpu: bool | None = None) -> Check:
    """The memory mode each diffusion family would load in now, and why."""
    from blend123.protocol.errors import Blend123Error

    from .synthesis.memory import BUDGETS, ENV_VAR, choose_memory_mode, parse_memory_env

    if gpu is None:
        device = describe_device()
        gpu, free_bytes = device.kind == "cuda", device.free_bytes
    try:
        asked = parse_memory_env(env)
        modes = {family: choose_memory_mode(free_bytes if gpu else None, env, family).value for family in BUDGETS}
    except Blend123Error as exc:
        return Check("memory mode", False, exc.message, exc.hint)
    names = {"sv3d": "SV3D", "zero123": "Zero123"}
    listed = ", ".join(f"{names.get(f, f)} {m}" for f, m in modes.items())
    if asked is not None:
        why = f"set by {ENV_VAR}"
    elif gpu:
        why = f"chosen from {free_bytes / 2**30:.1f} GiB free GPU memory; {ENV_VAR}=full|balanced|low overrides"
    else:
        why = f"no GPU; {ENV_VAR}=full|balanced|low overrides"
    return Check("memory mode", True, f"{listed} ({why})")


def torch_check() -> Check:
    """Which PyTorch build is installed, and whether it can use this machine's GPU."""
    try:
        import torch
    except ImportError:
        return Check("torch build", False, "PyTorch not installed", "see the README's set-up section")
    cuda_ok = bool(torch.cuda.is_available())
    device = ""
    if cuda_ok:
        free, total = torch.cuda.mem_get_info()
        device = f"{torch.cuda.get_device_name()}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    return classify_torch(torch.__version__, torch.version.cuda, cuda_ok, detect_gpus(), device)


def classify_torch(version: str, cuda: str | None, cuda_available: bool, gpus: GpuInfo, device: str = "") -> Check:
    """The torch-build check from what is installed and what the machine has."""
    build = f"torch {version}, " + (f"CUDA {cuda} build" if cuda else "CPU build")
    gpu = ", ".join(gpus.names)
    driver = f"{gpus.driver_cuda[0]}.{gpus.driver_cuda[1]}" if gpus.driver_cuda else "unknown"
    if cuda and cuda_available:
        return Check("torch build", True, f"{build}, using {device or gpu}: matches the GPU")
    if not gpus.names:
        if cuda:
            return Check(
                "torch build", True,
                f"{build}; no NVIDIA GPU found, so it runs on the CPU (the CPU build is several GB smaller: "
                f"`make clean demo TORCH_INDEX={CPU_INDEX}`)",
            )
        return Check("torch build", True, f"{build}; no NVIDIA GPU on this machine: matches")
    if not cuda:
        return Check(
            "torch build", False, f"{build}, but this machine has an NVIDIA GPU ({gpu}) that it cannot use",
            f"install a CUDA build first: {cuda_install_command(gpus.driver_cuda)}", optional=True,
        )
    # A CUDA build that cannot reach the GPU: usually a driver older than the build.
    return Check(
        "torch build", False,
        f"{build}, but CUDA is not usable with the GPU ({gpu}; the driver runs CUDA up to {driver})",
        f"update the NVIDIA driver, or install a build the driver runs: {cuda_install_command(gpus.driver_cuda)}",
        optional=True,
    )


def cuda_install_command(driver_cuda: tuple[int, int] | None) -> str:
    """The pip commands for the newest published CUDA build the driver can run.

    Uninstall first: pip counts the installed CPU build as the same version and keeps it.
    """
    major, minor = (12, 4)  # the README's, when the driver's version is unknown
    if driver_cuda is not None:
        usable = [b for b in TORCH_CUDA_BUILDS if b <= driver_cuda]
        major, minor = usable[-1] if usable else TORCH_CUDA_BUILDS[0]
    return f"pip uninstall -y torch && pip install torch --index-url https://download.pytorch.org/whl/cu{major}{minor}"


def detect_gpus() -> GpuInfo:
    """NVIDIA GPUs from ``nvidia-smi`` (or the kernel driver's files), without PyTorch."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe], capture_output=True, text=True, timeout=15).stdout
            names = subprocess.run(
                [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=15
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = names = ""
        gpus = parse_nvidia_smi(out, names)
        if gpus.names:
            return gpus
    proc = Path("/proc/driver/nvidia/gpus")
    names = []
    if proc.is_dir():  # driver loaded but no nvidia-smi (minimal containers)
        for info in sorted(proc.glob("*/information")):
            match = re.search(r"^Model:\s*(.+)$", info.read_text(errors="replace"), re.MULTILINE)
            names.append(match.group(1).strip() if match else "NVIDIA GPU")
    return GpuInfo(tuple(names))


def parse_nvidia_smi(summary: str, names: str) -> GpuInfo:
    """GPU names (one a line) and the driver's CUDA version from ``nvidia-smi``'s banner."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", summary)
    driver = (int(match.group(1)), int(match.group(2))) if match else None
    return GpuInfo(tuple(line.strip() for line in names.splitlines() if line.strip()), driver)


# --- optional parts ---------------------------------------------------------------------


def matting_check() -> Check:
    from .matting import status

    state = status()
    if state.available:
        return Check("matting (photos on busy backgrounds)", True, state.detail)
    return Check("matting (photos on busy backgrounds)", False, f"{state.detail} (optional)", state.hint, optional=True)


def _port_check(bind: str) -> Check:
    if not bind.startswith("tcp://"):
        return Check("port", True, f"{bind} is not a TCP endpoint")
    parts = urlsplit(bind)
    host = parts.hostname or "127.0.0.1"
    host = "0.0.0.0" if host == "*" else host
    try:
        port = parts.port or 0
    except ValueError:
        return Check("port", False, f"{bind}: not a valid port", "pass --bind tcp://HOST:PORT with a port 1-65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as exc:
        return Check("port", False, f"{bind}: {exc.strerror or exc}", "another `blend123 serve` may be running; stop it or pass --bind with another port")
    return Check("port", True, f"{bind} is free")
