"""Mesh clean-up and UV unwrapping, each on small known inputs."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from blend123.backend.reconstruction.carve import HullGrid
from blend123.backend.reconstruction.mesh import (
    HullParts,
    decimate,
    drop_coincident_faces,
    extract_surface,
    largest_component,
    signed_volume,
    surface_faces,
    surface_points,
    taubin_smooth,
    vertex_normals,
)
from blend123.backend.reconstruction.texels import texel_surface
from blend123.backend.reconstruction.uv import unwrap


def _sphere_grid(radius: float = 0.5, n: int = 40) -> HullGrid:
    spacing = 1.4 / (n - 1)
    origin = np.full(3, -0.7)
    axes = origin[0] + spacing * np.arange(n)
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    field = (radius - np.sqrt(x**2 + y**2 + z**2)).astype(np.float32)
    return HullGrid(origin=origin, spacing=spacing, field=field)


def test_marching_cubes_surface_sits_on_the_zero_level_and_faces_outward():
    v, f = extract_surface(_sphere_grid())
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.5, atol=0.01)
    assert signed_volume(v, f) > 0
    assert abs(signed_volume(v, f) - 4 / 3 * np.pi * 0.125) < 0.01


def test_the_faces_of_a_surface_are_foreseen_before_it_is_made():
    # The uv stage is planned from them as soon as the hull exists: a sphere, a thin rod
    # (a table leg two voxels across) and the two together, each to within 1%.
    sphere = _sphere_grid(n=60)
    axes = sphere.origin[0] + sphere.spacing * np.arange(60)
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    rod = HullGrid(sphere.origin, sphere.spacing, (1.1 * sphere.spacing - np.hypot(x - 0.6, y - 0.6)).astype(np.float32))
    both = HullGrid(sphere.origin, sphere.spacing, np.maximum(sphere.field, rod.field))
    for grid in (sphere, rod, both):
        made = len(extract_surface(grid, smooth_sigma=0.5)[1])
        assert abs(surface_faces(grid) - made) <= 0.01 * made, (surface_faces(grid), made)
    assert surface_faces(both) > surface_faces(sphere) > 2000
    # Nothing to part: no faces.
    assert surface_faces(HullGrid(sphere.origin, sphere.spacing, np.full((8, 8, 8), -1.0, np.float32))) == 0


def test_largest_component_drops_floaters():
    big = trimesh.creation.icosphere(subdivisions=3)
    small = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    small.apply_translation([3, 0, 0])
    v = np.concatenate([small.vertices, big.vertices])
    f = np.concatenate([small.faces, big.faces + len(small.vertices)])
    kept_v, kept_f = largest_component(v, f)
    assert len(kept_f) == len(big.faces) and len(kept_v) == len(big.vertices)
    assert np.abs(kept_v).max() <= 1.0 + 1e-9


def test_small_parts_the_hull_keeps_apart_stay_and_floaters_cut_off_the_body_go():
    """A stretcher the masks carve as pieces of its own is subject; a piece that photo
    carving cut loose of the body's voxels is a floater, though both are small."""
    n, spacing = 48, 1.6 / 47
    axes = -0.8 + spacing * np.arange(n)
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")

    def ball(centre, radius):
        return radius - np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)

    body, island = ball((0, 0, -0.1), 0.5), ball((0.7, 0, 0), 0.08)
    hull = HullGrid(np.full(3, -0.8), spacing, np.maximum(body, island).astype(np.float32))
    # Photo carving takes the body's cap off, leaving a small ball of it behind.
    carved = np.maximum.reduce([np.minimum(body, 0.2 - z), island, ball((0, 0, 0.33), 0.08)])
    v, f = extract_surface(HullGrid(hull.origin, spacing, carved.astype(np.float32)))
    kept_v, _ = largest_component(v, f, 0.05, HullParts.of(hull))
    assert (np.linalg.norm(kept_v - [0.7, 0, 0], axis=1) < 0.12).any()  # the island stays
    assert not (np.linalg.norm(kept_v - [0, 0, 0.33], axis=1) < 0.12).any()  # the floater goes
    plain_v, _ = largest_component(v, f, 0.05)
    assert not (np.linalg.norm(plain_v - [0.7, 0, 0], axis=1) < 0.12).any()  # too small alone


def test_a_piece_cut_loose_of_a_thin_part_of_the_body_stays():
    """A stretcher the hull holds joined to the body (its masks placed within their pixels):
    the piece photo carving cuts loose of it is subject; one cut loose of the body's thick
    voxels is still a floater."""
    n, spacing = 48, 1.6 / 47
    axes = -0.8 + spacing * np.arange(n)
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    body = 0.45 - np.sqrt(x**2 + y**2 + (z + 0.1) ** 2)
    rod = np.minimum(1.4 * spacing - np.sqrt(y**2 + (z + 0.1) ** 2), np.minimum(x, 0.75 - x))  # 3 voxels across
    hull = HullGrid(np.full(3, -0.8), spacing, np.maximum(body, rod).astype(np.float32))
    floater = 0.08 - np.sqrt(x**2 + y**2 + (z - 0.3) ** 2)
    # Photo carving cuts the rod at x = 0.55 and takes the body's cap off, leaving a ball.
    gap = np.abs(x - 0.55) - 2.0 * spacing
    carved = np.maximum.reduce([np.minimum(body, 0.17 - z), np.minimum(rod, gap), floater])
    v, f = extract_surface(HullGrid(hull.origin, spacing, carved.astype(np.float32)))
    parts = HullParts.of(hull)
    assert parts.labels.max() == 1  # one part: the rod is the body's
    kept_v, _ = largest_component(v, f, 0.05, parts)
    assert (kept_v[:, 0] > 0.62).any()  # the rod's end stays
    assert not (np.linalg.norm(kept_v - [0, 0, 0.3], axis=1) < 0.1).any()  # the floater goes
    assert not (largest_component(v, f, 0.05)[0][:, 0] > 0.62).any()  # too small alone
    # A rod twice as thick is no thin part: what is cut loose of it goes like a floater.
    thick_rod = np.minimum(2.8 * spacing - np.sqrt(y**2 + (z + 0.1) ** 2), np.minimum(x, 0.75 - x))
    thick = HullGrid(hull.origin, spacing, np.maximum(body, thick_rod).astype(np.float32))
    cut = np.maximum.reduce([np.minimum(body, 0.17 - z), np.minimum(thick_rod, gap), floater])
    v, f = extract_surface(HullGrid(hull.origin, spacing, cut.astype(np.float32)))
    assert not (largest_component(v, f, 0.05, HullParts.of(thick))[0][:, 0] > 0.62).any()


def test_back_to_back_faces_are_dropped_and_every_normal_is_unit():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    # A fin: one triangle on three sphere vertices and its reverse, the fold a decimated
    # one-voxel sheet can leave.
    fin = np.array([[0, 1, 50], [50, 1, 0]])
    faces = np.concatenate([sphere.faces, fin])
    v, f = drop_coincident_faces(sphere.vertices, faces)
    assert len(f) == len(sphere.faces)
    assert not (np.sort(f, 1)[:, None] == np.sort(fin, 1)[None]).all(-1).any()
    # Alone, such a pair cancels at its vertices; the normal must still be unit length.
    pair_v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    normals = vertex_normals(pair_v, np.array([[0, 1, 2], [2, 1, 0]]))
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_taubin_smooths_noise_without_shrinking():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    noisy = sphere.vertices + np.random.default_rng(0).normal(0, 0.02, sphere.vertices.shape)
    smoothed = taubin_smooth(noisy, sphere.faces, iterations=10)
    radius_noisy = np.linalg.norm(noisy, axis=1)
    radius = np.linalg.norm(smoothed, axis=1)
    assert radius.std() < 0.5 * radius_noisy.std()
    assert abs(radius.mean() - 1.0) < 0.01


def test_decimate_respects_the_budget_and_keeps_the_shape():
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20480 faces
    v, f = decimate(sphere.vertices, sphere.faces, 3000)
    assert 2500 < len(f) <= 3000
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=0.02)
    v2, f2 = decimate(sphere.vertices, sphere.faces, 50_000)
    assert len(f2) == len(sphere.faces)


def test_surface_points_spread_by_area_with_their_faces_normals():
    """A box whose top is two big triangles and whose other faces are finely split: the
    points fall on each part in proportion to its area, not to its vertices."""
    box = trimesh.creation.box((1.0, 1.0, 0.2))
    sides = trimesh.Trimesh(box.vertices, box.faces[np.abs(box.face_normals[:, 2]) < 0.5]).subdivide().subdivide()
    top = box.faces[box.face_normals[:, 2] > 0.5]
    bottom = box.faces[box.face_normals[:, 2] < -0.5]
    mesh = trimesh.util.concatenate([sides, trimesh.Trimesh(box.vertices, np.concatenate([top, bottom]))])
    points, normals = surface_points(mesh.vertices, mesh.faces, 20_000, seed=3)
    on_top = points[:, 2] > 0.1 - 1e-6
    assert abs(on_top.mean() - 1.0 / 2.8) < 0.02  # the top's share of the area (1 of 2.8)
    np.testing.assert_allclose(normals[on_top], np.tile([0.0, 0.0, 1.0], (on_top.sum(), 1)), atol=1e-6)
    assert np.abs(points).max(axis=0) == pytest.approx([0.5, 0.5, 0.1], abs=1e-6)  # on the box, not off it
    again, _ = surface_points(mesh.vertices, mesh.faces, 20_000, seed=3)
    np.testing.assert_array_equal(points, again)
    empty, _ = surface_points(mesh.vertices, mesh.faces[:0], 10)
    assert empty.shape == (0, 3)


def test_unwrap_keeps_faces_and_gives_padded_charts():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    uv_mesh = unwrap(sphere.vertices, sphere.faces, texture_size=256, padding=4)
    # Same faces in the same order, only vertices split along seams.
    np.testing.assert_array_equal(uv_mesh.source[uv_mesh.faces], sphere.faces)
    np.testing.assert_allclose(uv_mesh.vertices, sphere.vertices[uv_mesh.source])
    assert uv_mesh.uvs.min() >= 0 and uv_mesh.uvs.max() <= 1
    # No two charts overlap: rasterised in UV space, each texel belongs to one face
    # whose UV triangle has positive area.
    tri = uv_mesh.uvs[uv_mesh.faces]
    area = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.abs(area) > 0).all()
    normals = np.zeros_like(uv_mesh.vertices)
    surface = texel_surface(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uvs, normals + [0, 0, 1], 256)
    assert len(surface.rows) > 0.3 * 256 * 256
    np.testing.assert_allclose(np.linalg.norm(surface.positions, axis=1), 1.0, atol=0.03)
