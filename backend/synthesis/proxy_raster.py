"""A small vectorised triangle rasteriser with a z-buffer, numpy only.

Triangles are processed in bins of similar screen-space bounding-box size, so every
candidate pixel of a whole bin is tested at once; a sort then keeps the nearest fragment
per pixel. Pixel centres on shared edges count for both triangles, so a closed mesh
renders without cracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Fragments closer than this (world units along the view axis) are clipped.
NEAR = 1e-3
#: Barycentric slack: pixel centres on an edge belong to both triangles (no cracks).
EDGE_EPS = 1e-6


@dataclass(frozen=True)
class Fragments:
    """The visible surface at each covered pixel."""

    pixel: np.ndarray  # (K,) flat pixel index, y * width + x
    triangle: np.ndarray  # (K,) index into the triangle array
    weights: np.ndarray  # (K, 3) perspective-correct barycentric weights


def rasterize(xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, width: int, height: int) -> Fragments:
    """Nearest front-facing triangle at every pixel centre.

    ``xy`` are pixel coordinates (x right, y down, centres at +0.5) and ``depth`` the
    distance along the view axis, as :func:`blend123.protocol.camera.project_points`
    returns them. Front-facing means counter-clockwise in those coordinates (positive
    signed area with y down), the winding the proxy surface uses.
    """
    p = xy[triangles]  # (T, 3, 2)
    inv_depth = 1.0 / np.where(depth > NEAR, depth, np.inf)
    w = inv_depth[triangles]  # (T, 3); 1/depth is affine in screen space
    e1 = p[:, 1] - p[:, 0]
    e2 = p[:, 2] - p[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    with np.errstate(invalid="ignore"):
        x0 = np.ceil(p[:, :, 0].min(1) - 0.5)
        x1 = np.floor(p[:, :, 0].max(1) - 0.5)
        y0 = np.ceil(p[:, :, 1].min(1) - 0.5)
        y1 = np.floor(p[:, :, 1].max(1) - 0.5)
        keep = (w > 0).all(1) & (area > 1e-12) & (x1 >= 0) & (y1 >= 0) & (x0 < width) & (y0 < height)
    keep = np.flatnonzero(keep)
    x0 = np.clip(x0[keep], 0, width - 1).astype(np.int64)
    x1 = np.clip(x1[keep], 0, width - 1).astype(np.int64)
    y0 = np.clip(y0[keep], 0, height - 1).astype(np.int64)
    y1 = np.clip(y1[keep], 0, height - 1).astype(np.int64)
    inside = (x1 >= x0) & (y1 >= y0)
    keep, x0, x1, y0, y1 = keep[inside], x0[inside], x1[inside], y0[inside], y1[inside]

    # Bin by bounding-box size rounded up to a power of two on each axis.
    bx = np.ceil(np.log2(x1 - x0 + 1)).astype(np.int64)
    by = np.ceil(np.log2(y1 - y0 + 1)).astype(np.int64)
    key = bx * 64 + by
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    pixels, tris, bary, inv = [], [], [], []
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        nx, ny = 1 << int(bx[group[0]]), 1 << int(by[group[0]])
        dx, dy = np.meshgrid(np.arange(nx), np.arange(ny))
        px = x0[group, None] + dx.ravel()
        py = y0[group, None] + dy.ravel()
        t = keep[group]
        q = p[t, 0]
        cx = px + 0.5 - q[:, 0, None]
        cy = py + 0.5 - q[:, 1, None]
        a = area[t, None]
        l1 = (cx * e2[t, 1, None] - cy * e2[t, 0, None]) / a
        l2 = (e1[t, 0, None] * cy - e1[t, 1, None] * cx) / a
        l0 = 1.0 - l1 - l2
        hit = (px <= x1[group, None]) & (py <= y1[group, None])
        hit &= (l0 >= -EDGE_EPS) & (l1 >= -EDGE_EPS) & (l2 >= -EDGE_EPS)
        rows, cols = np.nonzero(hit)
        lam = np.stack([l0[rows, cols], l1[rows, cols], l2[rows, cols]], axis=1)
        tri = t[rows]
        pixels.append(py[rows, cols] * width + px[rows, cols])
        tris.append(tri)
        bary.append(lam)
        inv.append((lam * w[tri]).sum(1))
    if not pixels:
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    pixel = np.concatenate(pixels)
    tri = np.concatenate(tris)
    lam = np.concatenate(bary)
    inv_d = np.concatenate(inv)

    # z-buffer: per pixel, the largest 1/depth (nearest) wins; ties by triangle index,
    # so the result never depends on bin order.
    order = np.lexsort((tri, -inv_d, pixel))
    pixel, tri, lam, inv_d = pixel[order], tri[order], lam[order], inv_d[order]
    first = np.ones(pixel.size, bool)
    first[1:] = pixel[1:] != pixel[:-1]
    pixel, tri, lam, inv_d = pixel[first], tri[first], lam[first], inv_d[first]
    weights = lam * w[tri] / inv_d[:, None]
    return Fragments(pixel=pixel, triangle=tri, weights=weights)
