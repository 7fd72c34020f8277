"""GLB export: trimesh round trip, material, and a real Blender import."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import trimesh
from .recon_fixtures import FAST_OPTIONS, HAS_BPY, blender_import, reconstruction
from scipy.spatial import cKDTree

from blend123.backend.reconstruction.export import blender_to_gltf, export_glb, gltf_to_blender


def _glb_json(glb: bytes) -> dict:
    magic, _, _ = struct.unpack("<4sII", glb[:12])
    assert magic == b"glTF"
    length, kind = struct.unpack("<I4s", glb[12:20])
    assert kind == b"JSON"
    return json.loads(glb[20 : 20 + length])


def test_axis_conversion_is_the_blender_importer_inverse():
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(blender_to_gltf(p), [[1.0, 3.0, -2.0]])
    np.testing.assert_allclose(gltf_to_blender(blender_to_gltf(p)), p)


def test_glb_loads_back_with_trimesh():
    result, _ = reconstruction()
    mesh = trimesh.load(io.BytesIO(result.glb), file_type="glb", force="mesh", process=False)
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    image = mesh.visual.material.baseColorTexture
    assert image.size == (FAST_OPTIONS.texture_size, FAST_OPTIONS.texture_size)
    np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), result.texture)
    np.testing.assert_allclose(gltf_to_blender(mesh.vertices), result.vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, result.faces)
    # trimesh reads UVs back in the OpenGL convention: equal means the v flip is right.
    np.testing.assert_allclose(mesh.visual.uv, result.uvs, atol=1e-6)


def test_glb_material_and_normals():
    result, _ = reconstruction()
    gltf = _glb_json(result.glb)
    material = gltf["materials"][0]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0
    assert "baseColorTexture" in pbr
    assert gltf["images"][0]["mimeType"] == "image/png"
    attributes = gltf["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attributes)


def test_normals_are_outward_and_smooth_across_uv_seams():
    result, _ = reconstruction()
    # The NORMAL attribute as stored (trimesh.load would recompute normals).
    (geometry,) = trimesh.exchange.gltf.load_glb(io.BytesIO(result.glb))["geometry"].values()
    normals = gltf_to_blender(geometry["vertex_normals"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    centre = result.vertices.mean(0)
    assert (np.einsum("ij,ij->i", normals, result.vertices - centre) > 0).mean() > 0.95
    # Vertices duplicated along seams share one normal.
    _, inverse, counts = np.unique(result.vertices, axis=0, return_inverse=True, return_counts=True)
    seam = counts[inverse.reshape(-1)] > 1
    assert seam.sum() > 10
    for group in np.unique(inverse.reshape(-1)[seam])[:200]:
        members = normals[inverse.reshape(-1) == group]
        np.testing.assert_allclose(members, members[:1].repeat(len(members), 0), atol=1e-5)


def test_export_keeps_a_small_mesh_exactly():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    texture = np.zeros((32, 32, 4), dtype=np.uint8)
    texture[:16, :, 0] = 255  # top half red, as an image: V = 1 is red
    mesh = trimesh.load(io.BytesIO(export_glb(vertices, faces, uvs, texture)), file_type="glb", force="mesh")
    np.testing.assert_allclose(gltf_to_blender(mesh.vertices), vertices)
    np.testing.assert_allclose(mesh.visual.uv, uvs)
    assert mesh.volume > 0  # winding preserved by the axis change


@pytest.mark.blender
@pytest.mark.skipif(not HAS_BPY, reason="needs the bpy module (real Blender)")
def test_blender_import_puts_the_mesh_where_the_cameras_saw_it(tmp_path):
    result, _ = reconstruction()
    path = tmp_path / "reconstruction.glb"
    path.write_bytes(result.glb)
    imported = blender_import(path)
    positions = np.array(imported["loop_positions"])
    np.testing.assert_allclose(positions.min(0), result.vertices.min(0), atol=1e-5)
    np.testing.assert_allclose(positions.max(0), result.vertices.max(0), atol=1e-5)
    assert imported["faces"] == len(result.faces)
    assert [FAST_OPTIONS.texture_size] * 2 in imported["images"]
    # Every Blender face corner has one of our vertices with the same position AND UV:
    # Blender's UVs (origin bottom-left) equal ours, so the texture lands where baked.
    ours = np.concatenate([result.vertices, result.uvs], axis=1)
    theirs = np.concatenate([positions, np.array(imported["loop_uvs"])], axis=1)
    distance, _ = cKDTree(ours).query(theirs)
    assert distance.max() < 1e-4
