"""The extension in real Blender: enabled from an extension repository, registered, unregistered."""

from __future__ import annotations

import re
import tomllib

import pytest

from .conftest import ADDON_MODULE, ext

bpy = pytest.importorskip("bpy")


def test_manifest_is_valid_for_blender_4_2(extension_dir):
    manifest = tomllib.loads((extension_dir / "blend123" / "blender_manifest.toml").read_text())
    assert manifest["id"] == "blend123" and manifest["type"] == "add-on"
    assert tuple(int(x) for x in manifest["blender_version_min"].split(".")) >= (4, 2, 0)
    assert set(manifest["permissions"]) == {"network", "files"}
    for reason in manifest["permissions"].values():
        assert len(reason) <= 64 and not re.search(r"[.!?,;:]$", reason)
    assert len(manifest["tagline"]) <= 64 and not manifest["tagline"].endswith(".")


def test_extension_enabled_from_repository(addon, extension_dir):
    assert addon.__name__ == ADDON_MODULE
    assert addon.__file__.startswith(str(extension_dir))
    assert ext("protocol.messages").__file__.startswith(str(extension_dir))  # its own protocol copy
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    assert type(prefs).bl_idname == ADDON_MODULE
    assert prefs.address.startswith("tcp://127.0.0.1") and prefs.default_model == "default"
    assert hasattr(bpy.types, "BLEND123_PT_main") and hasattr(bpy.types, "BLEND123_OT_orbit")
    assert bpy.types.BLEND123_PT_main.bl_category == "blend123"
    # Defaults and bounds come from the protocol: what the panel allows, the backend accepts.
    S = ext("protocol.settings")
    props = type(bpy.context.scene.blend123).bl_rna.properties
    for prop, setting in (("resolution", S.RESOLUTION), ("texture_size", S.TEXTURE_SIZE), ("max_faces", S.MAX_FACES)):
        assert (props[prop].default, props[prop].hard_min, props[prop].hard_max) == (setting.default, setting.low, setting.high)
    assert props["steps"].hard_max == S.STEPS.high and props["guidance"].hard_max == S.GUIDANCE.high
    jobs = ext("preferences").jobs_folder()
    assert jobs.is_dir()
    assert ext("cli_command")._handle is not None  # `blender -b --command blend123 ...`


def test_unregister_and_register_again(addon):
    import addon_utils

    addon_utils.disable(ADDON_MODULE, default_set=True)
    try:
        assert not hasattr(bpy.types, "BLEND123_OT_orbit")
        assert not hasattr(bpy.types.Scene, "blend123")
        assert ADDON_MODULE not in bpy.context.preferences.addons
    finally:
        assert addon_utils.enable(ADDON_MODULE, default_set=True) is not None
    assert hasattr(bpy.types, "BLEND123_OT_orbit") and hasattr(bpy.types.Scene, "blend123")
    assert bpy.context.preferences.addons[ADDON_MODULE].preferences.address


class FakeLayout:
    """Records what a panel draws (Blender's UILayout only exists while drawing in the UI)."""

    def __init__(self, log=None):
        self.log = [] if log is None else log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, args, kwargs))
            return FakeLayout(self.log)

        return call

    def texts(self):
        return [kw.get("text", "") for name, _, kw in self.log if name in ("label", "progress")]


def _draw_panel(context):
    from types import SimpleNamespace

    layout = FakeLayout()
    ext("panel").BLEND123_PT_main.draw(SimpleNamespace(layout=layout), context)
    return layout


def test_not_connected_says_why_in_the_panel(scene):
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = "tcp://127.0.0.1:9"  # nothing listens there
    session = ext("session").session()
    ok = session.connect(bpy.context, wait_s=0.5)
    assert not ok and session.status.startswith("not connected") and "blend123 serve" in session.hint
    with pytest.raises(RuntimeError, match="not connected"):
        bpy.ops.blend123.orbit()
    assert session.tracker.last_error.startswith("not connected")
    texts = _draw_panel(bpy.context).texts()
    assert any(t.startswith("not connected: ") and "tcp://127.0.0.1:9" in t for t in texts)
    assert any("blend123 serve" in t for t in texts)


def test_panel_shows_server_and_progress(connected, scene):
    jobs = ext("core.jobs")
    texts = _draw_panel(bpy.context).texts()
    assert any(t.startswith("blend123 ") and " on cpu" in t.lower() for t in texts), texts
    assert any(t.startswith("Models: ") and "default" in t for t in texts)
    info = connected.tracker.add("f" * 32, jobs.ORBIT)
    info.stage, info.fraction, info.eta_s = "diffusion", 0.25, 12.0
    try:
        layout = _draw_panel(bpy.context)
        progress = [kw for name, _, kw in layout.log if name == "progress"]
        assert progress and progress[0]["factor"] == 0.25 and progress[0]["text"] == "orbit: diffusion 25%, 12 s left"
        assert any(name == "operator" and args == ("blend123.cancel",) for name, args, _ in layout.log)
    finally:
        connected.tracker.forget(info.job_id)


def test_start_a_local_backend_from_the_preferences(scene, tmp_path):
    """'Start a local backend' spawns `python -m blend123.backend.cli serve`; it stops with the session."""
    import sys

    from ..conftest import free_port

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = f"tcp://127.0.0.1:{free_port()}"
    prefs.start_local, prefs.python_executable = True, sys.executable
    connection = ext("session")
    session = connection.session()
    try:
        assert session.connect(bpy.context, wait_s=60), session.status
        proc = session.local.process
        assert proc.poll() is None and "serve" in proc.args and prefs.address in proc.args
        assert any(m.name == "default" and m.available for m in session.models())
    finally:
        prefs.start_local, prefs.python_executable = False, ""
        connection.drop_session()  # what unregister (and atexit at Blender exit) does
    assert proc.wait(10) is not None


def test_importing_100k_faces_and_a_2048_texture_keeps_every_face_pixel_and_uv(scene):
    """The fast import at full size (its speed: benchmarks/bench_blender_import.py)."""
    import numpy as np

    from benchmarks.bench_blender_import import make_mesh  # noqa: the benchmark's own mesh

    verts, faces, uvs, tex = make_mesh(100_000, 2048)
    from blend123.backend.reconstruction.export import export_glb

    glb = export_glb(verts, faces, uvs, tex)
    obj = ext("mesh_import").import_textured_mesh("fast", verts, faces, uvs, tex, scene.collection, glb)
    assert len(obj.data.polygons) == len(faces) >= 100_000 and len(obj.data.uv_layers) == 1
    image = obj.data.materials[0].node_tree.nodes["Image Texture"].image
    px = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(px)
    # Same pixels as sent (rows bottom-up in Blender).
    np.testing.assert_allclose(px.reshape(2048, 2048, 4)[::-1][::97, ::89] * 255, tex[::97, ::89], atol=0.51)
    uv = np.empty(len(obj.data.loops) * 2, np.float32)
    obj.data.uv_layers[0].uv.foreach_get("vector", uv)
    np.testing.assert_allclose(uv.reshape(-1, 2), uvs[faces.ravel()], atol=1e-6)


def test_preferences_connect_to_a_curve_protected_backend(scene, serve_process, tmp_path):
    """The remote-GPU set-up: `blend123 keys` for both ends, `serve` with CURVE, keys in the preferences."""
    import shutil
    import subprocess
    import sys

    def keys(role, folder):
        subprocess.run([sys.executable, "-m", "blend123.backend.cli", "keys", role, str(folder)], check=True, capture_output=True)

    keys("server", tmp_path / "server")
    keys("client", tmp_path / "client")
    (tmp_path / "allowed").mkdir()
    shutil.copy(tmp_path / "client" / "client.key", tmp_path / "allowed")
    backend = serve_process("--curve-secret", str(tmp_path / "server" / "server.key_secret"), "--curve-clients", str(tmp_path / "allowed"))

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = backend.address
    session = ext("session").session()
    try:
        prefs.client_secret_key, prefs.server_public_key = "", ""
        assert not session.connect(bpy.context, wait_s=1.0)  # no keys: the backend says nothing
        prefs.client_secret_key = str(tmp_path / "client" / "client.key_secret")
        assert not session.connect(bpy.context) and "both" in session.status + session.hint
        prefs.server_public_key = str(tmp_path / "server" / "server.key")
        assert session.connect(bpy.context), session.status
        assert any(m.name == "default" for m in session.models())
    finally:
        prefs.client_secret_key, prefs.server_public_key = "", ""
        session.disconnect()
