"""Render the example reference images with real Blender (the ``bpy`` module).

    python examples/make_examples.py            # writes examples/duck.png and examples/mug.png
    python examples/make_examples.py --samples 64

Each subject is built from primitives, framed to about 80 % of the image and rendered with
Cycles on the CPU from the project's front camera (on -Y looking toward +Y, 33.8 deg field
of view, 2 units away, a little above), on a transparent background. Both are deliberately
asymmetric (beak and handle on the viewer's right) so a wrong side in a novel view shows.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

from blend123.protocol.camera import DEFAULT_FOV_DEG, DEFAULT_RADIUS, REFERENCE_AZIMUTH_DEG, SphericalPose

HERE = Path(__file__).resolve().parent
SIZE = 512
ELEVATION_DEG = 8.0
#: Largest side of the subject as a share of the visible width at the subject centre.
FILL = 0.8


def reset_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def material(name: str, rgb: tuple[float, float, float], roughness: float = 0.45) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def add(kind: str, mat: bpy.types.Material, location, scale=(1.0, 1.0, 1.0), rotation=(0.0, 0.0, 0.0), **kwargs):
    getattr(bpy.ops.mesh, f"primitive_{kind}_add")(location=location, rotation=rotation, **kwargs)
    obj = bpy.context.active_object
    obj.scale = scale
    obj.data.materials.append(mat)
    if kind in ("uv_sphere", "cone", "torus", "cylinder"):
        bpy.ops.object.shade_smooth()
    return obj


def build_duck() -> None:
    """A yellow toy duck facing the viewer's right (+X): beak, eyes, wing, tail."""
    yellow = material("duck_yellow", (1.0, 0.72, 0.04))
    orange = material("duck_beak", (1.0, 0.25, 0.01), roughness=0.35)
    black = material("duck_eye", (0.01, 0.01, 0.01), roughness=0.15)
    wing = material("duck_wing", (0.9, 0.55, 0.02))
    add("uv_sphere", yellow, (-0.05, 0.0, -0.12), scale=(0.36, 0.27, 0.22), segments=48, ring_count=24)
    add("uv_sphere", yellow, (0.2, 0.0, 0.2), scale=(0.17, 0.16, 0.17), segments=48, ring_count=24)
    add("cone", orange, (0.42, 0.0, 0.17), scale=(0.09, 0.06, 0.1), rotation=(0.0, math.pi / 2, 0.0),
        radius1=1.0, radius2=0.25, depth=1.1, vertices=32)
    for y in (-0.12, 0.12):
        add("uv_sphere", black, (0.28, y, 0.27), scale=(0.028, 0.028, 0.032), segments=16, ring_count=8)
    add("uv_sphere", wing, (-0.1, -0.2, -0.07), scale=(0.19, 0.08, 0.11), rotation=(0.0, -0.35, 0.0),
        segments=32, ring_count=16)
    add("cone", yellow, (-0.42, 0.0, 0.0), scale=(0.1, 0.12, 0.12), rotation=(0.0, -math.radians(60), 0.0),
        radius1=1.0, radius2=0.0, depth=1.4, vertices=32)


def build_mug() -> None:
    """A blue mug with its handle on the viewer's right (+X) and a white band."""
    import bmesh  # a bpy submodule in the bpy wheel: importable only after bpy

    blue = material("mug_blue", (0.03, 0.18, 0.6), roughness=0.25)
    white = material("mug_band", (0.75, 0.75, 0.72), roughness=0.3)
    body = add("cylinder", blue, (0.0, 0.0, 0.0), radius=0.28, depth=0.62, vertices=64)
    bm = bmesh.new()  # open the top: delete the upper cap
    bm.from_mesh(body.data)
    bmesh.ops.delete(bm, geom=[f for f in bm.faces if f.normal.z > 0.9], context="FACES_ONLY")
    bm.to_mesh(body.data)
    bm.free()
    body.modifiers.new("wall", "SOLIDIFY").thickness = 0.025
    add("cylinder", white, (0.0, 0.0, 0.05), radius=0.283, depth=0.12, vertices=64)
    add("torus", blue, (0.29, 0.0, 0.02), rotation=(math.pi / 2, 0.0, 0.0), scale=(1.0, 1.2, 1.0),
        major_radius=0.16, minor_radius=0.04, major_segments=48, minor_segments=16)


def frame_subject(scene: bpy.types.Scene) -> None:
    """Move the subject's bounding-box centre to the origin and scale its larger
    front-facing side (X or Z) to FILL of the visible width there."""
    meshes = [o for o in scene.objects if o.type == "MESH"]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = [o.evaluated_get(depsgraph) for o in meshes]
    corners = np.array([o.matrix_world @ Vector(c) for o in evaluated for c in o.bound_box])
    lo, hi = corners.min(0), corners.max(0)
    visible = 2.0 * DEFAULT_RADIUS * math.tan(math.radians(DEFAULT_FOV_DEG) / 2)
    scale = FILL * visible / max(hi[0] - lo[0], hi[2] - lo[2])
    root = bpy.data.objects.new("subject", None)
    scene.collection.objects.link(root)
    for o in meshes:
        o.parent = root
    root.matrix_world = Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(-Vector((lo + hi) / 2))


def add_camera_and_light(scene: bpy.types.Scene) -> None:
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.angle = math.radians(DEFAULT_FOV_DEG)
    pose = SphericalPose(ELEVATION_DEG, REFERENCE_AZIMUTH_DEG, DEFAULT_RADIUS)
    cam.matrix_world = Matrix(pose.to_c2w().tolist())
    scene.collection.objects.link(cam)
    scene.camera = cam
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), math.radians(-25), math.radians(-35))  # from upper left front
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.6, 0.62, 0.7, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
    scene.world = world


def render(scene: bpy.types.Scene, path: Path, samples: int) -> None:
    import addon_utils

    addon_utils.enable("cycles", default_set=True)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True  # clean edges and flat colours also keep the PNG small
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.compression = 100
    scene.view_settings.view_transform = "Standard"  # plain sRGB: colours as designed
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


SUBJECTS = {"duck": build_duck, "mug": build_mug}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs")
    parser.add_argument("names", nargs="*", default=list(SUBJECTS), help=f"subjects: {', '.join(SUBJECTS)}")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        start = time.perf_counter()
        scene = reset_scene()
        SUBJECTS[name]()
        frame_subject(scene)
        add_camera_and_light(scene)
        path = args.out / f"{name}.png"
        render(scene, path, args.samples)
        print(f"{path.name}: {path.stat().st_size // 1024} KB in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
