"""Bake view colours into a UV texture.

Each texel covered by a chart is a surface point. Its colour is the weighted mean of the
views that see it: visible (depth test against the view's rasterised depth map of the
mesh), facing the camera, inside the subject mask, weighted by the cosine between the
surface normal and the direction to the camera. Texels no view saw, and the gutters
between charts, take the colour of the nearest baked texel, so bilinear filtering and
mip-mapping never pull in unrelated colours at chart borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from blend123.protocol.camera import focal_px, project_points

from ..raster import rasterize, rasterize_screen

#: Texels processed at once per view; bounds memory for large textures.
_CHUNK_TEXELS = 1 << 20
#: Views seeing a surface more obliquely than this (cosine) do not contribute: at grazing
#: angles the colour comes from a sliver of pixels and mixes with the silhouette edge.
_MIN_COSINE = 0.1


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
    frags = rasterize_screen(xy, np.zeros(len(uvs)), faces, size, size, perspective=False, on_progress=on_progress)
    rows, cols = np.nonzero(frags.covered)
    n = frags.interpolate(normals, faces)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    values = None if vertex_values is None else frags.interpolate(vertex_values, faces)
    return TexelSurface(rows, cols, frags.interpolate(vertices, faces), n, values)


def bake(
    surface: TexelSurface,
    mesh_vertices: np.ndarray,
    mesh_faces: np.ndarray,
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted colours of the texels in ``surface``: ``(rgb (M, 3) float32, weight (M,))``.

    ``mesh_vertices``/``mesh_faces`` are the occluders for the depth test (the same
    surface, unsplit). ``images`` are (N, H, W, 4) uint8 RGBA with alpha as the mask.
    ``on_progress`` gets the fraction done after every chunk of texels of every view.
    """
    n_views, height, width = images.shape[:3]
    rgb_sum = np.zeros((len(surface.rows), 3), dtype=np.float64)
    weight_sum = np.zeros(len(surface.rows), dtype=np.float64)
    positions = surface.positions.astype(np.float32)
    normals = surface.normals.astype(np.float32)
    for i in range(n_views):
        view = _View(
            c2w=c2w[i],
            camera_angle_x=camera_angle_x,
            depth=rasterize(c2w[i], camera_angle_x, width, height, mesh_vertices, mesh_faces).depth,
            image=_premultiplied(images[i]),
        )
        for chunk in range(0, len(positions), _CHUNK_TEXELS):
            part = slice(chunk, chunk + _CHUNK_TEXELS)
            idx, rgb, weight = view.contribution(positions[part], normals[part])
            rgb_sum[chunk + idx] += rgb
            weight_sum[chunk + idx] += weight
            on_progress((i + min(1.0, (chunk + _CHUNK_TEXELS) / len(positions))) / n_views)
    rgb = rgb_sum / np.maximum(weight_sum, 1e-12)[:, None]
    return rgb.astype(np.float32), weight_sum.astype(np.float32)


@dataclass
class _View:
    c2w: np.ndarray
    camera_angle_x: float
    depth: np.ndarray  # (H, W) rasterised depth of the mesh, +inf where empty
    image: np.ndarray  # (H, W, 4) float32 premultiplied RGBA

    def contribution(self, positions: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points this view sees: ``(indices, weighted premultiplied rgb (K, 3), weights (K,))``."""
        height, width = self.depth.shape
        to_camera = self.c2w[:3, 3].astype(np.float32) - positions
        to_camera /= np.maximum(np.linalg.norm(to_camera, axis=1, keepdims=True), 1e-12)
        cosine = np.einsum("ij,ij->i", normals, to_camera)
        facing = np.flatnonzero(cosine > _MIN_COSINE)
        cosine = cosine[facing]
        pix, depth = project_points(self.c2w, self.camera_angle_x, width, height, positions[facing])
        col = np.clip(np.floor(pix[:, 0]).astype(np.int64), 0, width - 1)
        row = np.clip(np.floor(pix[:, 1]).astype(np.int64), 0, height - 1)
        in_frame = (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height) & (depth > 0)
        # Depth slack: the surface point and the pixel centre differ by up to about a
        # pixel footprint times the slope, which grows as the surface turns away.
        footprint = np.abs(depth) / focal_px(self.camera_angle_x, width)
        slope = np.sqrt(np.maximum(1.0 - cosine**2, 0.0)) / cosine
        visible = np.flatnonzero(in_frame & (depth <= self.depth[row, col] + footprint * (1.5 + 2.0 * slope)))
        premult = _sample_bilinear(self.image, pix[visible])
        # rgb is premultiplied, so sum(cos * rgb) / sum(cos * alpha) is the colour with
        # edge pixels counted by their coverage and the background left out.
        cos = cosine[visible, None]
        return facing[visible], premult[:, :3] * cos, premult[:, 3] * cos[:, 0]


def fill_texture(surface: TexelSurface, rgb: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 4) uint8 opaque texture: baked texels, everything else nearest-filled."""
    image = np.zeros((size, size, 3), dtype=np.float32)
    known = np.zeros((size, size), dtype=bool)
    image[surface.rows[valid], surface.cols[valid]] = rgb[valid]
    known[surface.rows[valid], surface.cols[valid]] = True
    image = fill_nearest(image, known)
    out = np.empty((size, size, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def fill_nearest(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Copy into each unknown pixel the value of its nearest known pixel."""
    if known.all():
        return image
    if not known.any():
        return np.full_like(image, 0.5)
    _, (r, c) = ndimage.distance_transform_edt(~known, return_indices=True)
    return image[r, c]


def _premultiplied(image: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> float32 in [0, 1] with colour times alpha.

    Interpolating premultiplied values keeps the background colour out of edge pixels.
    """
    out = image.astype(np.float32) / 255.0
    out[..., :3] *= out[..., 3:4]
    return out


def _sample_bilinear(image: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear sample (M, C) of an (H, W, C) image at pixel coordinates (x right, y down)."""
    h, w = image.shape[:2]
    x = np.clip(pix[:, 0] - 0.5, 0, w - 1).astype(np.float32)
    y = np.clip(pix[:, 1] - 0.5, 0, h - 1).astype(np.float32)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    flat = image.reshape(h * w, -1)
    i = y0 * w + x0
    top = np.take(flat, i, axis=0) * (1 - fx) + np.take(flat, i + 1, axis=0) * fx
    bottom = np.take(flat, i + w, axis=0) * (1 - fx) + np.take(flat, i + w + 1, axis=0) * fx
    return top * (1 - fy) + bottom * fy
