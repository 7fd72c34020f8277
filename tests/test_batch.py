"""``blend123 batch`` without a cluster: inputs, names, the ledger, skipping, and a real
in-process run (one broken image beside a good one)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import trimesh
from PIL import Image

from blend123.backend.batch import BatchError, BatchOptions, run_batch
from blend123.backend.batch.inputs import expand_inputs, plan
from blend123.backend.batch.ledger import LEDGER_NAME, Ledger, Record, glb_faces, read_records, write_atomically
from blend123.backend.batch.ray_runner import plan_workers
from blend123.backend.cli import main
from blend123.protocol.messages import GenerationSettings

from .conftest import EXAMPLES, blob_image

#: Small settings: one image is seconds of work on 2 CPU cores, not minutes.
FAST = dict(resolution=64, texture_size=64, max_faces=500)
FAST_ARGS = ["--resolution", "64", "--texture-size", "64", "--max-faces", "500"]


def fast_options(**kw) -> BatchOptions:
    return BatchOptions(settings=GenerationSettings(resolution=FAST["resolution"]), texture_size=FAST["texture_size"], max_faces=FAST["max_faces"], **kw)


def save(path, size=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(blob_image(size))
    (image.convert("RGB") if path.suffix == ".jpg" else image).save(path)
    return path


# --- inputs -----------------------------------------------------------------------------------


def test_inputs_files_folders_globs_and_lists(tmp_path):
    a = save(tmp_path / "shots" / "a.png")
    b = save(tmp_path / "shots" / "b.jpg")
    (tmp_path / "shots" / "notes.md").write_text("not an image")
    c = save(tmp_path / "deep" / "x" / "c.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# product shots\n\ndeep/x/c.png\nshots/a.png\n")
    found = expand_inputs([tmp_path / "shots", str(tmp_path / "deep" / "**" / "*.png"), listing, a])
    assert found == [a.resolve(), b.resolve(), c.resolve()]  # each once, in the order first named


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no file or folder"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
        (lambda d: str(d / "*.webp"), "matches no images"),
    ],
)
def test_inputs_that_name_nothing_are_refused_with_a_fix(tmp_path, make, message):
    with pytest.raises(BatchError) as err:
        expand_inputs([make(tmp_path)])
    assert message in err.value.message and err.value.hint


def test_same_stem_names_do_not_depend_on_the_order(tmp_path):
    one, two, solo = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "y.png"
    names = {i.image: i.name for i in plan([one, two, solo])}
    assert names == {i.image: i.name for i in plan([solo, two, one])}
    assert names[solo] == "y" and len({names[one], names[two], "x"}) == 3


# --- the ledger and what counts as done --------------------------------------------------------


def box_glb() -> bytes:
    return trimesh.creation.box().export(file_type="glb")


def test_a_glb_is_done_only_when_whole(tmp_path):
    glb = box_glb()
    whole, half, junk = tmp_path / "whole.glb", tmp_path / "half.glb", tmp_path / "junk.glb"
    write_atomically(whole, glb)
    half.write_bytes(glb[: len(glb) // 2])
    junk.write_bytes(b"glTF" + b"\0" * 40)
    assert glb_faces(whole) == 12
    assert glb_faces(half) is None and glb_faces(junk) is None and glb_faces(tmp_path / "none.glb") is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ledger_keeps_the_newest_line_per_image_and_survives_a_torn_line(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.add(Record("/in/a.png", "/out/a.glb", "failed", error="boom", hint="retry"))
    ledger.add(Record("/in/b.png", "/out/b.glb", "converted", seconds=2.0, faces=10))
    ledger.add(Record("/in/a.png", "/out/a.glb", "converted", seconds=3.0, faces=12))
    ledger.close()
    with open(tmp_path / LEDGER_NAME, "a") as f:
        f.write('{"image": "/in/c.png", "stat')  # a crash mid-line
    records = read_records(tmp_path / LEDGER_NAME)
    assert [(r.image, r.status, r.faces) for r in records] == [("/in/b.png", "converted", 10), ("/in/a.png", "converted", 12)]
    assert Ledger(tmp_path).previous("/in/a.png").seconds == 3.0


# --- workers from the cluster's resources ------------------------------------------------------


def test_one_worker_per_gpu_else_per_cpus():
    gpu = plan_workers({"CPU": 32, "GPU": 4}, images=100)
    assert (gpu.actors, gpu.num_gpus) == (4, 1.0)
    assert plan_workers({"CPU": 32, "GPU": 4}, images=3).actors == 3  # never more workers than images
    assert plan_workers({"CPU": 32, "GPU": 4}, images=100, workers=2).actors == 2
    cpu = plan_workers({"CPU": 8}, images=100, cpus_per_worker=2)
    assert (cpu.actors, cpu.num_gpus, cpu.num_cpus) == (4, 0.0, 2.0)
    shared = plan_workers({"CPU": 2}, images=100, workers=4)
    assert shared.actors == 4 and shared.num_cpus * 4 <= 2  # asked for more: they share the cores


# --- the command line -------------------------------------------------------------------------


def test_usage_mistakes_exit_2_with_a_fix(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no file or folder" in err and "fix:" in err
    image = save(tmp_path / "a.png")
    assert main(["batch", str(image), "-o", str(tmp_path / "out"), "--workers", "2"]) == 2
    assert "needs a Ray cluster" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["batch", str(image), "-o", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # bounds come from protocol/settings.py, as for convert
        main(["batch", str(image), "-o", str(tmp_path / "out"), "--texture-size", "1"])


def test_in_process_batch_converts_fails_alone_and_skips_on_rerun(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    out.mkdir()
    duck = EXAMPLES / "duck.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    (out / "duck.glb").write_bytes(box_glb()[:100])  # a half-written GLB of a crashed run: not done
    caplog.set_level(logging.INFO, logger="blend123.batch")  # pytest owns the root logger here

    code = main(["--log-level", "info", "batch", str(duck), str(broken), "-o", str(out), *FAST_ARGS])
    captured = capsys.readouterr()
    assert code == 1  # an image failed: the exit status says so
    assert "1 converted, 0 skipped (already done), 1 failed, of 2" in captured.out
    stages = [r.getMessage() for r in caplog.records if r.name == "blend123.batch"]
    assert "duck: views 100%" in stages and "duck: refine 100%" in stages  # per-image stage lines at --log-level info
    assert "--ray" in captured.err  # says how to scale out
    assert glb_faces(out / "duck.glb") > 100 and (out / "duck.light.json").is_file()
    assert json.loads((out / "duck.light.json").read_text())
    assert not (out / "broken.glb").exists()
    lines = [json.loads(line) for line in (out / LEDGER_NAME).read_text().splitlines()]
    assert [(r["image"], r["status"]) for r in lines] == [(str(duck), "converted"), (str(broken.resolve()), "failed")]
    assert lines[0]["faces"] == glb_faces(out / "duck.glb") and lines[0]["seconds"] > 0
    assert "not an image format" in lines[1]["error"] and lines[1]["hint"] and lines[1]["code"] == "bad_image"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    before = os.stat(out / "duck.glb").st_mtime_ns
    summary = run_batch([duck, broken], out, fast_options(), quiet=True)
    assert [r.status for r in summary.records] == ["skipped", "failed"]  # failed ones are tried again
    assert summary.records[0].faces == lines[0]["faces"] and summary.records[0].seconds == lines[0]["seconds"]
    assert os.stat(out / "duck.glb").st_mtime_ns == before
    assert len((out / LEDGER_NAME).read_text().splitlines()) == 2


def test_unknown_model_is_refused_before_any_work(tmp_path, capsys):
    assert main(["batch", str(save(tmp_path / "a.png")), "-o", str(tmp_path / "out"), "--model", "zero123-xxl"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_weights_fail_every_image_with_the_download_hint(tmp_path, monkeypatch):
    # Weights are looked up where the workers run: each image says what to install, and where.
    monkeypatch.setenv("BLEND123_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("BLEND123_MODEL_SV3D_P", raising=False)
    images = [save(tmp_path / "a.png"), save(tmp_path / "b.png")]
    summary = run_batch(images, tmp_path / "out", BatchOptions(settings=GenerationSettings(model="sv3d-p")), quiet=True)
    assert [r.status for r in summary.records] == ["failed", "failed"]
    assert all(r.code == "model_unavailable" and "not installed" in r.error and r.hint for r in summary.records)
    assert summary.exit_code == 1


def test_without_ray_the_cluster_mode_says_what_to_install(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError, as where it is not installed
    assert main(["batch", str(save(tmp_path / "a.png")), "-o", str(tmp_path / "out"), "--ray", "auto"]) == 2
    err = capsys.readouterr().err
    assert "needs Ray Data" in err and "pip install 'blend123[cluster]'" in err


def test_a_driver_killed_mid_batch_leaves_only_whole_outputs_and_the_rerun_does_the_rest(tmp_path):
    images = [save(tmp_path / "in" / f"{name}.png", size) for name, size in (("a", 64), ("b", 80), ("c", 96))]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "blend123.backend.cli", "batch", *map(str, images), "-o", str(out), "--quiet", *FAST_ARGS]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not any(glb_faces(p) for p in out.glob("*.glb")):
            assert driver.poll() is None and time.monotonic() < deadline, "the first image never finished"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)  # a crash of the driver, mid-batch
    finally:
        driver.wait(30)
    done = sorted(p.stem for p in out.glob("*.glb"))
    assert 1 <= len(done) < 3 and all(glb_faces(p) for p in out.glob("*.glb"))  # nothing half-written looks done
    summary = run_batch(images, out, fast_options(), quiet=True)
    assert {r.image: r.status for r in summary.records} == {str(p): "skipped" if p.stem in done else "converted" for p in images}
    assert len((out / LEDGER_NAME).read_text().splitlines()) == 3
