"""Fast import into Blender: the extension's mesh import vs. Blender's glTF importer.

A 100k-face mesh with a 2048x2048 texture, as the backend sends it (arrays + GLB), is
imported with the extension's importer (attribute API, texture PNG packed from the GLB)
and with ``bpy.ops.import_scene.gltf`` on the same GLB. Runs in real Blender (the ``bpy``
module) with the extension enabled from an assembled extension repository.

    .venv/bin/python benchmarks/bench_blender_import.py [--faces 100000] [--texture 2048] [--repeat 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def make_mesh(faces: int, texture: int):
    """A UV-mapped sphere-like grid with ``faces`` triangles and a smooth colour texture."""
    rows = int(np.sqrt(faces / 4))
    cols = -(-faces // (2 * rows))  # at least ``faces`` triangles
    v, u = np.meshgrid(np.linspace(0, 1, rows + 1), np.linspace(0, 1, cols + 1), indexing="ij")
    theta, phi = (v - 0.5) * np.pi * 0.98, u * 2 * np.pi
    verts = np.stack([np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), np.sin(theta)], -1).reshape(-1, 3) * 0.5
    uvs = np.stack([u, v], -1).reshape(-1, 2)
    idx = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    yy, xx = np.mgrid[0:texture, 0:texture]
    tex = np.zeros((texture, texture, 4), np.uint8)
    tex[..., 0] = xx * 255 // texture
    tex[..., 1] = yy * 255 // texture
    tex[..., 2] = ((xx // 64 + yy // 64) % 2) * 200
    tex[..., 3] = 255
    return verts.astype(np.float32), tris.astype(np.int32), uvs.astype(np.float32), tex


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--texture", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from blend123.backend.reconstruction.export import export_glb

    verts, faces, uvs, tex = make_mesh(args.faces, args.texture)
    glb = export_glb(verts, faces, uvs, tex)
    work = Path(tempfile.mkdtemp(prefix="blend123-bench-"))
    glb_path = work / "mesh.glb"
    glb_path.write_bytes(glb)

    os.environ.setdefault("BLENDER_USER_RESOURCES", str(work / "blender-user"))
    import bpy  # first: it puts Blender's own modules (addon_utils) on sys.path
    import addon_utils

    sys.path.insert(0, str(REPO / "packaging"))
    from assemble_extension import assemble

    repo_dir = assemble(work / "repo").parent
    bpy.context.preferences.extensions.repos.new(name="bench", module="blend123_bench", custom_directory=str(repo_dir), source="USER")
    addon_utils.enable("bl_ext.blend123_bench.blend123", default_set=True)
    import importlib

    mesh_import = importlib.import_module("bl_ext.blend123_bench.blend123.mesh_import")
    images = importlib.import_module("bl_ext.blend123_bench.blend123.images")

    def fresh() -> bpy.types.Collection:
        bpy.ops.wm.read_homefile(use_empty=True)
        return bpy.context.scene.collection

    def ours() -> float:
        coll = fresh()
        t = time.perf_counter()
        obj = mesh_import.import_textured_mesh("bench", verts, faces, uvs, tex, coll, glb)
        dt = time.perf_counter() - t
        assert len(obj.data.polygons) == len(faces)
        return dt

    def ours_decoded() -> float:
        """Ours, plus the first read of the texture pixels (Blender decodes the packed PNG)."""
        coll = fresh()
        t = time.perf_counter()
        obj = mesh_import.import_textured_mesh("bench", verts, faces, uvs, tex, coll, glb)
        image = obj.data.materials[0].node_tree.nodes["Image Texture"].image
        px = np.empty(len(image.pixels), np.float32)
        image.pixels.foreach_get(px)
        return time.perf_counter() - t

    def ours_pixels() -> float:
        """Ours without the GLB: pixels.foreach_set, then pack() (re-encodes a PNG)."""
        coll = fresh()
        t = time.perf_counter()
        mesh_import.import_textured_mesh("bench", verts, faces, uvs, tex, coll, b"")
        return time.perf_counter() - t

    def pixels_only() -> float:
        fresh()
        t = time.perf_counter()
        images.new_image("tex", tex, pack=False)
        return time.perf_counter() - t

    def gltf() -> float:
        fresh()
        t = time.perf_counter()
        bpy.ops.import_scene.gltf(filepath=str(glb_path))
        dt = time.perf_counter() - t
        assert len(bpy.context.selected_objects[0].data.polygons) == len(faces)
        return dt

    runs = {
        "blend123 import (mesh + packed GLB texture)": ours,
        "  + first pixel read (PNG decode)": ours_decoded,
        "blend123 import, texture via pixels + pack()": ours_pixels,
        "  texture pixels.foreach_set alone (2048^2)": pixels_only,
        "bpy.ops.import_scene.gltf": gltf,
    }
    results = {}
    for name, fn in runs.items():
        fn()  # warm-up
        times = [fn() for _ in range(args.repeat)]
        results[name] = {"median_s": statistics.median(times), "min_s": min(times)}

    print(f"\nImport of {len(faces)} faces, {len(verts)} vertices, {args.texture}x{args.texture} texture "
          f"(Blender {bpy.app.version_string}, median of {args.repeat})")
    print(f"{'method':52s} {'median s':>9s} {'min s':>8s}")
    for name, r in results.items():
        print(f"{name:52s} {r['median_s']:9.3f} {r['min_s']:8.3f}")
    ours_s = results["blend123 import (mesh + packed GLB texture)"]["median_s"]
    gltf_s = results["bpy.ops.import_scene.gltf"]["median_s"]
    ok = ours_s < TARGET_S and ours_s < gltf_s
    print(f"\nblend123 import {ours_s:.3f} s (target < {TARGET_S} s), {gltf_s / ours_s:.0f}x faster than the glTF importer: {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"faces": len(faces), "texture": args.texture, "results": results, "pass": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
