"""Blender-native placement: the front camera, the fitted light's World, the view transform.

Undo is exercised for real: ``bpy.ops.ed.undo`` works in the ``bpy`` module. An operator
called from Python pushes its undo step only when called with ``undo=True`` (what a button
or menu does for an operator with the UNDO flag), so the tests call them that way.
"""

from __future__ import annotations

import pytest

from .conftest import ADDON_MODULE, ext

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

LIGHT = '{"ambient": [0.2, 0.2, 0.2], "lobes": [{"axis": [0, 0, 1], "sharpness": 8, "amplitude": [3, 3, 3]}]}'


def _front_cameras():
    return [o for o in bpy.data.objects if o.get("blend123_front_camera")]


def test_make_front_camera_is_active_and_reused(scene):
    other = bpy.data.objects.new("Artist cam", bpy.data.cameras.new("Artist cam"))
    scene.collection.objects.link(other)
    scene.camera = other
    scene.cursor.location = (1.0, 2.0, 0.5)
    bpy.ops.ed.undo_push(message="before")
    assert bpy.ops.blend123.make_reference_camera("EXEC_DEFAULT", True) == {"FINISHED"}
    (cam,) = _front_cameras()
    assert scene.camera == cam and scene.blend123.reference_camera == cam
    # On -Y of the subject centre, looking at it.
    offset = cam.matrix_world.translation - Vector((1.0, 2.0, 0.5))
    assert offset.length == pytest.approx(scene.blend123.reference_distance) and offset.y < 0 and abs(offset.x) < 1e-6

    # Moved away and pressed again: the same camera comes back to the front view.
    cam.location.x += 3
    scene.camera = other
    assert bpy.ops.blend123.make_reference_camera("EXEC_DEFAULT", True) == {"FINISHED"}
    assert _front_cameras() == [cam] and scene.camera == cam
    assert abs((cam.matrix_world.translation - Vector((1.0, 2.0, 0.5))).x) < 1e-6
    assert len(bpy.data.cameras) == 2

    bpy.ops.ed.undo()  # the second press
    bpy.ops.ed.undo()  # the first press: no front camera, the artist's camera active again
    scene = bpy.context.scene
    assert not _front_cameras() and scene.camera.name == "Artist cam"
    assert scene.blend123.reference_camera is None


def _lit_object(scene, job_id="0123456789abcdef0123456789abcdef"):
    obj = bpy.data.objects.new("lit", bpy.data.meshes.new("lit"))
    scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj["blend123_light_json"] = LIGHT
    obj["blend123_frame"] = [0, 0, 0, -90, 0, 2, 33.8]
    obj["blend123_job"] = job_id
    return obj


def test_apply_light_makes_a_world_of_its_own_and_undo_restores_the_artists(scene):
    import numpy as np

    artist = bpy.data.worlds.new("Artist world")
    if artist.node_tree is None:  # Blender < 5.0 makes worlds without nodes
        artist.use_nodes = True
    artist_nodes = sorted(n.bl_idname for n in artist.node_tree.nodes)
    scene.world = artist
    _lit_object(scene)
    bpy.ops.ed.undo_push(message="before light")
    assert bpy.ops.blend123.apply_light("EXEC_DEFAULT", True) == {"FINISHED"}
    world = scene.world
    assert world.name == "blend123 light 01234567" and world != artist
    assert sorted(n.bl_idname for n in artist.node_tree.nodes) == artist_nodes  # untouched
    # Camera rays see a plain background; lighting rays see the fitted environment.
    mix = next(n for n in world.node_tree.nodes if n.type == "MIX_SHADER")
    assert mix.inputs["Fac"].links[0].from_socket.name == "Is Camera Ray"
    assert mix.inputs[1].links[0].from_node.name == "Fitted light"
    env = next(n for n in world.node_tree.nodes if n.type == "TEX_ENVIRONMENT")
    px = np.empty(len(env.image.pixels), np.float32)
    env.image.pixels.foreach_get(px)
    px = px.reshape(env.image.size[1], env.image.size[0], 4)
    assert px[-1, :, 0].mean() > 2.5 > px[0, :, 0].mean()  # bright at the top (+Z), last row in Blender

    # Asked to be visible: the same job's World is rebuilt in place, not duplicated.
    assert bpy.ops.blend123.apply_light("EXEC_DEFAULT", True, visible_to_camera=True) == {"FINISHED"}
    assert scene.world == world and len([w for w in bpy.data.worlds if w.name.startswith("blend123 light")]) == 1
    out = next(n for n in world.node_tree.nodes if n.type == "OUTPUT_WORLD")
    assert out.inputs["Surface"].links[0].from_node.name == "Fitted light"
    assert len([i for i in bpy.data.images if i.name.startswith("blend123 light")]) == 1

    bpy.ops.ed.undo()
    bpy.ops.ed.undo()
    assert bpy.context.scene.world.name == "Artist world"


def test_view_transform_is_changed_only_when_the_preferences_say_so_and_told_once(scene):
    import numpy as np

    reports, results = ext("reports"), ext("results")
    messages = ext("protocol.messages")
    jobs, dispatch, session = ext("core.jobs"), ext("dispatch"), ext("session").session()
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    scene.view_settings.view_transform = "AgX"
    cam = bpy.data.objects.new("Viewer", bpy.data.cameras.new("Viewer"))
    cam.location = (0, -3, 0)
    cam.rotation_euler = (1.5708, 0, 0)
    scene.collection.objects.link(cam)
    session.told_view_transform.clear()

    def preview():
        info = session.tracker.add("a" * 32, jobs.PREVIEW, scene=scene.name, camera=cam.name)
        view = messages.View(info.job_id, 0, 1, 0.0, 0.0, 3.0, np.eye(4), 0.6, np.full((16, 16, 4), 200, np.uint8), seq=1)
        dispatch.handle(session, view)
        session.tracker.forget(info.job_id)

    reports.HISTORY.clear()
    preview()
    preview()
    told = [text for _, text in reports.HISTORY if "view transform" in text]
    assert scene.view_settings.view_transform == "AgX"  # the artist's choice stays
    assert len(told) == 1 and "Standard" in told[0] and "true colours" in told[0] and "preferences" in told[0]

    prefs.standard_view = True
    try:
        other = bpy.data.scenes.new("Other")
        other.view_settings.view_transform = "AgX"
        info = session.tracker.add("b" * 32, jobs.PREVIEW, scene=other.name, camera=cam.name)
        reports.HISTORY.clear()
        results.note_view_transform(other)
        assert other.view_settings.view_transform == "Standard"
        assert [t for _, t in reports.HISTORY if "switched the view transform" in t and "from AgX to Standard" in t]
        session.tracker.forget(info.job_id)
    finally:
        prefs.standard_view = False
