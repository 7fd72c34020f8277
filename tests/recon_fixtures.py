"""Helpers shared by the reconstruction tests: cached synthetic scene and run, a
transforms.json writer, texture look-ups, and a real-Blender glTF import in a subprocess."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from blend123.backend.reconstruction.pipeline import ReconstructionOptions, ReconstructionResult, reconstruct
from blend123.backend.reconstruction.synthetic import SyntheticScene, make_scene

#: Small but not trivial: the marching-cubes mesh has several times FAST_OPTIONS.max_faces.
FAST_OPTIONS = ReconstructionOptions(texture_size=512, max_faces=8000, grid_resolution=96)

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
