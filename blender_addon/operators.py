"""Operators: connect, preview, live preview, orbit, mesh, cancel, fitted light.

In the UI an operator only submits the job and returns; results arrive through the
timer. In background mode (timers never fire) it waits for the job and applies the
results before returning, so scripts and tests see them at once and undo covers them.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import connection, preferences, scene_import
from .connection import JobFailed, session
from .core.jobs import MESH, ORBIT, PREVIEW, JobInfo
from .core.requests import SettingsError, novel_view_request, orbit_request, reconstruct_request
from .core.frame import SceneFrame
from .images import ReferenceImageError, file_to_rgba, image_to_rgba


def reference_rgba(scene: bpy.types.Scene) -> np.ndarray:
    settings = scene.blend123
    if settings.reference_source == "FILE":
        if not settings.reference_file:
            raise ReferenceImageError("no reference file is set", "pick the reference picture in the blend123 panel")
        return file_to_rgba(settings.reference_file)
    if settings.reference_image is None:
        raise ReferenceImageError("no reference image is set", "pick the reference image in the blend123 panel")
    return image_to_rgba(settings.reference_image)


def _options(context: bpy.types.Context, scene: bpy.types.Scene):
    return scene.blend123.job_options(preferences.get(context).default_model)


def novel_view_for_camera(context, scene, camera, purpose: str = PREVIEW) -> JobInfo:
    """Submit a novel view of the reference for ``camera``'s pose about the subject."""
    try:
        frame = scene_import.scene_frame(scene)
        pose = frame.pose_of(camera.matrix_world.translation)
        request = novel_view_request(reference_rgba(scene), frame, pose, _options(context, scene))
    except (SettingsError, ReferenceImageError, scene_import.SceneSetupError, ValueError) as exc:
        raise JobFailed(getattr(exc, "message", str(exc)), getattr(exc, "hint", "")) from None
    return session().submit(request, purpose, scene=scene.name, camera=camera.name)


def submit_orbit(context, scene, then_mesh: bool = False) -> JobInfo:
    try:
        frame = scene_import.scene_frame(scene)
        options = _options(context, scene)
        reference = reference_rgba(scene)
        request = orbit_request(reference, frame, options)
    except (SettingsError, ReferenceImageError, scene_import.SceneSetupError) as exc:
        raise JobFailed(exc.message, exc.hint) from None
    return session().submit(request, ORBIT, scene=scene.name, frame=frame.as_list(), then_mesh=then_mesh, options=options)


def submit_mesh(context, scene) -> JobInfo:
    settings = scene.blend123
    try:
        options = _options(context, scene)
        frame = SceneFrame.from_list(settings.last_orbit_frame)
        request = reconstruct_request(settings.last_orbit_job, options)
    except SettingsError as exc:
        raise JobFailed(exc.message, exc.hint) from None
    return session().submit(request, MESH, scene=scene.name, frame=frame.as_list())


class _JobOperator:
    """Shared: run ``start`` and either wait (background) or hand over to the timer."""

    bl_options = {"REGISTER", "UNDO"}

    def start(self, context) -> JobInfo:
        raise NotImplementedError

    def execute(self, context):
        s = session()
        try:
            info = self.start(context)
            if bpy.app.background:
                s.run_blocking(info)
            else:
                connection.ensure_timer()
                self.report({"INFO"}, f"blend123: {info.purpose} job {info.job_id[:8]} queued")
        except JobFailed as exc:
            s.tracker.set_error(exc.message, exc.hint)
            self.report({"ERROR"}, f"blend123: {exc.message}" + (f" - {exc.hint}" if exc.hint else ""))
            return {"CANCELLED"}
        return {"FINISHED"}


class BLEND123_OT_preview(_JobOperator, bpy.types.Operator):
    """Generate the view the active camera would see and show it as an image plane in front of it"""

    bl_idname = "blend123.preview"
    bl_label = "Preview from Active Camera"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.camera is not None

    def start(self, context):
        return novel_view_for_camera(context, context.scene, context.scene.camera, PREVIEW)


class BLEND123_OT_orbit(_JobOperator, bpy.types.Operator):
    """Generate an orbit of 21 views around the subject: cameras on a ring, each with its image plane"""

    bl_idname = "blend123.orbit"
    bl_label = "Generate Orbit"

    def start(self, context):
        return submit_orbit(context, context.scene)


class BLEND123_OT_mesh(_JobOperator, bpy.types.Operator):
    """Reconstruct a UV-unwrapped, textured mesh from the last orbit (an orbit is made first if there is none)"""

    bl_idname = "blend123.mesh"
    bl_label = "Make Mesh"

    def start(self, context):
        scene = context.scene
        if not scene.blend123.last_orbit_job:
            return submit_orbit(context, scene, then_mesh=True)
        return submit_mesh(context, scene)


class BLEND123_OT_live_preview(bpy.types.Operator):
    """Re-request the view whenever the active camera moves and rests; the newest request wins"""

    bl_idname = "blend123.live_preview"
    bl_label = "Live Preview"
    bl_options = {"REGISTER"}

    def execute(self, context):
        settings = context.scene.blend123
        settings.live_preview = not settings.live_preview
        s = session()
        s.live.reset()
        if settings.live_preview:
            if not s.connected and not s.connect(context) and not s.connecting:
                settings.live_preview = False
                self.report({"ERROR"}, f"blend123: {s.status}" + (f" - {s.hint}" if s.hint else ""))
                return {"CANCELLED"}
            if bpy.app.background:
                self.report({"WARNING"}, "blend123: live preview needs the Blender UI (timers do not run in background mode)")
            connection.ensure_timer()
        return {"FINISHED"}


class BLEND123_OT_cancel(bpy.types.Operator):
    """Cancel every blend123 job of this session on the backend"""

    bl_idname = "blend123.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return session().tracker.busy

    def execute(self, context):
        n = session().cancel_all()
        self.report({"INFO"}, f"blend123: cancelling {n} job(s)")
        return {"FINISHED"}


class BLEND123_OT_connect(bpy.types.Operator):
    """Connect to the backend set in the preferences (starting a local one if asked to)"""

    bl_idname = "blend123.connect"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        s = session()
        ok = s.connect(context)
        if not ok and not s.connecting:
            self.report({"ERROR"}, f"blend123: {s.status}" + (f" - {s.hint}" if s.hint else ""))
            return {"CANCELLED"}
        return {"FINISHED"}


class BLEND123_OT_make_reference_camera(bpy.types.Operator):
    """Make a front-view reference camera (on -Y, looking at the subject) and use it"""

    bl_idname = "blend123.make_reference_camera"
    bl_label = "Make Front Camera"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.blend123.reference_camera = None
        try:
            scene_import.reference_camera(context.scene)
        except scene_import.SceneSetupError as exc:
            self.report({"ERROR"}, f"blend123: {exc.message} - {exc.hint}")
            return {"CANCELLED"}
        return {"FINISHED"}


def light_owner(context) -> bpy.types.Object | None:
    obj = context.active_object
    if obj is not None and "blend123_light_json" in obj:
        return obj
    return None


class BLEND123_OT_apply_light(bpy.types.Operator):
    """Set the world lighting from the Spherical-Gaussian light fitted with the active mesh"""

    bl_idname = "blend123.apply_light"
    bl_label = "Apply Fitted Light"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if light_owner(context) is None:
            cls.poll_message_set("The backend fitted no light for the active object (the baseline reconstruction sends none yet)")
            return False
        return True

    def execute(self, context):
        from . import world_light
        from .core.light import LightFormatError

        obj = light_owner(context)
        try:
            world_light.apply(context.scene, obj["blend123_light_json"], SceneFrame.from_list(obj["blend123_frame"]))
        except (LightFormatError, ValueError) as exc:
            self.report({"ERROR"}, f"blend123: {exc}")
            return {"CANCELLED"}
        return {"FINISHED"}


class BLEND123_OT_report(bpy.types.Operator):
    """Internal: put a message into the Info log"""

    bl_idname = "blend123.report"
    bl_label = "blend123 Report"
    bl_options = {"INTERNAL"}

    level: bpy.props.StringProperty(default="INFO")
    message: bpy.props.StringProperty()

    def execute(self, context):
        level = self.level if self.level in {"INFO", "WARNING", "ERROR"} else "INFO"
        self.report({level}, self.message)
        return {"FINISHED"}


CLASSES = (
    BLEND123_OT_preview,
    BLEND123_OT_orbit,
    BLEND123_OT_mesh,
    BLEND123_OT_live_preview,
    BLEND123_OT_cancel,
    BLEND123_OT_connect,
    BLEND123_OT_make_reference_camera,
    BLEND123_OT_apply_light,
    BLEND123_OT_report,
)
