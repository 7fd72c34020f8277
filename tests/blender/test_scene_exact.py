"""Scene-exact views: what a camera's preview plane shows is what the mesh shows through it.

The add-on in real Blender against a real backend: an orbit and a mesh of the duck, then a
*Preview* from cameras with 35, 50 and 85 mm lenses, a shifted lens and a 16:9 render. Each
preview plane and the reconstructed mesh are rendered with Cycles through the asking camera,
and their silhouettes must agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ..conftest import EXAMPLES

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

MIN_IOU = 0.95


def _silhouette(scene, path) -> np.ndarray:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    try:
        pixels = np.array(image.pixels[:], np.float32).reshape(image.size[1], image.size[0], 4)
    finally:
        bpy.data.images.remove(image)
    return pixels[..., 3] > 0.5


def _camera(scene, lens: float, shift_x: float):
    camera = bpy.data.objects.new(f"Asking {lens} mm", bpy.data.cameras.new(f"Asking {lens} mm"))
    camera.data.lens, camera.data.shift_x = lens, shift_x
    scene.collection.objects.link(camera)
    distance = 2.6 * lens / 50.0  # keep the duck a similar size in frame
    azimuth, elevation = math.radians(-50.0), math.radians(15.0)
    camera.location = Vector((
        distance * math.cos(elevation) * math.cos(azimuth),
        distance * math.cos(elevation) * math.sin(azimuth),
        distance * math.sin(elevation),
    ))
    camera.rotation_euler = (-camera.location).to_track_quat("-Z", "Y").to_euler()
    return camera


@pytest.mark.slow
def test_preview_planes_and_the_mesh_agree_through_every_lens(connected, scene, tmp_path):
    settings = scene.blend123
    settings.reference_source = "FILE"
    settings.reference_file = str(EXAMPLES / "duck.png")
    scene.render.resolution_x, scene.render.resolution_y = 320, 180  # 16:9
    assert bpy.ops.blend123.orbit() == {"FINISHED"}
    before_mesh = set(scene.objects)
    assert bpy.ops.blend123.mesh() == {"FINISHED"}
    mesh = max((o for o in scene.objects if o not in before_mesh and o.type == "MESH"), key=lambda o: len(o.data.polygons))
    for obj in scene.objects:
        obj.hide_render = obj is not mesh
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1  # silhouettes only
    scene.render.film_transparent = True

    for lens, shift in ((35.0, 0.0), (50.0, 0.0), (85.0, 0.0), (50.0, 0.15)):
        scene.camera = _camera(scene, lens, shift)
        before = set(scene.objects)
        assert bpy.ops.blend123.preview() == {"FINISHED"}
        (plane,) = [o for o in scene.objects if o not in before and o.type == "MESH"]
        mesh.hide_render, plane.hide_render = True, False
        seen_on_plane = _silhouette(scene, tmp_path / f"plane_{lens}_{shift}.png")
        mesh.hide_render, plane.hide_render = False, True
        seen_on_mesh = _silhouette(scene, tmp_path / f"mesh_{lens}_{shift}.png")
        iou = (seen_on_plane & seen_on_mesh).sum() / max(1, (seen_on_plane | seen_on_mesh).sum())
        assert seen_on_mesh.sum() > 500, "the mesh is not in the camera's view"
        assert iou >= MIN_IOU, f"{lens} mm, shift {shift}: silhouette IoU {iou:.3f}"
