"""The surface point behind each texel of a UV layout: the mesh rasterised in UV space.

numpy only (no torch), so the unwrap's helper process can lay the texels out right after
the charts (``uv.py``), beside the light fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..raster import rasterize_screen


@dataclass
class TexelSurface:
    """The surface point behind each texel that a chart covers."""

    rows: np.ndarray  # (M,) texel row, 0 = top of the image
    cols: np.ndarray  # (M,)
    positions: np.ndarray  # (M, 3) world
    normals: np.ndarray  # (M, 3) unit
    values: np.ndarray | None = None  # (M, C) of ``vertex_values``, when given


def texel_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    normals: np.ndarray,
    size: int,
    on_progress: Callable[[float], None] = lambda fraction: None,
    vertex_values: np.ndarray | None = None,
) -> TexelSurface:
    """Rasterise the mesh in UV space: UV (0, 0) is the bottom-left corner of the image.

    ``vertex_values`` (V, C), if given, are interpolated to the texels too.
    """
    xy = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], axis=1)
    frags = rasterize_screen(xy, np.zeros(len(uvs)), faces, size, size, perspective=False, on_progress=lambda f: on_progress(0.6 * f))
    on_progress(0.6)
    rows, cols = np.nonzero(frags.covered)
    # One interpolation of every per-vertex quantity: the corner lookups are the cost.
    columns = [np.asarray(vertices, np.float64), np.asarray(normals, np.float64)]
    if vertex_values is not None:
        columns.append(np.asarray(vertex_values, np.float64).reshape(len(vertices), -1))
    both = frags.interpolate(np.concatenate(columns, axis=1), faces)
    positions, n = both[:, :3], both[:, 3:6]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    values = None if vertex_values is None else both[:, 6:].reshape((len(both),) + np.shape(vertex_values)[1:])
    on_progress(1.0)
    return TexelSurface(rows, cols, positions, n, values)
