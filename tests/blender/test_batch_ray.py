"""``blender -b --command blend123 convert ... --ray ADDRESS`` for real: the images are
converted on the session's Ray cluster by ``blend123 batch``, and the .blend files are
made here, in Blender, from the GLBs it fetched."""

from __future__ import annotations

import json
import sys

import pytest

from ..conftest import EXAMPLES
from ..test_batch_ray import ray_cluster, worker_tmp  # noqa: F401 - the session's one cluster
from .conftest import ext

bpy = pytest.importorskip("bpy")
pytest.importorskip("ray.data", reason="the Ray tests need Ray Data: pip install -e '.[test]' (or '.[cluster]')")

ARGS = ["--resolution", "64", "--texture-size", "64", "--max-faces", "500"]


@pytest.mark.timeout(1200)
def test_convert_on_ray_writes_blends_here(addon, ray_cluster, tmp_path, capsys):  # noqa: F811
    address = ray_cluster.get_runtime_context().gcs_address
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    out = tmp_path / "out"
    main = ext("cli_command").main
    argv = ["convert", str(EXAMPLES / "duck.png"), str(broken), "-o", str(out), "--blend", "--ray", address, "--python", sys.executable, *ARGS]
    objects_before = len(bpy.data.objects)
    assert main(argv) == 1  # the broken image failed; the duck did not
    printed = capsys.readouterr().out
    assert "[1/2] duck.png: wrote" in printed and "and duck.blend" in printed
    assert "[2/2] broken.png: FAILED" in printed and "fix:" in printed
    assert len(bpy.data.objects) == objects_before  # the scene it made was removed again
    ledger = {json.loads(line)["image"]: json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()}
    assert ledger[str(EXAMPLES / "duck.png")]["status"] == "converted"

    # Again: the GLB is skipped on the cluster, the .blend is kept.
    assert main(argv) == 1
    assert "[1/2] duck.png: skipped" in capsys.readouterr().out

    faces = ledger[str(EXAMPLES / "duck.png")]["faces"]
    bpy.ops.wm.open_mainfile(filepath=str(out / "duck.blend"))
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.name.endswith(" mesh")]
    assert len(meshes) == 1 and len(meshes[0].data.polygons) == faces and len(meshes[0].data.uv_layers) == 1
    assert "blend123_light_json" in meshes[0]  # Apply Fitted Light works on it
    image = meshes[0].data.materials[0].node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (64, 64)
    bpy.ops.wm.read_homefile(use_empty=True)
