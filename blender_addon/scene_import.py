"""Putting backend results into the scene, and reading the scene's subject frame.

Results live in a ``blend123`` collection, one child collection per job named after it.
Everything the backend sends is about the subject at the origin with the reference camera
at -90 deg; :class:`SceneFrame` maps it to where the subject and reference camera are.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .core.frame import SceneFrame, lens_for_fov, look_at_matrix
from .images import new_image
from .mesh_import import import_textured_mesh
from .planes import add_camera_plane, camera_optics
from .protocol.messages import Mesh, View

ROOT_COLLECTION = "blend123"
REFERENCE_CAMERA = "blend123 reference camera"


class SceneSetupError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --- reading the scene --------------------------------------------------------------------------


def subject_centre(scene: bpy.types.Scene) -> Vector:
    settings = scene.blend123
    if settings.centre_mode == "OBJECT":
        obj = settings.subject
        if obj is None:
            raise SceneSetupError("no subject object is set", "pick the subject object, or use the 3D cursor as the centre")
        corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
        return sum(corners, Vector()) / 8.0
    return scene.cursor.location.copy()


def root_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    root = scene.collection.children.get(ROOT_COLLECTION)
    if root is None:
        root = bpy.data.collections.new(ROOT_COLLECTION)
        scene.collection.children.link(root)
    return root


def job_collection(scene: bpy.types.Scene, kind: str, job_id: str) -> bpy.types.Collection:
    coll = bpy.data.collections.new(f"{kind} {job_id[:8]}")
    coll["blend123_job"] = job_id
    root_collection(scene).children.link(coll)
    return coll


def reference_camera(scene: bpy.types.Scene, create: bool = True) -> bpy.types.Object:
    """The camera that saw the reference image; a front view about the centre when unset."""
    settings = scene.blend123
    if settings.reference_camera is not None:
        return settings.reference_camera
    if not create:
        raise SceneSetupError("no reference camera", "set one in the blend123 panel")
    centre = np.array(subject_centre(scene))
    e = math.radians(settings.reference_elevation)
    position = centre + settings.reference_distance * np.array([0.0, -math.cos(e), math.sin(e)])
    data = bpy.data.cameras.new(REFERENCE_CAMERA)
    data.sensor_fit = "AUTO"
    data.lens = lens_for_fov(33.8, data.sensor_width)
    cam = bpy.data.objects.new(REFERENCE_CAMERA, data)
    cam.matrix_world = Matrix(look_at_matrix(position, centre).tolist())
    root_collection(scene).objects.link(cam)
    settings.reference_camera = cam
    if scene.camera is None:
        scene.camera = cam
    return cam


def scene_frame(scene: bpy.types.Scene) -> SceneFrame:
    cam = reference_camera(scene)
    try:
        return SceneFrame.from_reference(subject_centre(scene), cam.matrix_world.translation, camera_optics(cam, scene).horizontal_fov_deg())
    except ValueError as exc:
        raise SceneSetupError(str(exc), "move the reference camera away from the subject centre") from None


def use_standard_view(scene: bpy.types.Scene) -> None:
    """AgX/Filmic would tone-map the generated pictures; Standard shows them as they are."""
    if scene.blend123.standard_view and scene.view_settings.view_transform != "Standard":
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"


# --- results --------------------------------------------------------------------------------------


def _matrix(m) -> Matrix:
    return Matrix(np.asarray(m, dtype=np.float64).tolist())


def add_orbit_view(scene: bpy.types.Scene, view: View, frame: SceneFrame, collection: bpy.types.Collection) -> bpy.types.Object:
    """One orbit camera on the ring about the subject, with its image plane."""
    name = f"{collection.name} view {view.index:02d}"
    data = bpy.data.cameras.new(name)
    data.sensor_fit = "HORIZONTAL"  # generated views are square: the FOV is the same both ways
    data.angle = float(view.camera_angle_x)
    data.clip_start = min(data.clip_start, 0.05 * view.radius)
    cam = bpy.data.objects.new(name, data)
    cam.matrix_world = _matrix(frame.c2w_to_scene(view.c2w))
    cam["blend123_index"] = view.index
    cam["blend123_elevation"] = view.elevation
    cam["blend123_azimuth"] = view.azimuth
    collection.objects.link(cam)
    image = new_image(name, view.image)
    add_camera_plane(cam, image, collection, scene, view.radius, scene.blend123.plane_distance, f"{name} plane")
    use_standard_view(scene)
    return cam


def add_novel_view(scene: bpy.types.Scene, view: View, camera: bpy.types.Object, collection: bpy.types.Collection) -> bpy.types.Object:
    """The view as an image plane in front of the camera that asked for it."""
    name = f"{collection.name} {camera.name}"
    image = new_image(name, view.image)
    distance = (camera.matrix_world.translation - subject_centre(scene)).length
    plane = add_camera_plane(camera, image, collection, scene, distance, scene.blend123.plane_distance, f"{name} plane")
    use_standard_view(scene)
    return plane


def replace_live_plane(scene: bpy.types.Scene, view: View, camera: bpy.types.Object) -> bpy.types.Object:
    """Live preview keeps one plane per camera: the newest view replaces the last one."""
    root = root_collection(scene)
    coll = root.children.get("live preview")
    if coll is None:
        coll = bpy.data.collections.new("live preview")
        root.children.link(coll)
    for obj in list(coll.objects):
        if obj.parent == camera:
            mesh, mats = obj.data, list(obj.data.materials)
            bpy.data.objects.remove(obj)
            for mat in mats:
                for node in mat.node_tree.nodes if mat and mat.node_tree else []:
                    if node.type == "TEX_IMAGE" and node.image and node.image.users <= 1:
                        bpy.data.images.remove(node.image)
                if mat and mat.users == 0:
                    bpy.data.materials.remove(mat)
            if mesh.users == 0:
                bpy.data.meshes.remove(mesh)
    return add_novel_view(scene, view, camera, coll)


def add_mesh(scene: bpy.types.Scene, mesh: Mesh, frame: SceneFrame, collection: bpy.types.Collection) -> bpy.types.Object:
    """The reconstructed mesh at the subject: its object matrix is the scene frame."""
    obj = import_textured_mesh(f"{collection.name} mesh", mesh.vertices, mesh.faces, mesh.uvs, mesh.texture, collection, mesh.glb)
    obj.matrix_world = _matrix(frame.to_scene())
    if mesh.light_json:
        obj["blend123_light_json"] = mesh.light_json
        obj["blend123_frame"] = frame.as_list()
    return obj
