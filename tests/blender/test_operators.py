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


def _viewer(scene, lens=35.0, offset=(2.5, 0.5, 1.0), name="Viewer"):
    from mathutils import Matrix

    frame = ext("core.frame")
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.matrix_world = Matrix(frame.look_at_matrix(np.array(CENTRE) + np.array(offset), np.array(CENTRE)).tolist())
    cam.data.lens = lens
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def _watertight_pieces(mesh) -> int:
    """Connected pieces of ``mesh``; fails if any edge is open or non-manifold."""
    import bmesh

    bm = bmesh.new()
    bm.from_mesh(mesh)
    try:
        assert all(e.is_manifold for e in bm.edges), "open or non-manifold edges"
        seen, pieces = set(), 0
        for start in bm.verts:
            if start.index in seen:
                continue
            pieces += 1
            seen.add(start.index)
            todo = [start]
            while todo:
                for e in todo.pop().link_edges:
                    for v in e.verts:
                        if v.index not in seen:
                            seen.add(v.index)
                            todo.append(v)
        return pieces
    finally:
        bm.free()


def _orphans():
    return {kind: sorted(i.name for i in getattr(bpy.data, kind) if i.users == 0) for kind in ("meshes", "materials", "images", "objects")}


def test_preview_plane_at_the_subject_depth_replaced_not_stacked(connected, scene):
    _place_reference(scene)
    cam = _viewer(scene)
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    planes = [o for o in bpy.data.objects if o.parent == cam]
    assert len(planes) == 1
    plane = planes[0]
    uv = _plane_corners_in_view(scene, cam, plane)
    np.testing.assert_allclose(uv, [[0, 0], [1, 0], [1, 1], [0, 1]], atol=1e-4)
    # At the subject's depth: the plane passes through the subject centre's depth.
    forward = cam.matrix_world.to_3x3() @ Vector((0, 0, -1))
    depth = (CENTRE - cam.matrix_world.translation).dot(forward)
    plane_depth = (plane.matrix_world @ plane.data.vertices[0].co - cam.matrix_world.translation).dot(forward)
    assert plane_depth == pytest.approx(depth, rel=1e-4)
    assert plane.users_collection[0].name == "previews"
    assert plane.users_collection[0] in list(bpy.data.collections["blend123"].children)
    image = plane.data.materials[0].node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None and max(image.size) == 128
    # The image's alpha reaches the material: transparency is mixed by it.
    mix = plane.data.materials[0].node_tree.nodes["Mix Shader"]
    assert mix.inputs["Fac"].links[0].from_socket.name == "Alpha"

    # A landscape render: the next preview replaces the plane (and its data) and covers the frame.
    scene.render.resolution_x, scene.render.resolution_y = 320, 180
    orphans = _orphans()
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    planes = [o for o in bpy.data.objects if o.parent == cam]
    assert len(planes) == 1 and len([o for o in bpy.data.collections["previews"].objects]) == 1
    assert _orphans() == orphans  # the old plane's mesh, material and image went with it
    uv = _plane_corners_in_view(scene, cam, planes[0])
    np.testing.assert_allclose(uv[:, 0], [0, 1, 1, 0], atol=1e-4)
    assert uv[0, 1] <= 1e-4 and uv[2, 1] >= 1 - 1e-4  # covers top and bottom

    # Undo takes a replacement back: the plane it replaced returns.
    first = planes[0].name
    bpy.ops.ed.undo_push(message="before preview")
    assert bpy.ops.blend123.preview("EXEC_DEFAULT", True) == {"FINISHED"}
    bpy.ops.ed.undo()
    scene, cam = bpy.context.scene, bpy.data.objects["Viewer"]  # undo rebuilt both
    assert [o.name for o in bpy.data.objects if o.parent == cam] == [first]

    # Another camera gets its own plane; the first one's stays.
    other = _viewer(scene, lens=85.0, offset=(-2.0, -1.0, 0.5), name="Other")
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    assert len([o for o in bpy.data.objects if o.parent == other]) == 1
    assert len([o for o in bpy.data.objects if o.parent == cam]) == 1


def test_preview_sends_the_asking_cameras_own_lens(connected, scene, monkeypatch):
    """The request carries the active camera's intrinsics, not the reference camera's FOV."""
    ref = _place_reference(scene)
    ref.data.lens = 59.24
    cam = _viewer(scene, lens=35.0)
    cam.data.sensor_fit, cam.data.sensor_width, cam.data.sensor_height = "VERTICAL", 30.0, 20.0
    cam.data.shift_x, cam.data.shift_y = 0.1, -0.05
    scene.render.resolution_x, scene.render.resolution_y, scene.render.pixel_aspect_x = 400, 200, 1.5
    sent = []
    session = connected
    original = session.submit
    monkeypatch.setattr(session, "submit", lambda request, purpose, **ctx: sent.append(request) or original(request, purpose, **ctx))
    assert bpy.ops.blend123.preview() == {"FINISHED"}
    settings = sent[0].settings
    camera = ext("protocol.camera")
    expected = camera.CameraIntrinsics.from_blender(35.0, 30.0, 20.0, "VERTICAL", 0.1, -0.05, 600, 200)
    import dataclasses

    np.testing.assert_allclose(dataclasses.astuple(settings.camera), dataclasses.astuple(expected), rtol=1e-6)  # Blender stores float32
    assert (settings.camera.width, settings.camera.height) == (600, 200)  # pixel aspect widens the frame
    assert settings.reference_fov_deg == pytest.approx(math.degrees(2 * math.atan(18 / 59.24)), rel=1e-6)
    assert settings.steps is None and settings.guidance is None  # unset: the model's own defaults


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
    obj_name = obj.name
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
    # glTF splits vertices at UV seams; ours are welded: the same positions, each once.
    ours = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    theirs = np.unique(np.array([v.co for v in imported.data.vertices]), axis=0)  # backend frame, no transform
    assert len(imported.data.vertices) > len(ours) == len(theirs)
    frame = ext("core.frame").SceneFrame.from_list(scene.blend123.last_orbit_frame)
    np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(frame.points_to_scene(theirs), axis=0), atol=1e-4)
    # One connected, watertight piece: every edge has two faces; seams live in the UV map only.
    assert _watertight_pieces(obj.data) == 1
    assert obj["blend123_job"] and obj.users_collection[0]["blend123_job"] == obj["blend123_job"]

    # Make mesh again reuses the finished orbit instead of generating a new one.
    orbits = [c.name for c in bpy.data.collections if c.name.startswith("orbit ")]
    bpy.ops.ed.undo_push(message="before the second mesh")
    assert bpy.ops.blend123.mesh("EXEC_DEFAULT", True) == {"FINISHED"}
    assert [c.name for c in bpy.data.collections if c.name.startswith("orbit ")] == orbits
    assert len([o for o in bpy.data.objects if o.name.endswith(" mesh")]) == 2
    bpy.ops.ed.undo()  # takes the second mesh (and its collection) away again
    assert [o.name for o in bpy.data.objects if o.name.endswith(" mesh")] == [obj_name]


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

    timer = ext("timer")
    _place_reference(scene)
    info = ext("submit").submit_orbit(bpy.context, scene)
    started, ticks = time.monotonic(), 0
    while connected.tracker.busy and time.monotonic() - started < 60:
        t0 = time.perf_counter()
        timer.tick()
        assert time.perf_counter() - t0 < 1.0  # each tick is short
        ticks += 1
        time.sleep(0.02)
    assert not connected.tracker.busy and ticks > 1
    assert timer.tick() == timer.TICK_S  # idle but connected: it keeps watching the backend
    coll = bpy.data.collections[scene.blend123.last_orbit_collection]
    assert scene.blend123.last_orbit_job == info.job_id
    assert len([o for o in coll.objects if o.type == "CAMERA"]) == 21
    connected.disconnect()
    assert timer.tick() is None  # nothing to watch: the timer stops itself


def test_make_mesh_shares_its_bar_as_the_backend_measures_now(connected, scene):
    """The quick proxy orbit's share of Make Mesh follows the CPUs other programs leave the
    backend (Blender may have started rendering since the session connected): Make Mesh
    asks the backend's hello again; a plain orbit does not."""
    _place_reference(scene)
    hello, asked = connected.client.hello, []

    def busy_hello(name):
        reply = hello(name)
        asked.append(reply.proxy_orbit_share)
        reply.proxy_orbit_share = 0.05  # as a backend beside busy processes might measure
        return reply

    connected.client.hello = busy_hello
    try:
        submit = ext("submit")
        plain = submit.submit_orbit(bpy.context, scene)
        assert asked == [] and plain.chain is None
        info = submit.submit_orbit(bpy.context, scene, then_mesh=True)
        assert len(asked) == 1 and 0.02 <= asked[0] <= 0.5  # the backend's own measure, asked now
        assert info.chain.shares[0] == pytest.approx(0.05)
    finally:
        connected.client.hello = hello
        connected.cancel_all()


def _live_view(job_id, rgba, seq=1):
    messages = ext("protocol.messages")
    return messages.View(job_id, 0, 1, 10.0, 0.0, 2.0, np.eye(4), 0.6, rgba, seq=seq)


def test_live_preview_replaces_the_cameras_background_image(connected, scene):
    live_preview, timer = ext("live_preview"), ext("timer")
    cam = _place_reference(scene)
    scene.blend123.live_preview = True
    s = connected
    assert not live_preview.check(s, now=100.0)  # first sight: wait for it to rest
    assert live_preview.check(s, now=101.0)
    first = s.tracker.live_job
    cam.location.x += 0.3  # the camera moves and rests again: a new request
    bpy.context.view_layer.update()
    assert not live_preview.check(s, now=102.0)
    assert live_preview.check(s, now=103.0)
    assert s.tracker.live_job != first and s.tracker.is_stale(first)
    import time

    objects = len(bpy.data.objects)
    started = time.monotonic()
    scene.blend123.live_preview = False
    while s.tracker.busy and time.monotonic() - started < 30:
        timer.tick()
        time.sleep(0.02)
    assert not s.tracker.busy
    assert len(bpy.data.objects) == objects  # nothing added to the scene
    backgrounds = [bg for bg in cam.data.background_images if bg.image is not None]
    assert len(backgrounds) == 1 and cam.data.show_background_images
    image = backgrounds[0].image
    assert image.get("blend123_live_of") == cam.name and image.packed_file is not None and max(image.size) == 128


def test_twenty_live_updates_leave_no_orphans(connected, scene):
    """Each live view rewrites the camera's one background image in place."""
    jobs, dispatch = ext("core.jobs"), ext("dispatch")
    cam = _place_reference(scene)
    before = _orphans()
    counts = (len(bpy.data.images), len(bpy.data.materials), len(bpy.data.meshes), len(bpy.data.objects))
    for n in range(20):
        info = connected.tracker.add(f"{n:032x}", jobs.LIVE, scene=scene.name, camera=cam.name)
        size = (96, 128) if n % 2 else (128, 128)  # the camera's aspect may change between updates
        rgba = np.zeros(size + (4,), np.uint8)
        rgba[..., 0], rgba[..., 3] = 10 * n, 255
        dispatch.handle(connected, _live_view(info.job_id, rgba))
        connected.tracker.forget(info.job_id)
    assert _orphans() == before
    assert (len(bpy.data.images), len(bpy.data.materials), len(bpy.data.meshes), len(bpy.data.objects)) == (counts[0] + 1, *counts[1:])
    image = cam.data.background_images[0].image
    assert tuple(image.size) == (128, 96)
    px = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(px)
    assert px[0] * 255 == pytest.approx(190, abs=0.6)  # the 20th update's pixels
    assert len(cam.data.background_images) == 1
