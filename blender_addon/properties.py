"""Scene settings (``scene.blend123``): what to send and where results go."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, FloatVectorProperty, IntProperty, PointerProperty, StringProperty

from .core.requests import JobOptions


def _is_camera(_self, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


def _model_search(_self, _context, _edit_text):
    from . import connection

    return [m.name for m in connection.session().models() if m.available]


class Blend123SceneSettings(bpy.types.PropertyGroup):
    reference_source: EnumProperty(
        name="Reference",
        items=[("IMAGE", "Image", "An image data-block of this file"), ("FILE", "File", "An image file on disk")],
        default="IMAGE",
    )
    reference_image: PointerProperty(name="Reference image", type=bpy.types.Image, description="The picture to turn into views and a mesh")
    reference_file: StringProperty(name="Reference file", subtype="FILE_PATH", description="The picture to turn into views and a mesh")

    centre_mode: EnumProperty(
        name="Subject centre",
        items=[("CURSOR", "3D Cursor", "The 3D cursor is the subject's centre"), ("OBJECT", "Object", "The centre of an object's bounding box")],
        default="CURSOR",
    )
    subject: PointerProperty(name="Subject", type=bpy.types.Object, description="Object whose bounding-box centre is the subject centre")
    reference_camera: PointerProperty(
        name="Reference camera",
        type=bpy.types.Object,
        poll=_is_camera,
        description="The camera that saw the reference image; empty: a front view is made for you",
    )
    reference_elevation: FloatProperty(name="Front view elevation", default=0.0, min=-80.0, max=80.0, description="Elevation of the front view made when no reference camera is set, degrees")
    reference_distance: FloatProperty(name="Front view distance", default=2.0, min=0.01, description="Distance of the front view made when no reference camera is set")

    model: StringProperty(name="Model", description="View-synthesis model; empty: the preferences' default", search=_model_search)
    resolution: IntProperty(name="View size", default=256, min=32, max=2048, description="Size of generated views, pixels (square)")
    steps: IntProperty(name="Steps", default=50, min=1, max=500, description="Diffusion steps")
    guidance: FloatProperty(name="Guidance", default=3.0, min=0.0, max=50.0, description="Classifier-free guidance scale")
    seed: IntProperty(name="Seed", default=0, min=0)
    orbit_elevations: StringProperty(name="Orbit elevations", default="10", description="One elevation in degrees, or 21 comma-separated (a dynamic orbit)")
    max_faces: IntProperty(name="Mesh detail", default=50_000, min=100, max=2_000_000, description="Most faces of the reconstructed mesh")
    texture_size: IntProperty(name="Texture size", default=1024, min=16, max=8192, description="Albedo texture size, pixels")
    sds_model: StringProperty(
        name="Paint unseen",
        description="A Zero123-class model (zero123-xl, stable-zero123) that paints the surfaces no view saw; empty: off",
        search=_model_search,
    )
    plane_distance: FloatProperty(
        name="Plane distance", default=0.35, min=0.01, max=1.0, subtype="FACTOR",
        description="Where image planes sit, as a fraction of their camera's distance to the subject",
    )
    standard_view: bpy.props.BoolProperty(
        name="Standard view transform", default=True,
        description="Switch the scene to the Standard view transform so generated pictures show their own colours",
    )
    live_preview: bpy.props.BoolProperty(name="Live preview", default=False, options={"SKIP_SAVE"})

    # Filled by Generate orbit, read by Make mesh (saved with the file, restored by undo).
    last_orbit_job: StringProperty(name="Last orbit job", options={"HIDDEN"})
    last_orbit_frame: FloatVectorProperty(name="Last orbit frame", size=7, options={"HIDDEN"})
    last_orbit_collection: StringProperty(name="Last orbit collection", options={"HIDDEN"})

    def job_options(self, default_model: str = "default") -> JobOptions:
        return JobOptions(
            model=self.model or default_model or "default",
            resolution=self.resolution,
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
            orbit_elevations=self.orbit_elevations,
            texture_size=self.texture_size,
            max_faces=self.max_faces,
            sds_model=self.sds_model,
        )


CLASSES = (Blend123SceneSettings,)


def register_properties() -> None:
    bpy.types.Scene.blend123 = PointerProperty(type=Blend123SceneSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.blend123
