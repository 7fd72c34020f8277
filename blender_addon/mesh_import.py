"""Fast mesh import: attribute API for geometry and UVs, packed texture bytes for images.

Vertices split for UV seams are welded first (``core.weld``): Blender keeps UVs per face
corner, so the surface stays connected and the seams live in the UV map only.

``from_pydata`` or per-element loops cost seconds for 100k faces; ``foreach_set`` on the
``position`` / ``.corner_vert`` attributes and a CORNER ``FLOAT2`` UV layer costs
milliseconds.
"""

from __future__ import annotations

import bpy
import numpy as np

from .core.glb import embedded_images, png_size
from .core.weld import weld
from .images import image_from_encoded, new_image


def build_mesh(name: str, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None) -> bpy.types.Mesh:
    """A welded triangle mesh; ``uvs`` (V, 2) per input vertex, origin bottom-left, or None."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("the mesh has face indices outside its vertex list")
    welded = weld(vertices, faces, uvs)
    vertices, faces = welded.vertices, welded.faces
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.loops.add(faces.size)
    mesh.polygons.add(len(faces))
    mesh.attributes["position"].data.foreach_set("vector", vertices.ravel())
    mesh.attributes[".corner_vert"].data.foreach_set("value", faces.ravel())
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if welded.corner_uvs is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.uv.foreach_set("vector", welded.corner_uvs.ravel())
    mesh.update(calc_edges=True)
    return mesh


def texture_image(name: str, texture: np.ndarray, glb: bytes = b"") -> bpy.types.Image:
    """The albedo image: the GLB's own PNG when it matches ``texture``, else the pixels."""
    t_h, t_w = texture.shape[:2]
    for mime, data in embedded_images(glb) if glb else []:
        if mime == "image/png" and png_size(data) == (t_w, t_h):
            return image_from_encoded(name, data, (t_w, t_h), "png")
    return new_image(name, texture)


def albedo_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """Principled BSDF with the albedo as base colour (the light is not baked in)."""
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 makes materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.location = (-400, 300)
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 1.0
    bsdf.inputs["Metallic"].default_value = 0.0
    return mat


def import_textured_mesh(
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray,
    texture: np.ndarray,
    collection: bpy.types.Collection,
    glb: bytes = b"",
) -> bpy.types.Object:
    mesh = build_mesh(name, vertices, faces, uvs)
    mesh.materials.append(albedo_material(name, texture_image(f"{name} albedo", texture, glb)))
    mesh.shade_smooth()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    return obj
