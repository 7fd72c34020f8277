"""Scene settings (``scene.blend123``): what to send and where results go.

Defaults and bounds of every generation setting come from the protocol (``protocol.settings``),
so a value the panel accepts is never refused by the backend.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, FloatVectorProperty, IntProperty, PointerProperty, StringProperty

from .core.requests import JobOptions
from .protocol import settings as S


def _is_camera(_self, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


def _model_search(_self, _context, _edit_text):
    from .session import session

    return [m.name for m in session().models() if m.available]


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
    reference_elevation: FloatProperty(
        name="Front view elevation", default=S.ELEVATION.default, min=-80.0, max=80.0,  # a camera straight above has no azimuth
        description="Elevation of the front view made when no reference camera is set, degrees",
    )
    reference_distance: FloatProperty(
        name="Front view distance", default=S.RADIUS.default, min=S.RADIUS.low, max=S.RADIUS.high,
        description="Distance of the front view made when no reference camera is set",
    )

    model: StringProperty(name="Model", description="View-synthesis model; empty: the preferences' default", search=_model_search)
    resolution: IntProperty(
        name="View size", default=S.RESOLUTION.default, min=S.RESOLUTION.low, max=S.RESOLUTION.high,
        description="Longer side of generated views, pixels (their aspect is the camera's)",
    )
    # 0: the model's own number of steps (the protocol's None).
    steps: IntProperty(name="Steps", default=0, min=0, max=S.STEPS.high, description="Diffusion steps; 0: the model's own default")
    use_guidance: bpy.props.BoolProperty(name="Set guidance", default=False, description="Override the model's own classifier-free guidance scale")
    guidance: FloatProperty(name="Guidance", default=3.0, min=S.GUIDANCE.low, max=S.GUIDANCE.high, description="Classifier-free guidance scale")
    seed: IntProperty(name="Seed", default=S.SEED.default, min=S.SEED.low)
    orbit_elevations: StringProperty(name="Orbit elevations", default="10", description="One elevation in degrees, or 21 comma-separated (a dynamic orbit)")
    max_faces: IntProperty(
        name="Mesh detail", default=S.MAX_FACES.default, min=S.MAX_FACES.low, max=S.MAX_FACES.high, description="Most faces of the reconstructed mesh"
    )
    texture_size: IntProperty(
        name="Texture size", default=S.TEXTURE_SIZE.default, min=S.TEXTURE_SIZE.low, max=S.TEXTURE_SIZE.high, description="Albedo texture size, pixels"
    )
    sds_model: StringProperty(
        name="Paint unseen",
        description="A Zero123-class model (zero123-xl, stable-zero123) that paints the surfaces no view saw; empty: off",
        search=_model_search,
    )
    plane_distance: FloatProperty(
        name="Plane distance", default=0.35, min=0.01, max=1.0, subtype="FACTOR",
        description="Where image planes sit, as a fraction of their camera's distance to the subject",
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
            steps=self.steps or None,
            guidance=self.guidance if self.use_guidance else None,
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
