"""`blend123 doctor`: a correct install exits 0; optional parts are listed as optional, with
the current download command; the PyTorch build is judged against the machine's GPU."""

from __future__ import annotations

import socket

import pytest

from blend123.backend import doctor
from blend123.backend.cli import main
from blend123.backend.doctor import GpuInfo, classify_torch, cuda_install_command, parse_nvidia_smi
from blend123.backend.synthesis import registry


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLEND123_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the jobs folder
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.delenv("BLEND123_MODEL_MATTING", raising=False)
    for source in registry.WEIGHTS.values():
        monkeypatch.delenv(source.env_var, raising=False)


def free_bind() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_install_without_optional_parts_exits_0_and_lists_them(capsys, tmp_path):
    assert main(["doctor", "--bind", free_bind()]) == 0
    out = capsys.readouterr().out
    for name in ("zero123-xl", "stable-zero123", "sv3d-u", "sv3d-p"):
        line = next(line for line in out.splitlines() if f"model {name}:" in line)
        assert line.startswith("--") and "optional" in line
    assert "hf download stabilityai/sv3d sv3d_p.safetensors --local-dir" in out
    assert "huggingface-cli" not in out
    assert str(tmp_path / "models" / "sv3d-p") in out
    assert "torch build: torch " in out and "build" in out
    assert "matting (photos on busy backgrounds)" in out and "models/matting" in out
    assert "ok  model default" in out
    assert "all good" in out and "optional part(s) not installed" in out


def test_a_busy_port_is_a_problem_and_exits_1(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["doctor", "--bind", f"tcp://127.0.0.1:{busy.getsockname()[1]}"]) == 1
    out = capsys.readouterr().out
    assert "!!  port" in out and "1 problem(s) found" in out


def test_installed_weights_show_as_ok(tmp_path):
    from tests.data.tiny_models import write_sv3d_checkpoint

    write_sv3d_checkpoint(tmp_path / "models" / "sv3d-p" / "sv3d_p.safetensors", "sv3d_p")
    checks = {c.name: c for c in doctor.run_checks(free_bind())}
    assert checks["model sv3d-p"].ok and not checks["model sv3d-u"].ok
    assert checks["model sv3d-u"].optional and not checks["model sv3d-u"].problem
    assert not any(c.problem for c in checks.values())


@pytest.mark.parametrize(
    "version, cuda, available, gpus, ok, words",
    [
        ("2.13.0+cpu", None, False, GpuInfo(), True, ["CPU build", "matches"]),
        ("2.13.0+cu124", "12.4", True, GpuInfo(("NVIDIA H200",), (12, 8)), True, ["CUDA 12.4 build", "matches the GPU"]),
        ("2.13.0+cpu", None, False, GpuInfo(("NVIDIA H200",), (12, 8)), False, ["CPU build", "cannot use", "H200"]),
        ("2.13.0+cu130", "13.0", False, GpuInfo(("RTX 3090",), (12, 2)), False, ["not usable", "up to 12.2"]),
        ("2.13.0+cu124", "12.4", False, GpuInfo(), True, ["runs on the CPU"]),
    ],
)
def test_torch_build_against_the_gpu(version, cuda, available, gpus, ok, words):
    check = classify_torch(version, cuda, available, gpus, "NVIDIA H200, 130.0 of 139.8 GiB free")
    assert check.ok is ok and not check.problem  # a slow or unused GPU is not a broken install
    for word in words:
        assert word in check.detail
    if not ok:
        assert "download.pytorch.org/whl/cu" in check.fix and "pip uninstall -y torch" in check.fix


def test_cuda_build_follows_the_driver():
    assert cuda_install_command((12, 8)).endswith("/whl/cu128")
    assert cuda_install_command((12, 5)).endswith("/whl/cu124")
    assert cuda_install_command((13, 2)).endswith("/whl/cu130")
    assert cuda_install_command((11, 4)).endswith("/whl/cu118")  # older than any: the oldest
    assert cuda_install_command(None).endswith("/whl/cu124")


def test_nvidia_smi_output_is_read():
    banner = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+"""
    gpus = parse_nvidia_smi(banner, "NVIDIA H200\nNVIDIA H200\n")
    assert gpus == GpuInfo(("NVIDIA H200", "NVIDIA H200"), (12, 8))
    assert parse_nvidia_smi("", "") == GpuInfo()


def test_this_machine_is_judged_without_error():
    check = doctor.torch_check()
    assert check.name == "torch build" and "torch " in check.detail and not check.problem
