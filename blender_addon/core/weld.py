"""Welding a glTF-style mesh for Blender: numpy only, no bpy.

glTF (and the backend's meshes) split a vertex wherever its UV differs, so a UV seam is a
cut in the surface. Blender keeps UVs per face corner, so the add-on merges vertices with
equal positions and keeps each corner's own UV: a watertight reconstruction imports as one
connected, watertight piece, with its seams only in the UV map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Welded:
    vertices: np.ndarray  # (V', 3) float32, unique positions
    faces: np.ndarray  # (F', 3) int32 into ``vertices``
    corner_uvs: np.ndarray | None  # (F' * 3, 2) float32, one per face corner
    kept_faces: np.ndarray  # (F',) indices of the input faces kept (collapsed ones dropped)


def weld(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None) -> Welded:
    """Merge vertices at bit-identical positions; UVs move from vertices to corners.

    Exact equality only: split copies of one vertex carry the very same coordinates, and
    distinct vertices that merely lie close stay apart. Faces that would collapse (two
    corners on one merged vertex) are dropped, as Blender would refuse them.
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    corner_uvs = None if uvs is None else np.asarray(uvs, dtype=np.float32).reshape(-1, 2)[faces.ravel()]
    if len(vertices) == 0:
        return Welded(vertices, faces.astype(np.int32), corner_uvs, np.arange(len(faces)))
    # Unique rows of the raw bytes (+0.0 and -0.0 differ in bytes: normalise them first).
    keyed = np.ascontiguousarray(vertices + np.float32(0.0)).view(np.dtype((np.void, 12))).ravel()
    _, first, inverse = np.unique(keyed, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the first occurrence's order: stable, readable output
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    remap = rank[inverse.ravel()]
    new_faces = remap[faces]
    ok = (new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2]) & (new_faces[:, 0] != new_faces[:, 2])
    kept = np.flatnonzero(ok)
    if corner_uvs is not None:
        corner_uvs = np.ascontiguousarray(corner_uvs.reshape(-1, 3, 2)[kept].reshape(-1, 2))
    return Welded(np.ascontiguousarray(vertices[first[order]]), new_faces[kept].astype(np.int32), corner_uvs, kept)
