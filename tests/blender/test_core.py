"""The extension's bpy-free logic, tested without Blender (no bpy import here)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from blend123.protocol.camera import SphericalPose, camera_angle_x_from_lens

from ..conftest import blob_image


def _view(core, job_id: str):
    return core.protocol__messages.View(job_id, 0, 1, 0.0, 0.0, 2.0, np.eye(4, dtype=np.float32), 0.6, np.zeros((8, 8, 4), np.uint8), seq=1)


def test_core_imports_without_bpy(extension_dir):
    code = (
        "import importlib.util, sys\n"
        f"init = {str(extension_dir / 'blend123' / '__init__.py')!r}\n"
        "spec = importlib.util.spec_from_file_location('ext', init, submodule_search_locations=[init.rsplit('/', 1)[0]])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ext'] = m; spec.loader.exec_module(m)\n"
        "import ext.core.frame, ext.core.requests, ext.core.jobs, ext.core.batch, ext.core.glb, ext.core.light, ext.core.backend_process, ext.core.weld\n"
        "assert 'bpy' not in sys.modules, 'core pulled in bpy'\n"
        "assert 'blend123' not in sys.modules, 'core used the backend protocol package'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- scene frame ----------------------------------------------------------------------------------


def test_default_front_camera_gives_identity_frame(core):
    frame = core.core__frame.SceneFrame.from_reference((0, 0, 0), (0, -2, 0), 33.8)
    assert frame.radius == pytest.approx(2.0)
    np.testing.assert_allclose(frame.to_scene(), np.eye(4), atol=1e-12)
    pose = frame.pose_of((2, 0, 0))  # the viewer's right
    assert pose.azimuth == pytest.approx(90.0) and pose.elevation == pytest.approx(0.0)


def test_frame_maps_backend_reference_pose_onto_scene_reference_camera(core):
    f = core.core__frame
    centre = np.array([1.0, 2.0, 0.5])
    e, a, r = 15.0, 30.0, 3.0
    ref = centre + r * np.array([math.cos(math.radians(e)) * math.cos(math.radians(a)), math.cos(math.radians(e)) * math.sin(math.radians(a)), math.sin(math.radians(e))])
    frame = f.SceneFrame.from_reference(centre, ref, 40.0)
    assert frame.reference_elevation == pytest.approx(e)
    backend_ref = SphericalPose(e, -90.0, r).to_c2w()
    scene_c2w = frame.c2w_to_scene(backend_ref)
    np.testing.assert_allclose(scene_c2w[:3, 3], ref, atol=1e-9)
    # A camera 90 deg to the reference's right (seen from it) is requested at azimuth +90.
    right = centre + (ref - centre) @ f.rotation_z(90.0)[:3, :3].T
    assert frame.pose_of(right).azimuth == pytest.approx(90.0)
    # Points: the backend origin is the scene's subject centre.
    np.testing.assert_allclose(frame.points_to_scene([[0, 0, 0]])[0], centre)
    assert f.SceneFrame.from_list(frame.as_list()) == frame


def test_reference_camera_above_the_subject_is_refused(core):
    with pytest.raises(ValueError, match="tilt"):
        core.core__frame.SceneFrame.from_reference((0, 0, 0), (0, 0, 3), 40.0)


def test_frame_sizes_follow_blender_sensor_fit(core):
    f = core.core__frame
    landscape = f.CameraOptics(lens_mm=50, sensor_width_mm=36, res_x=1920, res_y=1080)
    assert landscape.frame_size(2.0) == pytest.approx((2 * 36 / 50, 2 * 36 / 50 * 1080 / 1920))
    assert math.radians(landscape.horizontal_fov_deg()) == pytest.approx(camera_angle_x_from_lens(50, 36))
    portrait = f.CameraOptics(lens_mm=50, sensor_width_mm=36, res_x=1080, res_y=1920)
    w, h = portrait.frame_size(1.0)
    assert h == pytest.approx(36 / 50) and w == pytest.approx(36 / 50 * 1080 / 1920)
    vertical = f.CameraOptics(lens_mm=50, sensor_height_mm=24, sensor_fit="VERTICAL", res_x=1920, res_y=1080)
    assert vertical.frame_size(1.0)[1] == pytest.approx(24 / 50)
    shifted = f.CameraOptics(lens_mm=50, res_x=100, res_y=100, shift_x=0.25)
    assert shifted.frame_offset(1.0)[0] == pytest.approx(0.25 * 36 / 50)


def test_image_plane_covers_frame_without_distortion(core):
    f = core.core__frame
    square = f.image_plane(f.CameraOptics(res_x=512, res_y=512), 1.0, 1.0)
    assert square.width == pytest.approx(36 / 50) == pytest.approx(square.height)
    wide = f.image_plane(f.CameraOptics(res_x=1920, res_y=1080), 1.0, 1.0)
    assert wide.width == pytest.approx(36 / 50) and wide.height == pytest.approx(wide.width)  # overflows vertically
    assert f.plane_distance(4.0, 0.25, 0.1) == pytest.approx(1.0)
    assert f.plane_distance(4.0, 0.01, 0.1) == pytest.approx(0.105)  # never inside the clip range


# --- requests ---------------------------------------------------------------------------------------


def test_requests_carry_the_scene_frame(core):
    r, f = core.core__requests, core.core__frame
    frame = f.SceneFrame.from_reference((0, 0, 0), (0, -3, 1), 40.0)
    options = r.JobOptions(model="default", resolution=128, steps=5, orbit_elevations="12")
    orbit = r.orbit_request(blob_image(), frame, options)
    assert orbit.elevations == [12.0] and orbit.settings.radius == pytest.approx(math.sqrt(10))
    assert orbit.settings.reference_elevation == pytest.approx(math.degrees(math.atan2(1, 3)))
    view = r.novel_view_request(blob_image(), frame, f.ScenePose(5.0, 45.0, 2.5), options)
    np.testing.assert_allclose(view.poses, [[5.0, 45.0, 2.5]])
    assert r.reconstruct_request("ab" * 16, r.JobOptions(texture_size=256, max_faces=3000)).texture_size == 256
    # Painting unseen surfaces names the model; the backend takes the orbit's own photo.
    sds = r.reconstruct_request("ab" * 16, r.JobOptions(sds_model="zero123-xl"))
    assert sds.sds_model == "zero123-xl" and sds.sds_image is None and sds.source_job == "ab" * 16
    with pytest.raises(r.SettingsError, match="no finished orbit"):
        r.reconstruct_request("", r.JobOptions(sds_model="zero123-xl"))


@pytest.mark.parametrize("text, message", [("ten", "not numbers"), ("1, 2", "got 2 values"), ("95", "within")])
def test_bad_orbit_elevations_say_what_to_write(core, text, message):
    with pytest.raises(core.core__requests.SettingsError, match=message) as info:
        core.core__requests.parse_elevations(text)
    assert info.value.hint


def test_out_of_range_settings_become_settings_errors(core):
    r, f = core.core__requests, core.core__frame
    frame = f.SceneFrame.from_reference((0, 0, 0), (0, -2, 0), 40.0)
    with pytest.raises(r.SettingsError, match="resolution"):
        r.orbit_request(blob_image(), frame, r.JobOptions(resolution=4))
    with pytest.raises(r.SettingsError, match="no finished orbit") as info:
        r.reconstruct_request("", r.JobOptions())
    assert "Generate orbit" in info.value.hint


# --- jobs and live preview ------------------------------------------------------------------------------


def test_live_preview_latest_request_wins(core):
    j, m = core.core__jobs, core.protocol__messages
    tracker = j.JobTracker()
    tracker.add("old", j.LIVE, camera="Camera")
    tracker.add("new", j.LIVE, camera="Camera")
    assert tracker.stale_live_jobs() == ["old"]
    assert tracker.route(_view(core, "old")).job is None  # stale result dropped
    assert tracker.route(_view(core, "new")).job.job_id == "new"
    tracker.route(m.Progress("new", "diffusion", 0.5, 3.0))
    label, fraction, eta = tracker.summary()
    assert fraction == 0.5 and "diffusion" in label and j.format_eta(eta) == "3 s left"
    assert tracker.route(m.Done("new", "done")).finished
    assert tracker.busy  # "old" runs on until cancelled
    for job_id in tracker.stale_live_jobs():
        tracker.forget(job_id)
    assert not tracker.busy


def test_make_mesh_shows_the_orbit_and_the_mesh_on_one_bar(core):
    j, m, jp = core.core__jobs, core.protocol__messages, core.protocol__job_progress
    tracker = j.JobTracker()
    chain = jp.ChainProgress.orbit_then_mesh("default")
    tracker.add("orbit", j.ORBIT, chain, 0)
    fractions = []
    for stage, overall in (("load model", 0.0), ("views", 0.5), ("views", 1.0)):
        tracker.route(m.Progress("orbit", stage, overall, 5.0, overall=overall))
        fractions.append(tracker.summary()[1])
    tracker.route(m.Done("orbit", "done"))
    tracker.add("mesh", j.MESH, chain, 1)
    for stage, overall in (("carve", 0.1), ("texture", 0.8), ("export", 1.0)):
        tracker.route(m.Progress("mesh", stage, 0.5, 2.0, overall=overall))
        fractions.append(tracker.summary()[1])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert fractions[2] == jp.orbit_share("default")  # the orbit fills only its share
    label, _, eta = tracker.summary()
    assert label == "mesh: export" and eta == 2.0  # the last job's own ETA


def test_job_error_is_kept_for_the_panel(core):
    j, m = core.core__jobs, core.protocol__messages
    tracker = j.JobTracker()
    tracker.add("a", j.ORBIT)
    routed = tracker.route(m.Error("job_failed", "no subject found", "use a picture with a clear subject", job_id="a"))
    assert routed.error == "no subject found" and tracker.last_hint.startswith("use a picture")
    assert not tracker.busy


def test_live_preview_debounces_camera_motion(core):
    live = core.core__jobs.LivePreview(debounce_s=0.3)
    assert not live.observe("pose1", 0.0)
    assert not live.observe("pose1", 0.2)  # still within the debounce
    assert live.observe("pose1", 0.4)
    assert not live.observe("pose1", 1.0)  # already requested
    assert not live.observe("pose2", 1.1)  # moving
    assert not live.observe("pose3", 1.2)
    assert live.observe("pose3", 1.6)


# --- batch bookkeeping -----------------------------------------------------------------------------------


def test_batch_plan_skips_done_and_keeps_names_apart(core, tmp_path):
    b = core.core__batch
    items = b.plan([tmp_path / "a" / "duck.png", tmp_path / "b" / "duck.png", tmp_path / "mug.jpg"], tmp_path / "out", blend=True)
    assert [i.glb.name for i in items] == ["duck.glb", "duck_2.glb", "mug.glb"]
    assert items[0].blend.name == "duck.blend"
    b.write_atomically(items[0].glb, b"glb")
    assert not items[0].done()  # the .blend is still missing
    b.write_atomically(items[0].blend, b"blend")
    assert items[0].done()
    assert not list((tmp_path / "out").glob(".*part"))
    summary = b.BatchSummary(converted=[items[0].image], failed=[(items[1].image, "broken")])
    assert summary.exit_code == 1 and "1 failed" in summary.text() and "broken" in summary.text()
    assert b.BatchSummary(converted=[items[0].image]).exit_code == 0


def test_batch_arguments(core):
    b = core.core__batch
    args = b.build_parser().parse_args(["convert", "a.png", "b.png", "-o", "out", "--blend", "--model", "m"])
    assert [str(p) for p in args.images] == ["a.png", "b.png"] and args.blend and args.model == "m"
    with pytest.raises(b.UsageError, match="-o"):
        b.build_parser().parse_args(["convert", "a.png"])


# --- GLB, light, local backend ------------------------------------------------------------------------


def test_glb_texture_bytes_are_found(core):
    from blend123.backend.reconstruction.export import export_glb

    tex = np.zeros((32, 32, 4), np.uint8)
    tex[..., 3] = 255
    glb = export_glb(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]), np.zeros((3, 2), np.float32), tex)
    images = core.core__glb.embedded_images(glb)
    assert len(images) == 1 and images[0][0] == "image/png"
    assert core.core__glb.png_size(images[0][1]) == (32, 32)
    assert core.core__glb.embedded_images(b"not a glb") == []


def test_sg_light_equirect_is_brightest_along_its_lobe(core):
    light = core.core__light.SGLight.from_json('{"ambient": [0.1, 0.1, 0.1], "lobes": [{"axis": [1, 0, 0], "sharpness": 20, "amplitude": [2, 1, 0.5]}]}')
    env = light.equirect(64, 32)
    row, col = np.unravel_index(np.argmax(env[..., 0]), env.shape[:2])
    assert col in (31, 32) and row in (15, 16)  # +X: the middle of Blender's lat-long map
    turned = light.rotated(core.core__frame.rotation_z(90.0))
    np.testing.assert_allclose(turned.axes[0], [0, 1, 0], atol=1e-12)
    with pytest.raises(core.core__light.LightFormatError):
        core.core__light.SGLight.from_json('{"lobes": [{"axis": [1, 0, 0]}]}')


def test_local_backend_command_start_and_stop(core, tmp_path):
    p = core.core__backend_process
    assert p.serve_command("tcp://127.0.0.1:1", "/py/bin/python")[:3] == ["/py/bin/python", "-m", "blend123.backend.cli"]
    local = p.LocalBackend()
    with pytest.raises(p.BackendStartError, match="exited at start"):
        local.start([sys.executable, "-c", "import sys; print('no torch here'); sys.exit(3)"], tmp_path / "fail.log")
    local.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "ok.log")
    proc = local.process
    assert local.running
    started = time.monotonic()
    local.stop()
    assert proc.poll() is not None and time.monotonic() - started < 5



# --- add-on structure and errors -----------------------------------------------------------------


def _addon_imports() -> dict[str, set[str]]:
    """Module -> the add-on modules it imports (relative imports, top level or in functions)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "blender_addon"
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(alias.name for alias in node.names)
        graph[path.stem] = {d for d in deps if (root / f"{d}.py").exists()}
    return graph


def test_addon_modules_import_each_other_without_circles():
    graph = _addon_imports()
    assert "connection" not in graph  # split into session, dispatch, results, live_preview, timer, submit
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == 1:
            raise AssertionError("import circle: " + " -> ".join(path + [module]))
        if state.get(module) == 2:
            return
        state[module] = 1
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        state[module] = 2

    for module in sorted(graph):
        visit(module, [])
    # Operators sit on top: nothing but registration depends on them.
    assert {m for m, deps in graph.items() if "operators" in deps} == {"registration"}
    assert "operators" not in graph["live_preview"] and "results" not in graph["session"]


def test_every_hinted_error_is_a_blend123_error(core):
    base = core.protocol__errors.Blend123Error
    for cls in (
        core.core__requests.SettingsError,
        core.core__backend_process.BackendStartError,
        core.core__batch.UsageError,
        core.core__light.LightFormatError,
    ):
        exc = cls("what went wrong", "what to do")
        assert isinstance(exc, base) and (exc.message, exc.hint) == ("what went wrong", "what to do")
    assert issubclass(core.core__requests.SettingsError, ValueError)  # callers that catch ValueError still do
    with pytest.raises(base, match="SG format"):
        core.core__light.SGLight.from_json("[]")


def test_batch_arguments_are_checked_against_the_protocols_bounds(core):
    batch, S = core.core__batch, core.protocol__settings
    args = batch.build_parser().parse_args(["convert", "a.png", "-o", "out"])
    assert (args.resolution, args.texture_size, args.max_faces, args.steps) == (
        S.RESOLUTION.default, S.TEXTURE_SIZE.default, S.MAX_FACES.default, S.STEPS.default
    )
    with pytest.raises(batch.UsageError, match=r"texture_size=8192 is out of range \[16, 4096\]"):
        batch.build_parser().parse_args(["convert", "a.png", "-o", "out", "--texture-size", "8192"])
    with pytest.raises(batch.UsageError, match="not a whole number"):
        batch.build_parser().parse_args(["convert", "a.png", "-o", "out", "--resolution", "12.5"])


# --- welding --------------------------------------------------------------------------------------


def _uv_split_cube():
    """A closed cube whose 6 faces each have their own 4 vertices (glTF-style UV seams)."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    vertices, faces, uvs = [], [], []
    for q, quad in enumerate(quads):
        base = len(vertices)
        vertices += [corners[i] for i in quad]
        uvs += [(q / 6, 0), ((q + 1) / 6, 0), ((q + 1) / 6, 1), (q / 6, 1)]
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return np.array(vertices, np.float32), np.array(faces, np.int32), np.array(uvs, np.float32)


def test_weld_merges_seam_copies_and_keeps_corner_uvs(core):
    vertices, faces, uvs = _uv_split_cube()
    welded = core.core__weld.weld(vertices, faces, uvs)
    assert len(vertices) == 24 and len(welded.vertices) == 8 and len(welded.faces) == 12
    # Same triangles in space, same UV at every corner.
    np.testing.assert_array_equal(welded.vertices[welded.faces], vertices[faces])
    np.testing.assert_array_equal(welded.corner_uvs.reshape(-1, 3, 2), uvs[faces])
    # Closed: each undirected edge is shared by exactly two triangles.
    edges = np.sort(welded.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts) == {2}


def test_weld_keeps_near_vertices_apart_and_drops_collapsed_faces(core):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1e-6, 0, 0], [0, 0, 0], [-0.0, 0, 0]], np.float32)
    faces = np.array([[0, 1, 2], [3, 1, 2], [0, 4, 1], [5, 1, 2]], np.int32)
    welded = core.core__weld.weld(vertices, faces)
    assert len(welded.vertices) == 4  # 0, 4 and -0.0 merge; 1e-6 away stays its own vertex
    np.testing.assert_array_equal(welded.kept_faces, [0, 1, 3])  # face 2 had two corners on one vertex
    assert welded.corner_uvs is None
