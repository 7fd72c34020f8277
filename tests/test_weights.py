"""Finding model weights: env var, models folder, Hugging Face cache (offline), and hints."""

from __future__ import annotations

import socket

import pytest

from blend123.backend.synthesis import registry
from blend123.backend.synthesis.weights import WeightsSource, locate, missing_hint, resolve
from tests.data.tiny_models import write_sv3d_checkpoint, write_zero123_checkpoint

SV3D = registry.WEIGHTS["sv3d-p"]
ZERO = registry.WEIGHTS["zero123-xl"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLEND123_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in registry.WEIGHTS.values():
        monkeypatch.delenv(source.env_var, raising=False)


def test_missing_model_says_what_to_download_and_where(tmp_path):
    assert locate(SV3D) is None
    hint = missing_hint(SV3D)
    assert "stabilityai/sv3d" in hint and "sv3d_p.safetensors" in hint
    assert str(tmp_path / "models" / "sv3d-p" / "sv3d_p.safetensors") in hint and "BLEND123_MODEL_SV3D_P" in hint
    info = {i.name: i for i in registry.model_infos()}
    assert not info["zero123-xl"].available and "ashawkey/zero123-xl-diffusers" in info["zero123-xl"].hint
    assert info["default"].available


def test_models_folder_and_env_var(tmp_path, monkeypatch):
    write_sv3d_checkpoint(tmp_path / "models" / "sv3d-p" / "sv3d_p.safetensors", "sv3d_p")
    assert locate(SV3D) == tmp_path / "models" / "sv3d-p" / "sv3d_p.safetensors"
    assert missing_hint(SV3D) == ""
    assert {i.name: i.available for i in registry.model_infos()}["sv3d-p"]
    monkeypatch.setenv(SV3D.env_var, str(tmp_path / "nowhere"))
    assert locate(SV3D) is None and "nowhere" in missing_hint(SV3D)


def test_hf_cache_offline(tmp_path):
    # A cache entry as huggingface_hub lays it out: snapshots/<rev>/ and refs/main.
    repo = tmp_path / "hf" / "models--ashawkey--zero123-xl-diffusers"
    write_zero123_checkpoint(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    found = locate(ZERO)
    assert found is not None and found.name == "abc123"
    assert resolve("ashawkey/zero123-xl-diffusers") == found
    with pytest.raises(FileNotFoundError, match="hf download someone/not-cached"):
        resolve("someone/not-cached")


def test_hf_cache_single_file_prefers_refs_main(tmp_path):
    repo = tmp_path / "hf" / "models--stabilityai--sv3d"
    write_sv3d_checkpoint(repo / "snapshots" / "old" / "sv3d_p.safetensors", "sv3d_p")
    write_sv3d_checkpoint(repo / "snapshots" / "new" / "sv3d_p.safetensors", "sv3d_p")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("old\n")
    assert locate(SV3D) == repo / "snapshots" / "old" / "sv3d_p.safetensors"
    assert resolve("stabilityai/sv3d", "sv3d_p.safetensors") == locate(SV3D)
    assert locate(registry.WEIGHTS["sv3d-u"]) is None  # another file of the same repo


def test_hf_home_is_read_when_the_lookup_runs(tmp_path, monkeypatch):
    # huggingface_hub reads these once, at import; the lookup must follow later changes.
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    repo = tmp_path / "home" / "hub" / "models--kxic--zero123-xl"
    write_zero123_checkpoint(repo / "snapshots" / "r1")
    assert locate(ZERO) == repo / "snapshots" / "r1"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name look-up fails the test: checking, not replacing, the lookup."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise AssertionError(f"network access during a weights lookup: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize("offline", ["1", None])
def test_lookup_makes_no_network_access(tmp_path, monkeypatch, no_network, offline):
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE")  # the ordinary user: not offline, yet no call
    repo = tmp_path / "hf" / "models--ashawkey--zero123-xl-diffusers"
    write_zero123_checkpoint(repo / "snapshots" / "abc")
    infos = {i.name: i for i in registry.model_infos()}  # what `hello` and `doctor` do
    assert infos["zero123-xl"].available and not infos["sv3d-p"].available
    assert "hf download stabilityai/sv3d sv3d_p.safetensors" in infos["sv3d-p"].hint
    with pytest.raises(FileNotFoundError):
        resolve("someone/not-cached")
    assert no_network == []


def test_registry_loads_through_the_same_path(tmp_path, monkeypatch):
    write_zero123_checkpoint(tmp_path / "models" / "stable-zero123", "cc_projection")
    model = registry.MODELS["stable-zero123"].load()
    assert model.pipe.config.pose_variant == "stable-zero123" and "guidance" in model.card.takes
    resident = registry.ResidentModel()
    assert resident.release_if_memory_short() is False  # no GPU, or nothing loaded


def test_incomplete_folder_is_not_a_model(tmp_path):
    folder = tmp_path / "models" / "zero123-xl"
    write_zero123_checkpoint(folder)
    import shutil

    shutil.rmtree(folder / "clip_camera_projection")
    assert locate(ZERO) is None
    assert isinstance(WeightsSource("x", ("a/b",)).env_var, str)
