"""Helpers shared by the reconstruction tests: cached synthetic scene and run, a
transforms.json writer, texture look-ups, and a real-Blender glTF import in a subprocess."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blend123.backend.reconstruction.light import SGLight
from blend123.backend.reconstruction.pipeline import ReconstructionOptions, ReconstructionResult, reconstruct
from blend123.backend.raster import rasterize
from blend123.backend.reconstruction.refine import linear_to_srgb, srgb_to_linear
from benchmarks.quality.synthetic import SyntheticScene, make_scene

#: Small but not trivial: the marching-cubes mesh has several times FAST_OPTIONS.max_faces.
#: The light model is off: the synthetic scene is unlit, these options test the baking.
FAST_OPTIONS = ReconstructionOptions(texture_size=512, max_faces=8000, grid_resolution=96, light_model=False)
#: The light model on, few steps: for the lit scene.
LIT_OPTIONS = ReconstructionOptions(
    texture_size=256, max_faces=6000, grid_resolution=80, refine_steps=300, refine_samples=8192
)

HAS_BPY = importlib.util.find_spec("bpy") is not None


@functools.lru_cache(maxsize=None)
def scene(size: int = 128) -> SyntheticScene:
    return make_scene(size=size)


@functools.lru_cache(maxsize=None)
def reconstruction() -> tuple[ReconstructionResult, tuple[tuple[str, float], ...]]:
    """One reconstruction of the synthetic scene, with every progress call it made."""
    calls: list[tuple[str, float]] = []
    s = scene()
    result = reconstruct(s.images, s.c2w, s.camera_angle_x, FAST_OPTIONS, lambda st, f: calls.append((st, f)))
    return result, tuple(calls)


def known_light() -> SGLight:
    """A sun-like light: strong lobes up and to the front right, a dim sky everywhere."""
    light = SGLight(amplitude=0.15)
    sun = torch.tensor([0.5, -0.6, 0.62])
    sun = sun / sun.norm()
    cos = light.axes @ sun
    with torch.no_grad():
        amp = 0.15 + 3.0 * torch.clamp(cos, min=0) ** 4
        light.raw_amplitude.copy_(amp + torch.log(-torch.expm1(-amp)))
    return light


@functools.lru_cache(maxsize=None)
def lit_scene(size: int = 96) -> SyntheticScene:
    """The synthetic scene shaded by :func:`known_light` (Lambertian, in linear light)."""
    base = scene(size)
    light = known_light()
    v, f = base.vertices, base.faces
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    face_n /= np.linalg.norm(face_n, axis=1, keepdims=True)
    with torch.no_grad():
        shading = light.shading(torch.as_tensor(face_n, dtype=torch.float32)).numpy()
    images = base.images.copy()
    for i, c2w in enumerate(base.c2w):
        frags = rasterize(c2w, base.camera_angle_x, size, size, v, f)
        fid = frags.face[frags.covered]
        albedo = srgb_to_linear(base.face_colours[fid].astype(np.float64) / 255.0)
        lit = linear_to_srgb(albedo * shading[fid, None])
        images[i][frags.covered, :3] = np.clip(np.rint(lit * 255), 0, 255).astype(np.uint8)
    return SyntheticScene(v, f, base.face_colours, images, base.c2w, base.camera_angle_x)


@functools.lru_cache(maxsize=None)
def lit_reconstructions() -> tuple[ReconstructionResult, ReconstructionResult]:
    """The lit scene reconstructed with the light model on and off."""
    s = lit_scene()
    on = reconstruct(s.images, s.c2w, s.camera_angle_x, LIT_OPTIONS)
    off = reconstruct(s.images, s.c2w, s.camera_angle_x, dataclasses.replace(LIT_OPTIONS, light_model=False))
    return on, off


def write_transforms(folder: Path, images: np.ndarray, c2w: np.ndarray, angle: float, suffix: bool = True) -> Path:
    """A NeRF-Blender dataset: ``train/r_<i>.png`` images and ``transforms.json``."""
    (folder / "train").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (image, matrix) in enumerate(zip(images, c2w)):
        Image.fromarray(image).save(folder / "train" / f"r_{i}.png")
        name = f"./train/r_{i}" + (".png" if suffix else "")
        frames.append({"file_path": name, "rotation": 0.0, "transform_matrix": np.asarray(matrix).tolist()})
    path = folder / "transforms.json"
    path.write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return path


def texture_at(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest texel (RGB) at UVs with origin bottom-left, texture's first row at the top."""
    size = texture.shape[0]
    col = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1.0 - uv[:, 1]) * size).astype(int), 0, size - 1)
    return texture[row, col, :3].astype(int)


def face_centroid_colours(result: ReconstructionResult, face_ids: np.ndarray) -> np.ndarray:
    uv = result.uvs[result.faces[face_ids]].mean(1)
    return texture_at(result.texture, uv)


_BLENDER_SCRIPT = """
import json, sys
import bpy
import numpy as np

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=sys.argv[1])
obj = next(o for o in bpy.context.scene.objects if o.type == "MESH")
mesh = obj.data
mw = np.array(obj.matrix_world)
co = np.empty(3 * len(mesh.vertices))
mesh.vertices.foreach_get("co", co)
world = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
vi = np.empty(len(mesh.loops), dtype=np.int64)
mesh.loops.foreach_get("vertex_index", vi)
uv = np.empty(2 * len(mesh.loops))
mesh.uv_layers[0].data.foreach_get("uv", uv)
images = [list(im.size) for im in bpy.data.images]
print("RESULT" + json.dumps({
    "loop_positions": world[vi].tolist(),
    "loop_uvs": uv.reshape(-1, 2).tolist(),
    "images": images,
    "faces": len(mesh.polygons),
}))
"""


def blender_import(glb_path: Path) -> dict:
    """Import a GLB with real Blender (bpy, in a fresh process): world-space loop positions, UVs, image sizes."""
    proc = subprocess.run(
        [sys.executable, "-c", _BLENDER_SCRIPT, str(glb_path)], capture_output=True, text=True, timeout=240
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        output = f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        raise AssertionError(f"Blender import failed ({proc.returncode}):\n{output}")
    return json.loads(lines[-1][len("RESULT") :])
