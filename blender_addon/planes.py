"""Image planes that fill a camera's frame, with a shadeless material that keeps alpha."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from .core.frame import CameraOptics, PlaneGeometry, image_plane, plane_distance


def camera_optics(camera: bpy.types.Object, scene: bpy.types.Scene) -> CameraOptics:
    data = camera.data
    render = scene.render
    return CameraOptics(
        lens_mm=data.lens,
        sensor_width_mm=data.sensor_width,
        sensor_height_mm=data.sensor_height,
        sensor_fit=data.sensor_fit,
        # Pixel aspect changes the frame like a resolution change does.
        res_x=max(1, round(render.resolution_x * render.pixel_aspect_x)),
        res_y=max(1, round(render.resolution_y * render.pixel_aspect_y)),
        shift_x=data.shift_x,
        shift_y=data.shift_y,
    )


def shadeless_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """Emission of the image's colour, mixed with transparency by its alpha.

    With the Standard view transform, emission strength 1 shows the pixels unchanged.
    """
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0 makes materials without nodes
        mat.use_nodes = True
    mat.surface_render_method = "BLENDED"
    mat.use_backface_culling = False
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    emit = nodes.new("ShaderNodeEmission")
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    links.new(tex.outputs["Color"], emit.inputs["Color"])
    links.new(tex.outputs["Alpha"], mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])
    links.new(emit.outputs["Emission"], mix.inputs[2])
    links.new(mix.outputs["Shader"], out.inputs["Surface"])
    for i, node in enumerate((tex, emit, transparent, mix, out)):
        node.location = (-600 + 250 * i, 0)
    return mat


def plane_mesh(name: str, geometry: PlaneGeometry) -> bpy.types.Mesh:
    """A quad with UVs spanning the whole image, built through the attribute API."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(4)
    mesh.loops.add(4)
    mesh.polygons.add(1)
    mesh.attributes["position"].data.foreach_set("vector", geometry.corners().astype(np.float32).ravel())
    mesh.attributes[".corner_vert"].data.foreach_set("value", np.arange(4, dtype=np.int32))
    mesh.polygons.foreach_set("loop_start", np.zeros(1, dtype=np.int32))
    uv = mesh.uv_layers.new(name="UVMap")
    uv.uv.foreach_set("vector", np.array([0, 0, 1, 0, 1, 1, 0, 1], dtype=np.float32))
    mesh.update(calc_edges=True)
    return mesh


def add_camera_plane(
    camera: bpy.types.Object,
    image: bpy.types.Image,
    collection: bpy.types.Collection,
    scene: bpy.types.Scene,
    distance_to_subject: float,
    fraction: float,
    name: str,
) -> bpy.types.Object:
    """A plane parented to ``camera``, covering its frame (exactly, for a square render)."""
    w, h = image.size
    distance = plane_distance(distance_to_subject, fraction, camera.data.clip_start)
    geometry = image_plane(camera_optics(camera, scene), distance, w / h if h else 1.0)
    obj = bpy.data.objects.new(name, plane_mesh(name, geometry))
    obj.data.materials.append(shadeless_material(name, image))
    collection.objects.link(obj)
    obj.parent = camera
    obj.matrix_parent_inverse = Matrix.Identity(4)  # local frame = the camera's frame
    obj.hide_select = False
    obj["blend123_plane_distance"] = distance
    return obj
