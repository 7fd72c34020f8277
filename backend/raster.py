"""Triangle rasterisation on the CPU (numpy): z-buffered face ids, depths and barycentrics.

One rasteriser serves every purpose: the quick proxy's views, synthetic test views,
per-view depth maps for visibility tests when baking, refinement's pixel-to-face lookup,
and (with UVs as screen coordinates) finding which face covers each texel. A pixel is
covered when its centre lies inside the triangle. Faces are culled only on request, so a
closed mesh shows its near side whichever way it winds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from blend123.protocol.camera import project_points

#: Candidate (triangle, pixel) pairs tested at once; bounds the working memory (~100 MB).
_CHUNK_CANDIDATES = 1 << 21
#: Vertices closer to the camera than this are treated as clipped (the face is dropped).
_NEAR = 1e-4


@dataclass
class Fragments:
    """What each pixel sees: the nearest face covering its centre."""

    face: np.ndarray  # (H, W) int32, -1 where nothing covers the pixel centre
    depth: np.ndarray  # (H, W) float32, +inf where empty
    bary: np.ndarray  # (H, W, 3) float32 weights of the face's three vertices

    @property
    def covered(self) -> np.ndarray:
        return self.face >= 0

    def interpolate(self, vertex_values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Per-vertex values (V, C) interpolated at covered pixels: (n_covered, C)."""
        mask = self.covered
        corners = faces[self.face[mask]]
        bary = self.bary[mask]
        out = bary[:, 0, None] * vertex_values[corners[:, 0]]
        for k in (1, 2):
            out += bary[:, k, None] * vertex_values[corners[:, k]]
        return out


def rasterize_screen(
    xy: np.ndarray,
    z: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    perspective: bool = True,
    on_progress: Callable[[float], None] = lambda fraction: None,
    front_only: bool = False,
) -> Fragments:
    """Rasterise triangles given in pixel coordinates (x right, y down, centres at +0.5).

    ``z`` is the per-vertex depth (smaller wins). With ``perspective`` the barycentrics
    and depth are interpolated perspective-correctly (``z`` must be the camera depth);
    without it, linearly (orthographic use such as UV space). ``on_progress`` gets the
    fraction of candidate pixels done before each chunk. ``front_only`` drops faces wound
    clockwise on screen (negative signed area with y down): half the work for a closed
    mesh whose faces wind counter-clockwise seen from outside.
    """
    xy = np.asarray(xy, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n_pixels = width * height
    face_buf = np.full(n_pixels, -1, dtype=np.int32)
    depth_buf = np.full(n_pixels, np.inf, dtype=np.float64)
    bary_buf = np.zeros((n_pixels, 3), dtype=np.float32)

    # Per-face quantities as contiguous rows (corner, face): a reduction over a triangle's
    # three corners is then two elementwise minima, not a slow length-3 reduction.
    cx = np.ascontiguousarray(xy[:, 0])[faces.T]
    cy = np.ascontiguousarray(xy[:, 1])[faces.T]
    cz = z[faces.T]
    (ax, bx, qx), (ay, by, qy) = cx, cy
    area = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
    usable = np.isfinite(area) & ((area if front_only else np.abs(area)) > 1e-12) & np.isfinite(cz).all(0)
    if perspective:
        usable &= (cz > _NEAR).all(0)
    # Pixel boxes clipped to the image; faces with an empty box drop out.
    x0 = np.maximum(np.ceil(np.minimum(np.minimum(ax, bx), qx) - 0.5), 0.0)
    y0 = np.maximum(np.ceil(np.minimum(np.minimum(ay, by), qy) - 0.5), 0.0)
    bw = np.minimum(np.floor(np.maximum(np.maximum(ax, bx), qx) - 0.5), width - 1) - x0 + 1
    bh = np.minimum(np.floor(np.maximum(np.maximum(ay, by), qy) - 0.5), height - 1) - y0 + 1
    ids = np.flatnonzero(usable & (bw > 0) & (bh > 0))
    if ids.size == 0:
        return _fragments(face_buf, depth_buf, bary_buf, width, height)
    x0, y0 = x0[ids].astype(np.int64), y0[ids].astype(np.int64)
    bw, bh = bw[ids].astype(np.int64), bh[ids].astype(np.int64)
    counts = bw * bh
    ax, bx, qx, ay, by, qy = ax[ids], bx[ids], qx[ids], ay[ids], by[ids], qy[ids]
    inv_area = 1.0 / area[ids]
    ox, oy = x0 + 0.5, y0 + 0.5
    # Edge functions as planes over each box: barycentric k = A dx + B dy + C, with dx, dy
    # counted in pixels from the box's first pixel centre (small numbers, exact steps).
    # Rows (9, F), so a candidate's coefficients are gathered as contiguous rows.
    coef = np.empty((9, len(ids)))
    for k, (px_, py_, qx_, qy_) in enumerate(((bx, by, qx, qy), (qx, qy, ax, ay), (ax, ay, bx, by))):
        np.multiply(py_ - qy_, inv_area, out=coef[3 * k])
        np.multiply(qx_ - px_, inv_area, out=coef[3 * k + 1])
        np.multiply((px_ - ox) * (qy_ - oy) - (py_ - oy) * (qx_ - ox), inv_area, out=coef[3 * k + 2])
    tz = cz[:, ids]
    inv_z = 1.0 / tz if perspective else None

    # Split the faces into chunks of about _CHUNK_CANDIDATES candidate pixels each.
    nearest = np.full(n_pixels, np.inf)  # per-chunk z-buffer, allocated once
    cum = np.cumsum(counts)
    bounds = np.searchsorted(cum, np.arange(_CHUNK_CANDIDATES, cum[-1], _CHUNK_CANDIDATES))
    done = 0
    for chunk in np.split(np.arange(len(ids)), np.unique(bounds)):
        if chunk.size == 0:
            continue
        on_progress(done / cum[-1])
        c = counts[chunk]
        done += int(c.sum())
        fid = np.repeat(chunk, c)  # ascending: ties below go to the lowest face id
        off = np.arange(fid.size) - np.repeat(np.cumsum(c) - c, c)
        dy, dx = np.divmod(off, bw[fid])
        cf = np.take(coef, fid, axis=1)
        w0 = cf[0] * dx + cf[1] * dy + cf[2]
        w1 = cf[3] * dx + cf[4] * dy + cf[5]
        w2 = cf[6] * dx + cf[7] * dy + cf[8]
        eps = -1e-9
        inside = np.flatnonzero((w0 >= eps) & (w1 >= eps) & (w2 >= eps))
        if not inside.size:
            continue
        fid = fid[inside]
        w = np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
        if perspective:
            w *= inv_z[:, fid].T
            depth = 1.0 / w.sum(1)
            w *= depth[:, None]
        else:
            depth = (w * tz[:, fid].T).sum(1)
        pix = (y0[fid] + dy[inside]) * width + x0[fid] + dx[inside]
        # Nearest candidate per pixel within the chunk (a z-buffer pass), then against the
        # buffer; a tie (a pixel centre on a shared edge) goes to the first candidate.
        np.minimum.at(nearest, pix, depth)
        win = np.flatnonzero((depth == nearest[pix]) & (depth < depth_buf[pix]))
        nearest[pix] = np.inf  # reset only what this chunk touched, for the next
        win = win[np.unique(pix[win], return_index=True)[1]]
        face_buf[pix[win]] = ids[fid[win]]
        depth_buf[pix[win]] = depth[win]
        bary_buf[pix[win]] = w[win]
    return _fragments(face_buf, depth_buf, bary_buf, width, height)


def rasterize(
    c2w: np.ndarray, camera_angle_x: float, width: int, height: int, vertices: np.ndarray, faces: np.ndarray
) -> Fragments:
    """Rasterise a mesh seen by a camera (NeRF-Blender c2w, horizontal FOV in radians)."""
    xy, depth = project_points(c2w, camera_angle_x, width, height, vertices)
    return rasterize_screen(xy, depth, faces, width, height, perspective=True)


def _fragments(face: np.ndarray, depth: np.ndarray, bary: np.ndarray, width: int, height: int) -> Fragments:
    return Fragments(
        face=face.reshape(height, width),
        depth=depth.astype(np.float32).reshape(height, width),
        bary=bary.reshape(height, width, 3),
    )
