"""Render the evaluation set with Cycles on the CPU, one folder per object:

    <root>/<name>/input/transforms.json      21-view dynamic orbit (poses.dynamic_orbit)
    <root>/<name>/input/000.png ...          RGBA renders (straight alpha, sRGB)
    <root>/<name>/input/albedo_000.png ...   Cycles' diffuse-colour pass (sRGB, same alpha)
    <root>/<name>/heldout/...                the same for the held-out views
    <root>/<name>/gt_mesh.npz                vertices (world, Z up) and triangles, modifiers applied
    <root>/<name>/meta.json                  cache key, object, lighting, settings, timing

The passes come out of a compositor File Output node (the Render Result's pixels are not
readable in background mode). The view transform is "Standard", so a PNG value is the
plain sRGB encoding of linear radiance and the albedo pass is the albedo itself.

An object is skipped when its ``meta.json`` carries the current cache key (a hash of the
scene and pose sources, the settings and ``RENDER_VERSION``). Run directly (needs bpy):

    python -m benchmarks.quality.render [--objects all] [--root build/quality]

or call ``ensure_rendered`` from any process: it renders the missing objects in a
subprocess, keeping Blender out of the caller's process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.quality` importable
    sys.path.insert(0, str(REPO))

from benchmarks.quality import poses, scenes  # noqa: E402
from blend123.protocol.camera import DEFAULT_FOV_DEG  # noqa: E402

DEFAULT_ROOT = REPO / "build" / "quality"
#: Bump when the rendering itself changes (scene and pose sources are hashed anyway).
RENDER_VERSION = 1
SETS = ("input", "heldout")


@dataclass(frozen=True)
class RenderSettings:
    size: int = 256
    # 24 samples leave noise ~40 dB PSNR below the signal on the object (~47 dB over the
    # frame): far under the errors measured. OpenImageDenoise would cost ~1.5 s a view on
    # the CPU for little gain, so it is off by default (the albedo pass needs none).
    samples: int = 24
    denoise: bool = False
    threads: int = 2
    max_bounces: int = 4


def cache_key(name: str, settings: RenderSettings) -> str:
    digest = hashlib.sha256()
    for module in (scenes, poses):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(json.dumps([name, asdict(settings), RENDER_VERSION, DEFAULT_FOV_DEG]).encode())
    return digest.hexdigest()[:16]


def is_rendered(folder: Path, key: str) -> bool:
    meta = folder / "meta.json"
    try:
        return json.loads(meta.read_text())["key"] == key
    except (OSError, ValueError, KeyError):
        return False


def views_of(name: str) -> dict[str, list[poses.View]]:
    seed = poses.object_seed(name)
    return {"input": poses.dynamic_orbit(seed), "heldout": poses.heldout_views(seed)}


# --- from any process -----------------------------------------------------------------------


def ensure_rendered(
    names: list[str], root: Path = DEFAULT_ROOT, settings: RenderSettings = RenderSettings(), log=print
) -> float:
    """Render the objects not yet cached under ``root``, in a Blender subprocess.

    Returns the seconds spent (0 when everything was cached). Blender's per-file chatter
    on stdout is dropped; its warnings and errors (stderr) pass through.
    """
    missing = [n for n in names if not is_rendered(root / n, cache_key(n, settings))]
    if not missing:
        return 0.0
    root.mkdir(parents=True, exist_ok=True)
    log(f"rendering {', '.join(missing)} with Cycles (CPU, {settings.threads} threads) ...")
    cmd = [sys.executable, "-m", "benchmarks.quality.render", "--root", str(root), "--objects", ",".join(missing)]
    cmd += ["--size", str(settings.size), "--samples", str(settings.samples), "--threads", str(settings.threads)]
    cmd += ["--max-bounces", str(settings.max_bounces)] + (["--denoise"] if settings.denoise else [])
    env = dict(os.environ)
    # Keep Blender's user folders (preferences, caches) out of the home folder.
    env.setdefault("BLENDER_USER_RESOURCES", str(root / ".blender-user"))
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


# --- inside Blender ---------------------------------------------------------------------------


def render_object(spec: scenes.ObjectSpec, folder: Path, settings: RenderSettings) -> float:
    """Build, render and export one object into ``folder`` (replaced); returns seconds."""
    import bpy

    start = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ob = scenes.build(spec)
    scene = bpy.context.scene
    _configure(scene, settings)
    camera = _camera(scene)
    output = _file_output(scene)

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for set_name, views in views_of(spec.name).items():
        out_dir = partial / set_name
        out_dir.mkdir(parents=True)
        output.directory = str(out_dir) + os.sep
        frames = []
        for i, view in enumerate(views):
            c2w = view.c2w()
            camera.matrix_world = _matrix(c2w)
            output.file_name = f"{i:03d}_"
            bpy.ops.render.render()
            (out_dir / f"{i:03d}_rgba.png").rename(out_dir / f"{i:03d}.png")
            (out_dir / f"{i:03d}_albedo.png").rename(out_dir / f"albedo_{i:03d}.png")
            frames.append(
                {
                    "file_path": f"{i:03d}.png",
                    "albedo_path": f"albedo_{i:03d}.png",
                    "transform_matrix": c2w.tolist(),
                    "elevation_deg": view.pose.elevation_deg,
                    "azimuth_deg": view.pose.azimuth_deg,
                    "relative_azimuth_deg": view.relative_azimuth_deg,
                }
            )
        meta = {"camera_angle_x": math.radians(DEFAULT_FOV_DEG), "frames": frames}
        (out_dir / "transforms.json").write_text(json.dumps(meta, indent=1))
    _export_mesh(bpy, ob, partial / "gt_mesh.npz")

    seconds = time.perf_counter() - start
    meta = {
        "key": cache_key(spec.name, settings),
        "object": spec.describe(),
        "settings": asdict(settings),
        "blender": bpy.app.version_string,
        "render_seconds": seconds,
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return seconds


def _configure(scene, settings: RenderSettings) -> None:
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = settings.samples
    cycles.seed = 0
    cycles.use_denoising = settings.denoise
    cycles.denoiser = "OPENIMAGEDENOISE"
    cycles.max_bounces = settings.max_bounces
    cycles.diffuse_bounces = min(2, settings.max_bounces)
    cycles.glossy_bounces = min(2, settings.max_bounces)
    cycles.transmission_bounces = 0
    cycles.volume_bounces = 0
    cycles.caustics_reflective = cycles.caustics_refractive = False
    render = scene.render
    render.resolution_x = render.resolution_y = settings.size
    render.resolution_percentage = 100
    render.film_transparent = True
    render.threads_mode = "FIXED"
    render.threads = settings.threads
    render.use_persistent_data = True  # reuse the scene's BVH across the views
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.view_layers[0].use_pass_diffuse_color = True


def _camera(scene):
    import bpy

    data = bpy.data.cameras.new("quality_camera")
    data.sensor_fit = "HORIZONTAL"
    data.angle_x = math.radians(DEFAULT_FOV_DEG)
    data.clip_start, data.clip_end = 0.05, 20.0
    camera = bpy.data.objects.new("quality_camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def _file_output(scene):
    """Compositor: combined RGBA and the diffuse-colour pass (with the render's alpha) to PNGs."""
    import bpy

    tree = bpy.data.node_groups.new("quality_passes", "CompositorNodeTree")
    scene.compositing_node_group = tree
    layers = tree.nodes.new("CompositorNodeRLayers")
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.format.media_type = "IMAGE"
    output.format.file_format = "PNG"
    output.format.color_mode = "RGBA"
    output.format.color_depth = "8"
    output.format.compression = 15
    output.save_as_render = True  # apply the (Standard) view transform: sRGB
    output.file_output_items.new("RGBA", "rgba")
    output.file_output_items.new("RGBA", "albedo")
    # The pass is coverage-weighted at edges like the render; giving it the render's alpha
    # makes the saved (straight-alpha) PNG hold the albedo itself there too.
    set_alpha = tree.nodes.new("CompositorNodeSetAlpha")
    set_alpha.inputs["Type"].default_value = "Replace Alpha"
    tree.links.new(layers.outputs["Image"], output.inputs["rgba"])
    tree.links.new(layers.outputs["Diffuse Color"], set_alpha.inputs["Image"])
    tree.links.new(layers.outputs["Alpha"], set_alpha.inputs["Alpha"])
    tree.links.new(set_alpha.outputs[0], output.inputs["albedo"])
    return output


def _matrix(c2w: np.ndarray):
    from mathutils import Matrix

    return Matrix([list(row) for row in c2w])


def _export_mesh(bpy, ob, path: Path) -> None:
    """The evaluated mesh, triangulated, in world coordinates."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = ob.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    mesh.calc_loop_triangles()
    vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", vertices)
    faces = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", faces)
    world = np.array(ob.matrix_world, dtype=np.float64)
    vertices = vertices.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    evaluated.to_mesh_clear()
    np.savez_compressed(path, vertices=vertices, faces=faces.reshape(-1, 3))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the quality benchmark's objects (needs bpy).")
    parser.add_argument("--objects", default="all", help="all, seen, unseen, or comma-separated names")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--size", type=int, default=RenderSettings.size)
    parser.add_argument("--samples", type=int, default=RenderSettings.samples)
    parser.add_argument("--threads", type=int, default=RenderSettings.threads)
    parser.add_argument("--max-bounces", type=int, default=RenderSettings.max_bounces)
    parser.add_argument("--denoise", action="store_true", help="OpenImageDenoise (slow on the CPU)")
    parser.add_argument("--force", action="store_true", help="render even when cached")
    args = parser.parse_args(argv)
    settings = RenderSettings(args.size, args.samples, args.denoise, args.threads, args.max_bounces)
    for spec in scenes.select(args.objects):
        folder = args.root / spec.name
        if not args.force and is_rendered(folder, cache_key(spec.name, settings)):
            print(f"{spec.name}: cached", file=sys.stderr)
            continue
        seconds = render_object(spec, folder, settings)
        print(f"{spec.name}: rendered in {seconds:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
