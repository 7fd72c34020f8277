"""Binary glTF (GLB) export of a textured mesh.

The mesh keeps the world frame of the input cameras (no re-centring or re-scaling), only
converted from Blender's Z-up to glTF's Y-up: Blender ``(x, y, z)`` -> glTF
``(x, z, -y)``, the inverse of what Blender's glTF importer applies, so an import puts
the object exactly where the cameras saw it. UVs are given in the OpenGL/Blender
convention (origin bottom-left); trimesh flips V to glTF's top-left origin on export.
"""

from __future__ import annotations

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial
from trimesh.visual.texture import TextureVisuals

from .mesh import vertex_normals

#: Rotation taking Blender (Z up) coordinates to glTF (Y up): a proper rotation, so face
#: winding (counter-clockwise from outside) is unchanged.
BLENDER_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def blender_to_gltf(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ BLENDER_TO_GLTF.T


def gltf_to_blender(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ BLENDER_TO_GLTF


def export_glb(
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    texture: np.ndarray,
    name: str = "reconstruction",
) -> bytes:
    """GLB bytes: one mesh, PBR material (base colour texture, metallic 0, roughness 1).

    ``vertices`` in Blender's frame, ``uvs`` with origin bottom-left, ``texture``
    (T, T, 3|4) uint8 with the first row at the top. Normals are smooth across UV seams:
    they are averaged over vertices sharing a position.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    normals = _seamless_normals(vertices, faces)
    material = PBRMaterial(
        name=name,
        baseColorTexture=Image.fromarray(np.ascontiguousarray(texture)),
        metallicFactor=0.0,
        roughnessFactor=1.0,
        alphaMode="OPAQUE",
    )
    mesh = trimesh.Trimesh(
        vertices=blender_to_gltf(vertices),
        faces=faces,
        vertex_normals=blender_to_gltf(normals),
        visual=TextureVisuals(uv=np.asarray(uvs, dtype=np.float64), material=material),
        process=False,
    )
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name=name, node_name=name)
    return trimesh.exchange.gltf.export_glb(scene, include_normals=True)


def _seamless_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertex normals computed on the mesh welded by position, so seams do not show."""
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return vertex_normals(unique, inverse[faces])[inverse]
