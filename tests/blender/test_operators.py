"""Every operator headless against a real backend process, with the scene checked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from .conftest import ext

bpy = pytest.importorskip("bpy")
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Vector  # noqa: E402

CENTRE = Vector((1.0, 2.0, 0.5))


def _place_reference(scene, elevation=15.0, azimuth=30.0, radius=3.0):
    """A reference camera away from the default front view, so the frame mapping matters."""
    frame = ext("core.frame")
    scene.cursor.location = CENTRE
    e, a = math.radians(elevation), math.radians(azimuth)
    pos = np.array(CENTRE) + radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    cam = bpy.data.objects.new("Ref", bpy.data.cameras.new("Ref"))
    from mathutils import Matrix

    cam.matrix_world = Matrix(frame.look_at_matrix(pos, np.array(CENTRE)).tolist())
    scene.collection.objects.link(cam)
    scene.blend123.reference_camera = cam
    scene.camera = cam
    return cam


def _plane_corners_in_view(scene, camera, plane):
    corners = [plane.matrix_world @ v.co for v in plane.data.vertices]
    return np.array([tuple(world_to_camera_view(scene, camera, c))[:2] for c in corners])


def _planes(coll):
    return [o for o in coll.all_objects if o.type == "MESH" and o.name.endswith("plane")]


def test_preview_plane_fills_the_asking_camera_frame(connected, scene):
    _place_reference(scene)
    cam = bpy.data.objects.new("Viewer", bpy.data.cameras.new("Viewer"))
    frame = ext("core.frame")
    from mathutils import Matrix

    cam.matrix_world = Matrix(frame.look_at_matrix(np.array(CENTRE) + np.array([2.5, 0.5, 1.0]), np.array(CENTRE)).tolist())
    cam.data.lens = 35
    scene.collection.objects.link(cam)
    scene.camera = cam
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    planes = [o for o in bpy.data.objects if o.parent == cam]
    assert len(planes) == 1
    plane = planes[0]
    uv = _plane_corners_in_view(scene, cam, plane)
    np.testing.assert_allclose(uv, [[0, 0], [1, 0], [1, 1], [0, 1]], atol=1e-4)
    assert plane.users_collection[0].name.startswith("view ")
    assert plane.users_collection[0] in list(bpy.data.collections["blend123"].children)
    image = plane.data.materials[0].node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and tuple(image.size) == (128, 128)
    assert scene.view_settings.view_transform == "Standard"
    # The image's alpha reaches the material: transparency is mixed by it.
    mix = plane.data.materials[0].node_tree.nodes["Mix Shader"]
    assert mix.inputs["Fac"].links[0].from_socket.name == "Alpha"

    # A landscape render: the square view keeps its aspect and covers the frame.
    scene.render.resolution_x, scene.render.resolution_y = 320, 180
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    newest = [o for o in bpy.data.objects if o.parent == cam and o != plane][0]
    uv = _plane_corners_in_view(scene, cam, newest)
    np.testing.assert_allclose(uv[:, 0], [0, 1, 1, 0], atol=1e-4)
    assert uv[0, 1] < 0 and uv[2, 1] > 1  # overflows top and bottom
    dims = newest.dimensions
    assert dims.x == pytest.approx(dims.y)


def test_orbit_ring_about_the_subject_and_undo(connected, scene):
    ref = _place_reference(scene)
    objects_before = {o.name for o in bpy.data.objects}
    bpy.ops.ed.undo_push(message="before orbit")
    assert bpy.ops.blend123.orbit("EXEC_DEFAULT", True) == {"FINISHED"}
    coll = bpy.data.collections[scene.blend123.last_orbit_collection]
    cams = sorted((o for o in coll.objects if o.type == "CAMERA"), key=lambda o: o["blend123_index"])
    assert len(cams) == 21 and len(_planes(coll)) == 21
    assert coll.get("blend123_job") == scene.blend123.last_orbit_job
    radius = (ref.matrix_world.translation - CENTRE).length
    for cam in cams:
        assert (cam.matrix_world.translation - CENTRE).length == pytest.approx(radius, rel=1e-4)
        forward = cam.matrix_world.to_3x3() @ Vector((0, 0, -1))
        assert forward.angle(CENTRE - cam.matrix_world.translation) < math.radians(0.1)
        plane = next(p for p in _planes(coll) if p.parent == cam)
        np.testing.assert_allclose(_plane_corners_in_view(scene, cam, plane), [[0, 0], [1, 0], [1, 1], [0, 1]], atol=1e-4)
    # The last orbit view is back at relative azimuth 0: where the reference camera is.
    assert (cams[-1].matrix_world.translation - ref.matrix_world.translation).length < 0.2 * radius
    # +90 deg relative (view 5 of 21 is at ~86 deg) lies to the reference camera's right.
    right = ref.matrix_world.to_3x3() @ Vector((1, 0, 0))
    assert (cams[4].matrix_world.translation - CENTRE).dot(right) > 0.9 * radius * math.cos(math.radians(15))

    bpy.ops.ed.undo()
    assert {o.name for o in bpy.data.objects} == objects_before
    assert "blend123" not in bpy.data.collections or not bpy.data.collections["blend123"].all_objects


def test_mesh_lands_at_the_subject_with_uvs_and_texture(connected, scene, tmp_path):
    _place_reference(scene)
    assert bpy.ops.blend123.mesh() == {"FINISHED"}  # no orbit yet: orbit, then mesh
    assert scene.blend123.last_orbit_job
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.name.endswith(" mesh")]
    assert len(meshes) == 1
    obj = meshes[0]
    assert obj.users_collection[0].name.startswith("mesh ")
    assert len(obj.data.uv_layers) == 1
    image = obj.data.materials[0].node_tree.nodes["Image Texture"].image
    assert tuple(image.size) == (256, 256) and image.packed_file is not None
    assert 100 < len(obj.data.polygons) <= 3000
    np.testing.assert_allclose(obj.matrix_world.translation, CENTRE, atol=1e-6)

    # The same mesh as the backend's GLB (saved in the jobs folder), through Blender's importer.
    glbs = list(ext("preferences").jobs_folder().glob("*.glb"))
    assert len(glbs) == 1
    bpy.ops.import_scene.gltf(filepath=str(glbs[0]))
    imported = bpy.context.selected_objects[0]
    assert len(imported.data.polygons) == len(obj.data.polygons)
    ours = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    theirs = np.array([v.co for v in imported.data.vertices])  # backend frame, no transform
    frame = ext("core.frame").SceneFrame.from_list(scene.blend123.last_orbit_frame)
    np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(frame.points_to_scene(theirs), axis=0), atol=1e-4)

    # Make mesh again reuses the finished orbit instead of generating a new one.
    orbits = [c for c in bpy.data.collections if c.name.startswith("orbit ")]
    assert bpy.ops.blend123.mesh() == {"FINISHED"}
    assert [c for c in bpy.data.collections if c.name.startswith("orbit ")] == orbits


def test_apply_light_disabled_without_a_fitted_light(connected, scene):
    assert not bpy.ops.blend123.apply_light.poll()
    obj = bpy.data.objects.new("lit", bpy.data.meshes.new("lit"))
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    assert not bpy.ops.blend123.apply_light.poll()
    obj["blend123_light_json"] = '{"ambient": [0.2, 0.2, 0.2], "lobes": [{"axis": [0, 0, 1], "sharpness": 8, "amplitude": [3, 3, 3]}]}'
    obj["blend123_frame"] = [0, 0, 0, -90, 0, 2, 33.8]
    assert bpy.ops.blend123.apply_light() == {"FINISHED"}
    env = next(n for n in scene.world.node_tree.nodes if n.type == "TEX_ENVIRONMENT")
    px = np.empty(len(env.image.pixels), np.float32)
    env.image.pixels.foreach_get(px)
    px = px.reshape(env.image.size[1], env.image.size[0], 4)
    assert px[-1, :, 0].mean() > 2.5 > px[0, :, 0].mean()  # bright at the top (+Z), last row in Blender


def test_errors_say_what_to_do(connected, scene):
    scene.blend123.reference_image = None
    with pytest.raises(RuntimeError, match="no reference image is set - pick the reference image"):
        bpy.ops.blend123.orbit()
    assert "pick the reference image" in connected.tracker.last_hint
    scene.blend123.reference_image = bpy.data.images["reference"]
    scene.blend123.orbit_elevations = "1, 2"
    with pytest.raises(RuntimeError, match="one per view"):
        bpy.ops.blend123.orbit()


def test_paint_unseen_with_a_model_that_cannot_says_so(connected, scene):
    _place_reference(scene)
    scene.blend123.sds_model = "default"  # the quick proxy cannot score views
    with pytest.raises(RuntimeError, match="not a Zero123-class model"):
        bpy.ops.blend123.mesh()
    assert "zero123-xl" in connected.tracker.last_hint
    assert not [o for o in bpy.data.objects if o.name.endswith(" mesh")]
    assert scene.blend123.last_orbit_job  # the orbit is kept: clear the setting and mesh again
    scene.blend123.sds_model = ""


def test_timer_tick_applies_results_without_blocking(connected, scene):
    """The UI path: submit, then the timer callback drains events a few at a time."""
    import time

    connection = ext("connection")
    _place_reference(scene)
    info = ext("operators").submit_orbit(bpy.context, scene)
    started, ticks = time.monotonic(), 0
    while connected.tracker.busy and time.monotonic() - started < 60:
        t0 = time.perf_counter()
        interval = connection.tick()
        assert time.perf_counter() - t0 < 1.0  # each tick is short
        ticks += 1
        time.sleep(0.02)
    assert not connected.tracker.busy and ticks > 1
    assert connection.tick() is None  # idle: the timer stops itself
    coll = bpy.data.collections[scene.blend123.last_orbit_collection]
    assert scene.blend123.last_orbit_job == info.job_id
    assert len([o for o in coll.objects if o.type == "CAMERA"]) == 21


def test_live_preview_keeps_only_the_newest_view(connected, scene):
    connection = ext("connection")
    cam = _place_reference(scene)
    scene.blend123.live_preview = True
    s = connected
    assert not connection.check_live_preview(s, now=100.0)  # first sight: wait for it to rest
    assert connection.check_live_preview(s, now=101.0)
    first = s.tracker.live_job
    cam.location.x += 0.3  # the camera moves and rests again: a new request
    bpy.context.view_layer.update()
    assert not connection.check_live_preview(s, now=102.0)
    assert connection.check_live_preview(s, now=103.0)
    assert s.tracker.live_job != first and s.tracker.is_stale(first)
    import time

    started = time.monotonic()
    scene.blend123.live_preview = False
    while s.tracker.busy and time.monotonic() - started < 30:
        connection.tick()
        time.sleep(0.02)
    live = bpy.data.collections["live preview"]
    planes = [o for o in live.objects if o.parent == cam]
    assert len(planes) == 1  # one plane per camera, from the newest request
    assert not s.tracker.busy
