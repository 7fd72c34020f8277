"""The proxy surface: a silhouette inflated into a closed, pillow-like shell.

Heights come from the Poisson equation ``lap f = -4`` inside the silhouette with ``f = 0``
on its rim, and ``h = sqrt(f)``: a disc becomes exactly a sphere, thin parts stay thin
(the height scales with the local width, not the widest part), and the surface meets the
rim tangentially, so the silhouette seen from the reference camera is the mask itself.
The back half mirrors the front through the image plane and shares its rim vertices, so
the shell is closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from PIL import Image
from scipy import ndimage

from blend123.backend.images import ALPHA_THRESHOLD, PreparedImage
from blend123.backend.synthesis.scene import SubjectInWorld

#: Depth of the shell relative to a sphere: 1.0 turns a disc into a full sphere. Slightly
#: flatter reads better on flat-fronted subjects and is still round on round ones.
INFLATION = 0.85
#: Share of the texture frame the subject's larger side spans.
FILL = 0.8


@dataclass(frozen=True)
class ProxySurface:
    """A closed triangle mesh in the reference image's pixel frame."""

    xy: np.ndarray  # (V, 2) texture pixel coordinates of each vertex (x right, y down)
    height: np.ndarray  # (V,) offset toward the reference camera, texture pixels (back < 0)
    triangles: np.ndarray  # (T, 3) counter-clockwise seen from outside (y down)
    back: np.ndarray  # (T,) True for the half facing away from the reference camera
    texture: np.ndarray  # (S, S, 3) float32 colours, bled outward past the silhouette
    texture_size: int

    def world_vertices(self, subject: SubjectInWorld) -> np.ndarray:
        """(V, 3) world positions that reproduce the reference photo from its camera.

        Each vertex lies on the reference camera's ray through its pixel of the *original*
        photo (the texture is the photo's subject recentred at ``FILL``), at depth
        ``radius -/+ height``: the rim lies on the plane through the subject centre, and
        heights are scaled to world units with the photo's pixel size on that plane. So the
        subject's size and place come from the photo and its lens, never from the lens that
        asks for a view.
        """
        s = self.texture_size
        photo_xy = subject.prepared_to_photo(self.xy, s, FILL)
        texel = subject.extent_px / (FILL * s)  # photo pixels per texture pixel
        radius = subject.reference.radius
        depth = radius - self.height * texel * subject.pixel_size
        cam = subject.photo.directions_at(photo_xy) * depth[:, None]
        c2w = subject.reference.to_c2w()
        return cam @ c2w[:3, :3].T + c2w[:3, 3]


def build_surface(prepared: PreparedImage, grid: int = 256) -> ProxySurface:
    """Inflate the prepared silhouette on a ``grid`` x ``grid`` vertex lattice."""
    size = prepared.size
    if grid == size:
        mask = prepared.mask
    else:  # geometry at a fixed lattice, texture at full resolution
        alpha = Image.fromarray(prepared.rgba[:, :, 3]).resize((grid, grid), Image.Resampling.BOX)
        mask = np.asarray(alpha) >= ALPHA_THRESHOLD
    scale = size / grid
    heights = INFLATION * scale * np.sqrt(_poisson_inflation(mask))

    # Front vertices at every mask pixel; back vertices only where the height is not zero,
    # so the rim is shared and the shell closed.
    front_index = np.full(mask.shape, -1, np.int64)
    front_index[mask] = np.arange(mask.sum())
    raised = mask & (heights > 0)
    back_index = front_index.copy()
    back_index[raised] = mask.sum() + np.arange(raised.sum())
    ys, xs = np.nonzero(mask)
    bys, bxs = np.nonzero(raised)
    xy = (np.concatenate([np.stack([xs, ys], 1), np.stack([bxs, bys], 1)]) + 0.5) * scale
    height = np.concatenate([heights[mask], -heights[raised]])

    front = _lattice_triangles(front_index)
    # Reversed winding: faces away from the reference. Flat rim-only triangles appear in
    # both halves, one facing each way, so thin parts are visible from behind too.
    back = _lattice_triangles(back_index)[:, ::-1]
    triangles = np.concatenate([front, back])
    is_back = np.concatenate([np.zeros(len(front), bool), np.ones(len(back), bool)])
    return ProxySurface(
        xy=xy.astype(np.float64),
        height=height,
        triangles=triangles,
        back=is_back,
        texture=_bleed_colours(prepared),
        texture_size=size,
    )


def _poisson_inflation(mask: np.ndarray) -> np.ndarray:
    """``f`` with ``lap f = -4`` on the mask interior, 0 on the rim (in pixels squared)."""
    # The rim: mask pixels with any of their 8 neighbours outside (or on the frame edge).
    interior = ndimage.binary_erosion(mask, np.ones((3, 3), bool))
    n = int(interior.sum())
    f = np.zeros(mask.shape)
    if n == 0:
        return f
    index = np.full(mask.shape, -1, np.int64)
    index[interior] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        neighbour = np.roll(index, (-dy, -dx), axis=(0, 1))  # interior never touches the frame
        both = interior & (neighbour >= 0)
        rows.append(index[both])
        cols.append(neighbour[both])
        vals.append(np.full(int(both.sum()), -1.0))
    laplacian = scipy.sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    f[interior] = np.maximum(scipy.sparse.linalg.spsolve(laplacian, np.full(n, 4.0)), 0.0)
    return f


def _lattice_triangles(index: np.ndarray) -> np.ndarray:
    """Triangles over every 2x2 block of the lattice with at least three vertices.

    Corners a b / c d (x right, y down); all windings are counter-clockwise with y down.
    """
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    ia, ib, ic, id_ = a >= 0, b >= 0, c >= 0, d >= 0
    full = ia & ib & ic & id_
    parts = [
        np.stack([a, b, c], 1)[full | (ia & ib & ic & ~id_)],
        np.stack([b, d, c], 1)[full | (~ia & ib & ic & id_)],
        np.stack([a, d, c], 1)[ia & ~ib & ic & id_],
        np.stack([a, b, d], 1)[ia & ib & ~ic & id_],
    ]
    return np.concatenate(parts)


def _bleed_colours(prepared: PreparedImage) -> np.ndarray:
    """RGB with each outside pixel taking its nearest subject colour, so bilinear lookups
    at the silhouette never blend in the transparent background."""
    _, (iy, ix) = ndimage.distance_transform_edt(~prepared.mask, return_indices=True)
    return prepared.rgba[iy, ix, :3].astype(np.float32)
