"""Synthetic scenes with ground truth, for tests and benchmarks.

An asymmetric object (a box with a sphere sticking out of its top corner), one flat colour
per box side and per sphere hemisphere, rendered unlit by the CPU rasteriser into an orbit
of views laid out like SV3D's (the project's camera conventions, relative azimuths from
the reference front view). And a concave one: an open cup painted in small random
colour cells (``textured_cup``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from blend123.protocol.camera import (
    DEFAULT_FOV_DEG,
    DEFAULT_RADIUS,
    ORBIT_VIEWS,
    SphericalPose,
    orbit_relative_azimuths,
    world_azimuth,
)

from blend123.backend.raster import rasterize

BOX_MIN = np.array([-0.35, -0.2, -0.25])
BOX_MAX = np.array([0.1, 0.2, 0.1])
SPHERE_CENTRE = np.array([0.15, 0.0, 0.1])
SPHERE_RADIUS = 0.22

#: Box side colours by outward axis: -X, +X, -Y (the front, seen by the reference), +Y, -Z, +Z.
BOX_COLOURS = np.array(
    [[40, 160, 60], [200, 200, 60], [210, 40, 40], [40, 60, 200], [120, 120, 120], [230, 130, 20]], dtype=np.uint8
)
SPHERE_TOP_COLOUR = np.array([240, 240, 240], dtype=np.uint8)
SPHERE_BOTTOM_COLOUR = np.array([140, 40, 160], dtype=np.uint8)
#: The cup's outer box (low, high corners) and its wall thickness.
CUP_OUTER = (np.array([-0.25, -0.25, -0.2]), np.array([0.25, 0.25, 0.2]))
CUP_WALL = 0.06
#: Background RGB under alpha 0: loud, so any leak into a baked texture shows.
BACKGROUND = np.array([255, 0, 255], dtype=np.uint8)


@dataclass
class SyntheticScene:
    vertices: np.ndarray  # (V, 3) rendered mesh (box and sphere, overlapping)
    faces: np.ndarray  # (F, 3)
    face_colours: np.ndarray  # (F, 3) uint8
    images: np.ndarray  # (N, H, W, 4) uint8, alpha 255 on the subject, 0 elsewhere
    c2w: np.ndarray  # (N, 4, 4)
    camera_angle_x: float

    def surface_points(self, count: int, seed: int = 0) -> np.ndarray:
        """Uniform samples of the object's outer surface (the union of box and sphere)."""
        rng = np.random.default_rng(seed)
        d = BOX_MAX - BOX_MIN
        box_area = 2 * (d[0] * d[1] + d[1] * d[2] + d[0] * d[2])
        sphere_area = 4 * math.pi * SPHERE_RADIUS**2
        n_box = int(count * box_area / (box_area + sphere_area))
        box = _box_surface_samples(rng, 2 * n_box)
        box = box[np.linalg.norm(box - SPHERE_CENTRE, axis=1) >= SPHERE_RADIUS]
        sphere = rng.normal(size=(2 * (count - n_box), 3))
        sphere = SPHERE_CENTRE + SPHERE_RADIUS * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
        sphere = sphere[~(np.all(sphere > BOX_MIN, axis=1) & np.all(sphere < BOX_MAX, axis=1))]
        return np.concatenate([box, sphere])


def box_and_sphere() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, face colours) of the test object."""
    box = trimesh.creation.box(bounds=np.stack([BOX_MIN, BOX_MAX]))
    normals = box.face_normals
    axis = np.abs(normals).argmax(1)
    box_colours = BOX_COLOURS[2 * axis + (normals[np.arange(len(axis)), axis] > 0)]
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)
    sphere.apply_translation(SPHERE_CENTRE)
    top = sphere.triangles_center[:, 2] > SPHERE_CENTRE[2]
    sphere_colours = np.where(top[:, None], SPHERE_TOP_COLOUR, SPHERE_BOTTOM_COLOUR)
    vertices = np.concatenate([box.vertices, sphere.vertices])
    faces = np.concatenate([box.faces, sphere.faces + len(box.vertices)])
    return vertices, faces, np.concatenate([box_colours, sphere_colours]).astype(np.uint8)


def textured_cup(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, faces, face colours) of an open square cup painted in random colour cells.

    Its inside is a concavity: the visual hull fills it, only the colours show it. Walls
    and floor are ``CUP_WALL`` thick; the cells are small, so every patch has texture.
    """
    lo, hi = CUP_OUTER
    spacing = 0.01
    axes = [np.arange(lo[d] - 2 * spacing, hi[d] + 3 * spacing, spacing) for d in range(3)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")

    def inside_box(box_lo: np.ndarray, box_hi: np.ndarray) -> np.ndarray:
        # Signed distance (positive inside) of an axis-aligned box, up to the corners.
        return np.minimum.reduce([gx - box_lo[0], box_hi[0] - gx, gy - box_lo[1], box_hi[1] - gy, gz - box_lo[2], box_hi[2] - gz])

    field = np.minimum(inside_box(lo, hi), -inside_box(*cup_cavity()))
    verts, faces, _, _ = marching_cubes(field, level=0.0, spacing=(spacing,) * 3)
    verts = verts + np.array([a[0] for a in axes])
    faces = faces[:, ::-1]  # skimage winds them inward for a positive-inside field
    palette = np.random.default_rng(seed).integers(20, 236, size=(512, 3)).astype(np.uint8)
    return verts, faces, cell_colours(verts[faces].mean(1), 0.05, palette)


def cell_colours(points: np.ndarray, cell: float, palette: np.ndarray) -> np.ndarray:
    """A colour of ``palette`` for each of ``points`` (N, 3), the same within each cube of
    side ``cell``, neighbouring cubes' drawn apart (a spatial hash): a painted texture that
    no surface's shape lines up with."""
    index = np.floor(points / cell).astype(np.int64)
    return palette[(index[:, 0] * 73856093 ^ index[:, 1] * 19349663 ^ index[:, 2] * 83492791) % len(palette)]


def cup_cavity() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of the cup's open inside (reaching past the rim)."""
    lo, hi = CUP_OUTER
    return lo + CUP_WALL, np.array([hi[0] - CUP_WALL, hi[1] - CUP_WALL, hi[2] + 0.1])


def orbit_cameras(
    count: int = ORBIT_VIEWS, elevations_deg: tuple[float, ...] = (0.0, 20.0), radius: float = DEFAULT_RADIUS
) -> np.ndarray:
    """(count, 4, 4) c2w of an orbit about the origin, elevations cycling through the list."""
    return np.stack(
        [
            SphericalPose(elevations_deg[i % len(elevations_deg)], world_azimuth(rel), radius).to_c2w()
            for i, rel in enumerate(orbit_relative_azimuths(count))
        ]
    )


def render(
    vertices: np.ndarray, faces: np.ndarray, face_colours: np.ndarray, c2w: np.ndarray, camera_angle_x: float, size: int
) -> np.ndarray:
    """Unlit RGBA render (size, size, 4): face colour where covered, else transparent."""
    frags = rasterize(c2w, camera_angle_x, size, size, vertices, faces)
    image = np.zeros((size, size, 4), dtype=np.uint8)
    image[..., :3] = BACKGROUND
    image[frags.covered, :3] = face_colours[frags.face[frags.covered]]
    image[frags.covered, 3] = 255
    return image


def render_antialiased(
    vertices: np.ndarray, faces: np.ndarray, face_colours: np.ndarray, c2w: np.ndarray, camera_angle_x: float, size: int, supersample: int = 4
) -> np.ndarray:
    """:func:`render` at ``supersample`` x the size, box-filtered down: edges partly covered,
    as a renderer's or a diffusion model's are (straight colour, fractional alpha)."""
    big = render(vertices, faces, face_colours, c2w, camera_angle_x, size * supersample).astype(np.float64)
    alpha = big[..., 3:] / 255.0
    blocks = (size, supersample, size, supersample)
    premultiplied = (big[..., :3] * alpha).reshape(*blocks, 3).mean(axis=(1, 3))
    coverage = alpha.reshape(*blocks, 1).mean(axis=(1, 3))
    straight = np.where(coverage > 0, premultiplied / np.maximum(coverage, 1e-9), 0.0)
    return np.clip(np.rint(np.concatenate([straight, 255.0 * coverage], axis=-1)), 0, 255).astype(np.uint8)


def make_scene(size: int = 128, views: int = ORBIT_VIEWS, fov_deg: float = DEFAULT_FOV_DEG) -> SyntheticScene:
    vertices, faces, colours = box_and_sphere()
    c2w = orbit_cameras(views)
    angle = math.radians(fov_deg)
    images = np.stack([render(vertices, faces, colours, m, angle, size) for m in c2w])
    return SyntheticScene(vertices, faces, colours, images, c2w, angle)


def _box_surface_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    size = BOX_MAX - BOX_MIN
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])  # faces normal to x, y, z
    axis = rng.choice(3, size=count, p=areas / areas.sum())
    points = BOX_MIN + rng.random((count, 3)) * size
    side = rng.integers(0, 2, size=count)
    points[np.arange(count), axis] = np.where(side, BOX_MAX[axis], BOX_MIN[axis])
    return points
