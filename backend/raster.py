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
    face_buf = np.full(width * height, -1, dtype=np.int32)
    depth_buf = np.full(width * height, np.inf, dtype=np.float64)
    bary_buf = np.zeros((width * height, 3), dtype=np.float32)

    tri = xy[faces]  # (F, 3, 2)
    tz = z[faces]
    x0 = np.ceil(tri[:, :, 0].min(1) - 0.5)
    x1 = np.floor(tri[:, :, 0].max(1) - 0.5)
    y0 = np.ceil(tri[:, :, 1].min(1) - 0.5)
    y1 = np.floor(tri[:, :, 1].max(1) - 0.5)
    area = _cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    usable = np.isfinite(area) & ((area if front_only else np.abs(area)) > 1e-12) & np.isfinite(tz).all(1)
    if perspective:
        usable &= (tz > _NEAR).all(1)
    # Clip the pixel bounding boxes to the image; boxes fully outside get a count of 0.
    x0 = np.where(usable, np.maximum(x0, 0), 0).astype(np.int64)
    y0 = np.where(usable, np.maximum(y0, 0), 0).astype(np.int64)
    bw = np.where(usable, np.minimum(x1, width - 1) - x0 + 1, 0).clip(min=0).astype(np.int64)
    bh = np.where(usable, np.minimum(y1, height - 1) - y0 + 1, 0).clip(min=0).astype(np.int64)
    counts = bw * bh
    ids = np.flatnonzero(counts)
    if ids.size == 0:
        return _fragments(face_buf, depth_buf, bary_buf, width, height)

    # Split the faces into chunks of about _CHUNK_CANDIDATES candidate pixels each.
    cum = np.cumsum(counts[ids])
    bounds = np.searchsorted(cum, np.arange(_CHUNK_CANDIDATES, cum[-1], _CHUNK_CANDIDATES))
    done = 0
    for chunk in np.split(ids, np.unique(bounds)):
        if chunk.size == 0:
            continue
        on_progress(done / cum[-1])
        c = counts[chunk]
        done += int(c.sum())
        fid = np.repeat(chunk, c)
        off = np.arange(fid.size) - np.repeat(np.cumsum(c) - c, c)
        px = x0[fid] + off % bw[fid]
        py = y0[fid] + off // bw[fid]
        p = np.stack([px + 0.5, py + 0.5], axis=1)
        a, b, cc = tri[fid, 0], tri[fid, 1], tri[fid, 2]
        inv_area = 1.0 / area[fid]
        w0 = _cross(b - p, cc - p) * inv_area
        w1 = _cross(cc - p, a - p) * inv_area
        w2 = 1.0 - w0 - w1
        eps = -1e-9
        inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        if not inside.any():
            continue
        fid, px, py = fid[inside], px[inside], py[inside]
        w = np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
        if perspective:
            w = w / tz[fid]
            inv_depth = w.sum(1)
            depth = 1.0 / inv_depth
            w = w * depth[:, None]
        else:
            depth = (w * tz[fid]).sum(1)
        pix = (py * width + px).astype(np.int64)
        # Nearest candidate per pixel within the chunk, then against the buffer.
        order = np.lexsort((depth, pix))
        first = np.ones(order.size, dtype=bool)
        first[1:] = pix[order[1:]] != pix[order[:-1]]
        sel = order[first]
        sel = sel[depth[sel] < depth_buf[pix[sel]]]
        face_buf[pix[sel]] = fid[sel]
        depth_buf[pix[sel]] = depth[sel]
        bary_buf[pix[sel]] = w[sel]
    return _fragments(face_buf, depth_buf, bary_buf, width, height)


def rasterize(
    c2w: np.ndarray, camera_angle_x: float, width: int, height: int, vertices: np.ndarray, faces: np.ndarray
) -> Fragments:
    """Rasterise a mesh seen by a camera (NeRF-Blender c2w, horizontal FOV in radians)."""
    xy, depth = project_points(c2w, camera_angle_x, width, height, vertices)
    return rasterize_screen(xy, depth, faces, width, height, perspective=True)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _fragments(face: np.ndarray, depth: np.ndarray, bary: np.ndarray, width: int, height: int) -> Fragments:
    return Fragments(
        face=face.reshape(height, width),
        depth=depth.astype(np.float32).reshape(height, width),
        bary=bary.reshape(height, width, 3),
    )
