"""From a hull field to a clean triangle mesh: marching cubes, largest part, smoothing,
decimation, normals. Meshes are plain ``(vertices (V, 3), faces (F, 3))`` arrays with
faces counter-clockwise seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import fast_simplification
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from skimage.measure import marching_cubes

from .carve import HullGrid


def extract_surface(grid: HullGrid, smooth_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of the hull field, oriented outward; ``smooth_sigma`` in voxels."""
    field = grid.field
    if smooth_sigma > 0:
        smoothed = ndimage.gaussian_filter(field, smooth_sigma, mode="nearest")
        # Smoothing may fill a voxel in but never empty one: a leg or a handle a voxel or
        # two thick is a narrow ridge of the field that a blur would sink below zero.
        field = np.where(field > 0, np.maximum(smoothed, field), smoothed)
    if not (field.max() > 0 > field.min()):
        raise ValueError("the visual hull is empty or fills the whole carving volume")
    verts, faces, _, _ = marching_cubes(field, level=0.0, spacing=(grid.spacing,) * 3, allow_degenerate=False)
    verts = verts.astype(np.float64) + grid.origin
    faces = faces.astype(np.int64)
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    return verts, faces


def surface_faces(grid: HullGrid) -> int:
    """The faces :func:`extract_surface` will make of ``grid``, foreseen without making them:
    marching cubes lays about two triangles in each cell whose corners the surface parts
    (within 0.5% on the quick proxy's orbits of twelve objects), in a few milliseconds
    where the surface itself takes a tenth of a second or more."""
    inside = grid.field > 0
    if min(inside.shape) < 2:
        return 0
    corners = [inside[i : inside.shape[0] - 1 + i, j : inside.shape[1] - 1 + j, k : inside.shape[2] - 1 + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    some, every = np.logical_or.reduce(corners), np.logical_and.reduce(corners)
    return 2 * int(np.count_nonzero(some & ~every))


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh; negative when its faces are oriented inward."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def connected_parts(vertex_count: int, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex's connected part, and each part's face count."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    return labels, np.bincount(labels[faces[:, 0]], minlength=labels.max() + 1)


def largest_component(
    vertices: np.ndarray, faces: np.ndarray, keep_fraction: float = 0.0, apart: "HullParts | None" = None
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected part with the most faces (drops floaters carved by mask noise),
    and every other part with at least ``keep_fraction`` of its faces (a thin leg that
    came loose from the body is a part of the subject, not noise), or, given ``apart``,
    lying in a part of the visual hull apart from the body (every mask kept it there) or
    in a thin part of it (a piece photo carving cut off a stretcher)."""
    labels, sizes = connected_parts(len(vertices), faces)
    face_labels = labels[faces[:, 0]]
    if keep_fraction <= 0:
        return compact(vertices, faces[face_labels == sizes.argmax()])
    kept = sizes >= max(sizes.max() * keep_fraction, 1)
    if apart is not None:
        for part in np.flatnonzero(~kept & (sizes > 0)):
            kept[part] = apart.holds(vertices[np.unique(faces[face_labels == part])])
    return compact(vertices, faces[kept[face_labels]])


#: A hull part is thin where no hull voxel in the cube ``_THIN_REACH`` voxels about it lies
#: more than ``_THIN_DEPTH`` voxels deep: a stretcher or a handle up to about four voxels
#: across. What photo carving cuts loose there is a piece of it (the table's stretchers,
#: once the hull held them whole); its floaters lie on thick hull (tiles' and the kettle's:
#: 2.4-9 voxels deep). A body thin all over (a plate four voxels thick) keeps its floaters.
_THIN_DEPTH = 2
_THIN_REACH = 3


@dataclass(frozen=True)
class HullParts:
    """The visual hull's voxels by connected part (26-neighbours): which parts stand apart
    from its largest, and where it is thin. A stretcher 1.5 px thin carves as a few pieces
    of its own, which the masks all keep, or as a thin part of the body, which photo
    carving may cut in pieces; what it cuts loose of the body's thick voxels is a floater."""

    grid: HullGrid
    labels: np.ndarray  # (X, Y, Z) int: 0 outside, else the voxel's part
    body: int  # the largest part's label
    thin: np.ndarray  # (X, Y, Z) bool: hull voxels of a thin part

    @classmethod
    def of(cls, grid: HullGrid) -> "HullParts":
        inside = grid.field > 0
        labels, count = ndimage.label(inside, structure=np.ones((3, 3, 3), bool))
        body = int(np.bincount(labels.ravel())[1:].argmax()) + 1 if count else 0
        # More than _THIN_DEPTH deep: no outside voxel within that distance (an erosion by
        # a ball: a distance transform of a thick hull takes thirty times as long).
        ball = np.linalg.norm(np.indices((2 * _THIN_DEPTH + 1,) * 3) - _THIN_DEPTH, axis=0) <= _THIN_DEPTH
        deep = ndimage.binary_erosion(inside, structure=ball)
        thin = inside & ~ndimage.maximum_filter(deep, size=2 * _THIN_REACH + 1)
        return cls(grid, labels, body, thin)

    def holds(self, points: np.ndarray) -> bool:
        """Whether most hull voxels next to ``points`` (a mesh part's vertices, which lie
        between voxel centres) belong to parts other than the body, or to thin parts."""
        cell = (np.asarray(points, np.float64) - self.grid.origin) / self.grid.spacing
        corners = np.floor(cell).astype(np.int64)[:, None, :] + np.array(list(np.ndindex(2, 2, 2)))[None]
        corners = corners.reshape(-1, 3)
        corners = tuple(corners[np.all((corners >= 0) & (corners < self.labels.shape), axis=1)].T)
        found = self.labels[corners]
        kept = (found != self.body) | self.thin[corners]
        kept = kept[found > 0]
        return bool(kept.size) and float(np.mean(kept)) > 0.5


def drop_coincident_faces(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove faces that share all three vertices with another face.

    Decimating a sheet one voxel thin can fold it into back-to-back triangle pairs: they
    enclose nothing, and their opposite normals cancel at the shared vertices.
    """
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    keep = counts[inverse.reshape(-1)] == 1
    if keep.all():
        return vertices, faces
    return compact(vertices, faces[keep])


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unreferenced vertices and faces that repeat a vertex."""
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3)


def taubin_smooth(
    vertices: np.ndarray,
    faces: np.ndarray,
    iterations: int = 10,
    lamb: float = 0.5,
    mu: float = -0.53,
    max_shift: float = np.inf,
    min_part_fraction: float = 0.0,
) -> np.ndarray:
    """Taubin's lambda|mu smoothing with the uniform Laplacian: smooths without shrinking.

    No vertex ends further than ``max_shift`` from where it started: enough to take out
    marching cubes' staircase (under a voxel), too little to thin a leg a few voxels wide,
    which the filter would otherwise treat as noise and shrink. A connected part with
    fewer than ``min_part_fraction`` of the largest part's faces is left as it is: a piece
    a voxel or two across (a thin stretcher carves as a few) has no staircase to take out,
    only a whole to shrink, and the filter pulls every vertex of it toward its middle.
    """
    if iterations <= 0:
        return vertices
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    still = np.zeros(n, dtype=bool)
    if min_part_fraction > 0:
        labels, sizes = connected_parts(n, faces)
        still = sizes[labels] < min_part_fraction * sizes.max()
    degree = np.asarray(adjacency.sum(1)).ravel()
    mean = sparse.diags(1.0 / np.maximum(degree, 1)) @ adjacency
    v = vertices.copy()
    for _ in range(iterations):
        v = v + lamb * (mean @ v - v)
        v = v + mu * (mean @ v - v)
    if np.isfinite(max_shift):
        shift = v - vertices
        length = np.linalg.norm(shift, axis=1, keepdims=True)
        v = vertices + shift * np.minimum(1.0, max_shift / np.maximum(length, 1e-300))
    return np.where(still[:, None], vertices, v)


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation down to at most ``max_faces`` faces."""
    if len(faces) <= max_faces:
        return vertices, faces
    v, f = fast_simplification.simplify(vertices.astype(np.float64), faces.astype(np.int32), target_count=max_faces)
    return compact(np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64))


def surface_points(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points spread uniformly over the surface by area, with their faces' unit
    normals: ``(points (count, 3), normals (count, 3))``, float32, the same for the same seed.
    A decimated mesh's vertices crowd where it curves and leave its flat parts nearly
    bare (a table's top), which is where a fit on vertices would look least."""
    corners = np.asarray(vertices, np.float64)[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if len(faces) == 0 or area.sum() <= 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    # Uniform in the triangle: sqrt on the first coordinate keeps the density even.
    root, along = np.sqrt(rng.random(count)), rng.random(count)
    weights = np.stack([1.0 - root, root * (1.0 - along), root * along], axis=1)
    points = np.einsum("kc,kcd->kd", weights, corners[face])
    normals = cross[face] / np.maximum(area[face], 1e-30)[:, None]
    return points.astype(np.float32), normals.astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals."""
    face_n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.where(length > 0, length, 1.0)
    # A vertex whose faces cancel out or have no area still needs a unit normal (glTF).
    normals[length[:, 0] <= 0] = (0.0, 0.0, 1.0)
    return normals
