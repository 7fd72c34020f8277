"""The headless batch command (``blender -b --command blend123 convert ...``) for real."""

from __future__ import annotations

import pytest
from PIL import Image

from ..conftest import EXAMPLES, blob_image
from .conftest import FAST, ext

bpy = pytest.importorskip("bpy")

ARGS = ["--resolution", str(FAST["resolution"]), "--texture-size", str(FAST["texture_size"]), "--max-faces", str(FAST["max_faces"])]


@pytest.fixture
def images(tmp_path):
    blob = tmp_path / "blob.png"
    Image.fromarray(blob_image(128)).save(blob)
    return [EXAMPLES / "duck.png", EXAMPLES / "mug.png", blob]


def test_convert_three_images_to_glbs_and_blends(addon, backend, images, tmp_path, capsys):
    main = ext("cli_command").main
    out = tmp_path / "out"
    objects_before = len(bpy.data.objects)
    assert main(["convert", *map(str, images), "-o", str(out), "--blend", "--server", backend.address, *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "[3/3] blob.png:" in printed and "3 converted, 0 skipped" in printed
    for stem in ("duck", "mug", "blob"):
        glb = (out / f"{stem}.glb").read_bytes()
        assert glb[:4] == b"glTF" and len(glb) > 1000
        assert (out / f"{stem}.blend").is_file()
    assert len(bpy.data.objects) == objects_before  # each conversion cleaned up after itself
    assert not list(out.glob(".*part"))

    # Running again skips what is done.
    assert main(["convert", *map(str, images), "-o", str(out), "--blend", "--server", backend.address, *ARGS]) == 0
    assert "0 converted, 3 skipped" in capsys.readouterr().out

    # The .blend reopens with the mesh, its material and the orbit planes.
    bpy.ops.wm.open_mainfile(filepath=str(out / "duck.blend"))
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.name.endswith(" mesh")]
    assert len(meshes) == 1 and len(meshes[0].data.uv_layers) == 1
    image = meshes[0].data.materials[0].node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (256, 256)
    assert len([o for o in bpy.data.objects if o.type == "CAMERA" and "view" in o.name]) == 21
    planes = [o for o in bpy.data.objects if o.name.endswith("plane")]
    assert len(planes) == 21 and all(p.data.materials[0].node_tree.nodes["Image Texture"].image.packed_file for p in planes)
    bpy.ops.wm.read_homefile(use_empty=True)


def test_broken_image_fails_alone(addon, backend, images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    out = tmp_path / "out"
    summary = ext("cli_command").convert([broken, images[2]], out, server=backend.address, resolution=128, texture_size=256, max_faces=3000)
    assert summary.exit_code == 1
    assert [p.name for p in summary.converted] == ["blob.png"]
    (image, reason), = summary.failed
    assert image == broken and "cannot read broken.png" in reason and "fix:" in reason
    assert (out / "blob.glb").is_file() and not (out / "broken.glb").exists()
    assert "FAILED" in capsys.readouterr().out


def test_sds_model_reaches_the_backend(addon, backend, images, tmp_path, capsys):
    # The quick proxy cannot paint unseen surfaces: the backend's refusal is the image's failure.
    code = ext("cli_command").main(["convert", str(images[2]), "-o", str(tmp_path / "out"), "--server", backend.address, "--sds-model", "default", *ARGS])
    printed = capsys.readouterr().out
    assert code == 1
    assert "not a Zero123-class model" in printed and "fix: use zero123-xl" in printed
    assert not (tmp_path / "out" / "blob.glb").exists()


def test_stopped_backend_gives_a_clear_error(addon, serve_process, images, tmp_path, capsys):
    proc = serve_process()
    proc.stop()
    ext("session").session().disconnect()
    code = ext("cli_command").main(["convert", str(images[2]), "-o", str(tmp_path / "out"), "--server", proc.address, "--timeout", "1", *ARGS])
    printed = capsys.readouterr().out
    assert code == 1
    assert ("no answer from the backend" in printed or "could not reach the backend" in printed) and "blend123 serve" in printed
    assert "0 converted, 0 skipped (already done), 1 failed" in printed


def test_usage_errors_exit_2(addon, capsys):
    main = ext("cli_command").main
    assert main(["convert", "a.png"]) == 2
    assert main(["convert", "a.png", "-o", "x", "--elevations", "1,2"]) == 2
    assert "one per view" in capsys.readouterr().err
