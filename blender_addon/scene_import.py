"""Putting backend results into the scene, and reading the scene's subject frame.

Results live in a ``blend123`` collection: one child collection per orbit or mesh job,
named after it; the explicit previews (one plane per camera, replaced by the next) in
``previews``. Live preview puts nothing in the scene's collections: it replaces the
asking camera's background image in place. Everything the backend sends is about the subject at the origin with the reference camera
at -90 deg; :class:`SceneFrame` maps it to where the subject and reference camera are.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .core.frame import SceneFrame, lens_for_fov, look_at_matrix
from .images import new_image, write_pixels
from .mesh_import import import_textured_mesh
from .planes import add_camera_plane, camera_optics
from .protocol import settings as S
from .protocol.errors import Blend123Error
from .protocol.messages import Mesh, View

ROOT_COLLECTION = "blend123"
PREVIEW_COLLECTION = "previews"
REFERENCE_CAMERA = "blend123 front camera"
#: Custom properties that tag what the add-on made (names may get .001 suffixes).
FRONT_TAG, PREVIEW_TAG, LIVE_TAG = "blend123_front_camera", "blend123_preview_of", "blend123_live_of"


class SceneSetupError(Blend123Error):
    """The scene lacks something a job needs (a subject, a usable reference camera)."""


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
    """The camera that saw the reference image; the front camera when none is set."""
    settings = scene.blend123
    if settings.reference_camera is not None:
        return settings.reference_camera
    if not create:
        raise SceneSetupError("no reference camera", "set one in the blend123 panel")
    return front_camera(scene, make_active=scene.camera is None)


def _front_camera_object(scene: bpy.types.Scene) -> bpy.types.Object | None:
    return next((o for o in scene.objects if o.type == "CAMERA" and o.get(FRONT_TAG)), None)


def front_camera(scene: bpy.types.Scene, make_active: bool = True) -> bpy.types.Object:
    """The front view about the subject centre (on -Y, at the settings' elevation and
    distance) as the reference camera; made once per scene, moved back when asked again."""
    settings = scene.blend123
    centre = np.array(subject_centre(scene))
    e = math.radians(settings.reference_elevation)
    position = centre + settings.reference_distance * np.array([0.0, -math.cos(e), math.sin(e)])
    cam = _front_camera_object(scene)
    if cam is None:
        data = bpy.data.cameras.new(REFERENCE_CAMERA)
        data.sensor_fit = "AUTO"
        data.lens = lens_for_fov(S.REFERENCE_FOV.default, data.sensor_width)  # the default reference lens
        cam = bpy.data.objects.new(REFERENCE_CAMERA, data)
        cam[FRONT_TAG] = True
        root_collection(scene).objects.link(cam)
    cam.matrix_world = Matrix(look_at_matrix(position, centre).tolist())
    settings.reference_camera = cam
    if make_active:
        scene.camera = cam
    return cam


def scene_frame(scene: bpy.types.Scene) -> SceneFrame:
    cam = reference_camera(scene)
    try:
        return SceneFrame.from_reference(subject_centre(scene), cam.matrix_world.translation, camera_optics(cam, scene).horizontal_fov_deg())
    except ValueError as exc:
        raise SceneSetupError(str(exc), "move the reference camera away from the subject centre") from None


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
    return cam


def _child_collection(scene: bpy.types.Scene, name: str) -> bpy.types.Collection:
    root = root_collection(scene)
    coll = root.children.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
        root.children.link(coll)
    return coll


def remove_with_data(obj: bpy.types.Object) -> None:
    """Delete an object and the mesh, materials and images only it used (no orphans)."""
    mesh = obj.data if obj.type == "MESH" else None
    materials = [m for m in mesh.materials if m] if mesh else []
    bpy.data.objects.remove(obj)
    if mesh is not None and mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    for mat in materials:
        if mat.users:
            continue
        images = [n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image] if mat.node_tree else []
        bpy.data.materials.remove(mat)
        for image in images:
            if image.users == 0:
                bpy.data.images.remove(image)


def subject_depth(scene: bpy.types.Scene, camera: bpy.types.Object) -> float:
    """Distance from the camera to the subject centre along its view axis."""
    forward = camera.matrix_world.to_3x3() @ Vector((0.0, 0.0, -1.0))
    return (subject_centre(scene) - camera.matrix_world.translation).dot(forward.normalized())


def add_preview_plane(scene: bpy.types.Scene, view: View, camera: bpy.types.Object) -> bpy.types.Object:
    """The view as an image plane at the subject's depth in front of the camera that asked.

    One per camera: the next preview from the same camera replaces it (and its data)."""
    for obj in [o for o in bpy.data.objects if o.get(PREVIEW_TAG) == camera.name]:
        remove_with_data(obj)
    name = f"preview {camera.name}"
    image = new_image(name, view.image)
    depth = max(subject_depth(scene, camera), 1e-3)
    plane = add_camera_plane(camera, image, _child_collection(scene, PREVIEW_COLLECTION), scene, depth, 1.0, name)
    plane[PREVIEW_TAG] = camera.name
    return plane


def show_live_view(scene: bpy.types.Scene, view: View, camera: bpy.types.Object) -> bpy.types.Image:
    """The live view as the camera's own background image, replaced in place.

    One image per camera, tagged; its pixels are rewritten on each update, so live preview
    adds no objects, materials or images to the file however long it runs."""
    data = camera.data
    slot = next((bg for bg in data.background_images if bg.image is not None and bg.image.get(LIVE_TAG) == camera.name), None)
    h, w = view.image.shape[:2]
    if slot is None:
        image = new_image(f"live {camera.name}", view.image)
        image[LIVE_TAG] = camera.name
        slot = data.background_images.new()
        slot.image = image
        slot.alpha = 1.0
        slot.display_depth = "FRONT"
        slot.frame_method = "CROP"  # cover the frame, as the image planes do
    else:
        image = slot.image
        if tuple(image.size) != (w, h):
            image.scale(w, h)
        write_pixels(image, view.image)
    data.show_background_images = True
    slot.show_background_image = True
    return image


def add_mesh(scene: bpy.types.Scene, mesh: Mesh, frame: SceneFrame, collection: bpy.types.Collection) -> bpy.types.Object:
    """The reconstructed mesh at the subject: its object matrix is the scene frame."""
    obj = import_textured_mesh(f"{collection.name} mesh", mesh.vertices, mesh.faces, mesh.uvs, mesh.texture, collection, mesh.glb)
    obj.matrix_world = _matrix(frame.to_scene())
    obj["blend123_job"] = mesh.job_id
    if mesh.light_json:
        obj["blend123_light_json"] = mesh.light_json
        obj["blend123_frame"] = frame.as_list()
    return obj
