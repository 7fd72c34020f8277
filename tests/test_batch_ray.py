"""``blend123 batch`` on a real local Ray cluster (2 CPUs, started once for this module):
six images and a broken one, a rerun that skips what is done, and a converter worker
killed mid-image that Ray restarts and whose image is retried."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from blend123.backend.batch import run_batch
from blend123.backend.batch.ledger import LEDGER_NAME, glb_faces

from .conftest import EXAMPLES, blob_image
from .test_batch import fast_options

ray = pytest.importorskip("ray", reason="the Ray tests need Ray Data: pip install -e '.[test]' (or '.[cluster]')")
pytest.importorskip("ray.data", reason="the Ray tests need Ray Data: pip install -e '.[test]' (or '.[cluster]')")

pytestmark = pytest.mark.timeout(1800)  # six conversions on two single-core workers


@pytest.fixture(scope="session")
def worker_tmp(tmp_path_factory):
    """The converter workers' temporary folder: one subfolder per image in progress."""
    folder = tmp_path_factory.getbasetemp() / "ray_worker_tmp"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def ray_cluster(worker_tmp):
    """One real local Ray cluster for the whole session (2 CPUs), stopped at its end.
    The Blender tests import this fixture too: whichever runs first starts it."""
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"TMPDIR": str(worker_tmp)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def six_images(tmp_path_factory):
    """The two examples, the blob, and three variants of them (mirrored, recoloured)."""
    folder = tmp_path_factory.mktemp("six")
    duck, mug = Image.open(EXAMPLES / "duck.png"), Image.open(EXAMPLES / "mug.png")
    blob = blob_image(128)
    pictures = {
        "duck": duck, "mug": mug, "blob": Image.fromarray(blob),
        "duck_mirrored": duck.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "mug_mirrored": mug.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "blob_green": Image.fromarray(np.concatenate([blob[..., [1, 0, 2]], blob[..., 3:]], axis=-1)),
    }
    paths = []
    for name, picture in pictures.items():
        picture.save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def ledger_lines(out):
    return [json.loads(line) for line in (out / LEDGER_NAME).read_text().splitlines()]


def test_six_images_on_ray_broken_one_alone_rerun_skips(ray_cluster, six_images, tmp_path):
    out = tmp_path / "out"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary = run_batch([*six_images, broken], out, fast_options(), ray="auto", quiet=True)

    assert summary.exit_code == 1 and summary.duplicates == 0
    by_image = {r.image: r for r in summary.records}
    assert [by_image[str(p)].status for p in six_images] == ["converted"] * 6
    failed = by_image[str(broken)]
    assert failed.status == "failed" and "broken.png" in failed.error and failed.hint and failed.code == "bad_image"
    for path in six_images:
        faces = glb_faces(out / f"{path.stem}.glb")
        assert faces and faces == by_image[str(path)].faces  # a whole, valid GLB with what the ledger says
        assert (out / f"{path.stem}.light.json").is_file()
    # Both workers took part, each a process of its own on this machine.
    assert len({r.worker for r in summary.records if r.status == "converted"}) == 2
    lines = ledger_lines(out)
    assert [r["image"] for r in lines] == [str(p) for p in [*six_images, broken]]  # one line each, in input order
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    mtimes = {p: os.stat(out / f"{p.stem}.glb").st_mtime_ns for p in six_images}
    again = run_batch([*six_images, broken], out, fast_options(), ray="auto", quiet=True)
    assert [r.status for r in again.records] == ["skipped"] * 6 + ["failed"]
    assert {p: os.stat(out / f"{p.stem}.glb").st_mtime_ns for p in six_images} == mtimes
    assert len(ledger_lines(out)) == 7


def converter_processes() -> list[psutil.Process]:
    """This session's Ray converter actors (descendants of this process: the test's cluster)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayConverter" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def images_in_progress(worker_tmp) -> int:
    """Conversions under way: each has a temporary folder holding its first views."""
    return sum(1 for d in worker_tmp.glob("blend123-batch-*") if any(d.glob("*/views/*.png")))


def test_worker_killed_mid_image_is_restarted_and_the_image_converted_once(ray_cluster, six_images, worker_tmp, tmp_path):
    out = tmp_path / "out"
    images = six_images[:3]
    for leftover in worker_tmp.glob("blend123-batch-*"):  # an earlier test's killed worker's
        leftover.rename(worker_tmp / f"old-{leftover.name}")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_batch(images, out, fast_options(), ray="auto", quiet=True)))
    runner.start()

    deadline = time.monotonic() + 600
    while images_in_progress(worker_tmp) < 2:  # both workers mid-image
        assert runner.is_alive() and time.monotonic() < deadline, "the two workers never got to work"
        time.sleep(0.2)
    workers = converter_processes()
    assert len(workers) == 2
    victim = workers[0].pid
    os.kill(victim, signal.SIGKILL)

    runner.join(timeout=1500)
    assert not runner.is_alive()
    summary = result["summary"]
    assert [r.status for r in summary.records] == ["converted"] * 3
    assert summary.duplicates == 0  # no image delivered, written or recorded twice
    assert sorted(r["image"] for r in ledger_lines(out)) == sorted(str(p) for p in images)
    assert all(glb_faces(out / f"{p.stem}.glb") for p in images)
    finishers = {int(r.worker.rsplit(":", 1)[1]) for r in summary.records}
    assert victim not in finishers  # it died before finishing anything
    assert finishers - {w.pid for w in workers}, "the killed worker's image was converted by its restarted process"


def test_a_worker_dying_past_its_retries_fails_only_its_image_and_a_rerun_converts_it(ray_cluster, six_images, worker_tmp, tmp_path):
    out = tmp_path / "out"
    images = six_images[3:]
    for leftover in worker_tmp.glob("blend123-batch-*"):
        leftover.rename(worker_tmp / f"old-{leftover.name}")
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_batch(images, out, fast_options(), ray="auto", retries=0, quiet=True)))
    runner.start()
    deadline = time.monotonic() + 600
    while images_in_progress(worker_tmp) < 2:
        assert runner.is_alive() and time.monotonic() < deadline, "the two workers never got to work"
        time.sleep(0.2)
    os.kill(converter_processes()[0].pid, signal.SIGKILL)  # no retries left: its image is lost
    runner.join(timeout=1500)
    assert not runner.is_alive()
    summary = result["summary"]
    assert len(summary.records) == 3  # every input accounted for
    lost, converted = summary.of("failed"), summary.of("converted")
    # The killed worker's image is lost; so may be one handed to it before Ray saw it dead.
    assert lost and converted and len(lost) + len(converted) == 3
    for record in lost:
        assert record.code == "job_lost" and "no worker finished it" in record.error and "run the same command again" in record.hint
        assert glb_faces(record.output) is None
    assert all(glb_faces(record.output) == record.faces for record in converted)

    again = run_batch(images, out, fast_options(), ray="auto", quiet=True)  # only what is missing
    assert {r.image: r.status for r in again.records} == {r.image: "converted" if r in lost else "skipped" for r in summary.records}
