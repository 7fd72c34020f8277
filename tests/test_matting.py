"""Real photos as references: rembg with a matting model found locally, never downloaded.

The model is a tiny ONNX graph the test builds, with the signature of rembg's U^2-Net
family (input (1, 3, 320, 320) float, first output (1, 1, 320, 320)): it scores pixels
by their chroma, so a saturated subject on a busy grey background comes out as subject.
The tests that run rembg skip, with the reason, where the optional extra is not installed.
"""

from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest

from blend123.backend import matting
from blend123.backend.images import BusyBackgroundError, ImageError, prepare_reference, subject_mask

HAVE_REMBG = all(importlib.util.find_spec(m) is not None for m in ("rembg", "onnxruntime", "onnx"))
needs_rembg = pytest.mark.skipif(not HAVE_REMBG, reason="the matting extra (rembg, onnxruntime) and onnx are not installed")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLEND123_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.delenv(matting.ENV_VAR, raising=False)
    matting._sessions.clear()


def ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 < 1.0


def busy_photo(h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A red subject on a background of large grey blobs of every brightness: no plain border."""
    rng = np.random.default_rng(7)
    rgb = np.full((h, w, 3), 128.0)
    for _ in range(30):
        grey = rng.uniform(20, 235)
        rgb[ellipse(h, w, rng.uniform(0, w), rng.uniform(0, h), *rng.uniform(20, 60, 2))] = grey
    subject = ellipse(h, w, 170, 120, 60, 80)
    rgb[subject] = (200, 40, 30)
    rgb += rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), subject


def write_chroma_model(path, size: int = 320) -> None:
    """An ONNX graph with U^2-Net's input and output shapes: output = max - min over channels."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])
    out = helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, size, size])
    nodes = [
        helper.make_node("ReduceMax", ["input.1"], ["hi"], axes=[1], keepdims=1),
        helper.make_node("ReduceMin", ["input.1"], ["lo"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["hi", "lo"], ["d0"]),
    ]
    graph = helper.make_graph(nodes, "chroma", [image], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


# --- finding the model (no rembg needed) ----------------------------------------------------


def test_model_lookup_order(tmp_path, monkeypatch):
    assert matting.locate_model() is None
    # rembg's folder: only the files rembg publishes (it also keeps SAM and others there).
    (tmp_path / "u2net").mkdir()
    (tmp_path / "u2net" / "sam_vit_b.onnx").write_bytes(b"x")
    assert matting.locate_model() is None
    (tmp_path / "u2net" / "u2netp.onnx").write_bytes(b"x")
    assert matting.locate_model() == tmp_path / "u2net" / "u2netp.onnx"
    # The models folder comes first, and takes any .onnx there.
    (tmp_path / "models" / "matting").mkdir(parents=True)
    (tmp_path / "models" / "matting" / "mine.onnx").write_bytes(b"x")
    assert matting.locate_model() == tmp_path / "models" / "matting" / "mine.onnx"
    # The environment variable wins, as a file or a folder, even when wrong.
    monkeypatch.setenv(matting.ENV_VAR, str(tmp_path / "u2net"))
    assert matting.locate_model() == tmp_path / "u2net" / "u2netp.onnx"
    monkeypatch.setenv(matting.ENV_VAR, str(tmp_path / "nowhere.onnx"))
    assert matting.locate_model() is None
    assert f"{matting.ENV_VAR}={tmp_path / 'nowhere.onnx'}" in matting.missing_hint()


def test_session_family_follows_the_file_name(tmp_path):
    assert matting._session_name(tmp_path / "u2net.onnx") == "u2net_custom"
    assert matting._session_name(tmp_path / "silueta.onnx") == "u2net_custom"
    assert matting._session_name(tmp_path / "isnet-general-use.onnx") == "dis_custom"
    assert matting._session_name(tmp_path / "birefnet-general.onnx") == "birefnet"


def test_refusal_names_the_extra_and_where_the_model_goes(tmp_path):
    photo, _ = busy_photo()
    with pytest.raises(BusyBackgroundError) as err:
        prepare_reference(photo)
    hint = err.value.hint
    assert "transparent background" in hint and str(tmp_path / "models" / "matting") in hint
    assert matting.ENV_VAR in hint and "u2net.onnx" in hint
    assert ("blend123[matting]" in hint) == (not matting.rembg_installed())
    status = matting.status()
    assert not status.available and status.hint == matting.missing_hint() != ""


def test_plain_subject_mask_never_mattes(tmp_path):
    # Generated views are keyed, never matted: only references are (prepare_reference).
    write_chroma_model(tmp_path / "models" / "matting" / "u2net.onnx") if HAVE_REMBG else None
    with pytest.raises(BusyBackgroundError):
        subject_mask(busy_photo()[0])


# --- running rembg ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while matting: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@needs_rembg
@pytest.mark.parametrize("where", ["models folder", "env var", "u2net home"])
def test_busy_photo_is_cut_out_with_a_local_model(tmp_path, monkeypatch, no_network, where):
    target = {
        "models folder": tmp_path / "models" / "matting" / "u2net.onnx",
        "env var": tmp_path / "elsewhere" / "my-matting.onnx",
        "u2net home": tmp_path / "u2net" / "u2net.onnx",
    }[where]
    write_chroma_model(target)
    if where == "env var":
        monkeypatch.setenv(matting.ENV_VAR, str(target))
    assert matting.status().available and matting.status().model == target
    photo, subject = busy_photo()
    mask = subject_mask(photo, matte=True)
    assert (mask & subject).sum() / (mask | subject).sum() > 0.95
    prepared = prepare_reference(photo, size=128)
    ys, xs = np.nonzero(prepared.mask)
    assert abs(0.5 * (xs.min() + xs.max() + 1) - 64) <= 1.5  # the subject, centred
    assert 0.8 * 128 - 2 <= ys.max() + 1 - ys.min() <= 0.8 * 128 + 2  # its height fills 80%


@needs_rembg
def test_session_is_loaded_once_and_reloaded_when_the_file_changes(tmp_path):
    model = tmp_path / "models" / "matting" / "u2net.onnx"
    write_chroma_model(model)
    first = matting._session()
    assert matting._session() is first
    write_chroma_model(model)
    import os

    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    assert matting._session() is not first


@needs_rembg
def test_a_model_of_another_signature_gives_a_hinted_error(tmp_path):
    write_chroma_model(tmp_path / "models" / "matting" / "u2net.onnx", size=64)  # 64 px, not 320
    with pytest.raises(ImageError) as err:
        prepare_reference(busy_photo()[0])
    assert "matting model" in err.value.message and "u2net.onnx" in err.value.hint


@needs_rembg
def test_a_file_that_is_not_onnx_gives_a_hinted_error(tmp_path):
    bad = tmp_path / "models" / "matting" / "u2net.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a model")
    with pytest.raises(ImageError) as err:
        prepare_reference(busy_photo()[0])
    assert "cannot be loaded" in err.value.message and err.value.hint
