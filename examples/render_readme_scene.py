"""Render the README picture: a scene made by the extension, rendered with Cycles on the CPU.

Starts a local ``blend123 serve`` (built-in default model), enables the extension from an
assembled extension repository in real Blender (the ``bpy`` module), generates an orbit
of ``examples/duck.png`` and reconstructs the mesh, then renders the orbit's image planes
around the mesh from above.

    .venv/bin/python examples/render_readme_scene.py [-o docs/images/readme_scene.png] [--samples 32] [--blend FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "readme_scene.png")
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "duck.png")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"))
    parser.add_argument("--blend", type=Path, help="also save the scene here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="blend123-readme-"))
    address = f"tcp://127.0.0.1:{free_port()}"
    log = work / "serve.log"  # a file, not a pipe: a pipe nobody reads would block the server
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "blend123.backend.cli", "serve", "--bind", address, "--jobs-dir", str(work / "jobs")],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "serving on" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the backend did not start: {log.read_text()}")
            time.sleep(0.2)
        return build_and_render(args, address, work)
    finally:
        server.terminate()
        server.wait(10)


def build_and_render(args: argparse.Namespace, address: str, work: Path) -> int:
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(work / "blender-user"))
    import bpy  # noqa: first, so Blender's own modules are importable
    import addon_utils
    from mathutils import Vector

    sys.path.insert(0, str(REPO / "packaging"))
    from assemble_extension import assemble

    repo_dir = assemble(work / "repo").parent
    bpy.context.preferences.extensions.repos.new(name="readme", module="blend123_readme", custom_directory=str(repo_dir), source="USER")
    module = "bl_ext.blend123_readme.blend123"
    addon_utils.enable(module, default_set=True)
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.address = address
    prefs.jobs_folder = str(work / "out")

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 512  # square: planes fill their frames
    settings = scene.blend123
    settings.reference_source = "FILE"
    settings.reference_file = str(args.image.resolve())
    settings.resolution = 256
    settings.texture_size = 1024
    settings.max_faces = 20_000
    settings.orbit_elevations = "10"
    settings.plane_distance = 0.45
    settings.reference_distance = 2.0

    started = time.perf_counter()
    for op in (bpy.ops.blend123.orbit, bpy.ops.blend123.mesh):
        if op() != {"FINISHED"}:
            raise SystemExit(f"{op.idname_py()} failed")
    print(f"orbit and mesh in {time.perf_counter() - started:.1f} s")

    # The overview camera and lighting, just for the picture.
    cam = bpy.data.objects.new("Overview", bpy.data.cameras.new("Overview"))
    cam.data.lens = 40
    scene.collection.objects.link(cam)
    cam.location = Vector((2.6, -3.4, 2.6))
    cam.rotation_euler = (Vector((0, 0, 0.05)) - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 2.0
    sun.rotation_euler = (math.radians(40), 0, math.radians(30))
    scene.collection.objects.link(sun)
    floor_mesh = bpy.data.meshes.new("Floor")
    floor_mesh.from_pydata([(-6, -6, -0.45), (6, -6, -0.45), (6, 6, -0.45), (-6, 6, -0.45)], [], [(0, 1, 2, 3)])
    floor_mat = bpy.data.materials.new("Floor")
    if floor_mat.node_tree is None:
        floor_mat.use_nodes = True
    floor_mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.45, 0.47, 0.5, 1.0)
    floor_mesh.materials.append(floor_mat)
    floor = bpy.data.objects.new("Floor", floor_mesh)
    scene.collection.objects.link(floor)
    world = bpy.data.worlds.new("World")
    scene.world = world
    if world.node_tree is None:
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.38, 0.42, 1.0)

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = args.size
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(args.output.resolve())
    started = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    print(f"rendered {args.output} in {time.perf_counter() - started:.1f} s")
    if args.blend:
        bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
