"""Operators: connect, preview, live preview, orbit, mesh, cancel, resume, front camera,
fitted light. They sit on top: they use the session, ``submit``, ``dispatch`` and the
timer, and nothing but registration imports them.

In the UI an operator only submits the job and returns; results arrive through the
timer. In background mode (timers never fire) it waits for the job and applies the
results before returning, so scripts and tests see them at once and undo covers them.
"""

from __future__ import annotations

import bpy

from . import dispatch, scene_import, timer
from .core.frame import SceneFrame
from .core.jobs import PREVIEW, JobInfo
from .errors import JobFailed
from .session import session
from .submit import novel_view_for_camera, submit_mesh, submit_orbit


def _say(operator: bpy.types.Operator, level: str, message: str, hint: str = "") -> None:
    operator.report({level}, f"blend123: {message}" + (f" - {hint}" if hint else ""))


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
                dispatch.run_blocking(s, info)
            else:
                timer.ensure_timer()
                _say(self, "INFO", f"{info.purpose} job {info.job_id[:8]} queued")
        except JobFailed as exc:
            s.tracker.set_error(exc.message, exc.hint)
            _say(self, "ERROR", exc.message, exc.hint)
            return {"CANCELLED"}
        return {"FINISHED"}


class BLEND123_OT_preview(_JobOperator, bpy.types.Operator):
    """Generate the view the active camera sees, through its own lens, as an image plane at the subject's depth (replacing this camera's last preview)"""

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
    """Re-request the active camera's view whenever it moves and rests, shown as its background image; the newest request wins"""

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
                _say(self, "ERROR", s.status, s.hint)
                return {"CANCELLED"}
            if bpy.app.background:
                _say(self, "WARNING", "live preview needs the Blender UI (timers do not run in background mode)")
            timer.ensure_timer()
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
        _say(self, "INFO", f"cancelling {n} job(s); what they made so far stays, labelled 'cancelled'")
        return {"FINISHED"}


class BLEND123_OT_resume(bpy.types.Operator):
    """Receive the rest of the jobs that kept running on the backend while the connection was lost"""

    bl_idname = "blend123.resume"
    bl_label = "Resume"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return bool(session().resumable) and session().connected

    def execute(self, context):
        s = session()
        jobs = s.resumable
        try:
            for info in jobs:
                s.resume(info)
                if bpy.app.background:
                    dispatch.run_blocking(s, info)
        except JobFailed as exc:
            s.tracker.set_error(exc.message, exc.hint)
            _say(self, "ERROR", exc.message, exc.hint)
            return {"CANCELLED"}
        timer.ensure_timer()
        _say(self, "INFO", f"resumed {len(jobs)} job(s)")
        return {"FINISHED"}


class BLEND123_OT_connect(bpy.types.Operator):
    """Connect to the backend set in the preferences (starting a local one if asked to)"""

    bl_idname = "blend123.connect"
    bl_label = "Connect"
    bl_options = {"REGISTER"}

    def execute(self, context):
        s = session()
        ok = s.connect(context)
        timer.ensure_timer()  # health pings from now on, or waiting for a starting backend
        if not ok and not s.connecting:
            _say(self, "ERROR", s.status, s.hint)
            return {"CANCELLED"}
        return {"FINISHED"}


class BLEND123_OT_make_reference_camera(bpy.types.Operator):
    """Make the front-view camera (on -Y, looking at the subject) the reference and the active camera; pressed again, it moves the same camera back to the front"""

    bl_idname = "blend123.make_reference_camera"
    bl_label = "Make Front Camera"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            scene_import.front_camera(context.scene, make_active=True)
        except scene_import.SceneSetupError as exc:
            _say(self, "ERROR", exc.message, exc.hint)
            return {"CANCELLED"}
        return {"FINISHED"}


def light_owner(context) -> bpy.types.Object | None:
    obj = context.active_object
    if obj is not None and "blend123_light_json" in obj:
        return obj
    return None


class BLEND123_OT_apply_light(bpy.types.Operator):
    """Light the scene with the Spherical-Gaussian light fitted with the active mesh: a new World named after its job (yours is kept; undo brings it back)"""

    bl_idname = "blend123.apply_light"
    bl_label = "Apply Fitted Light"
    bl_options = {"REGISTER", "UNDO"}

    visible_to_camera: bpy.props.BoolProperty(
        name="Visible to camera",
        default=False,
        description="Show the fitted environment behind the scene too; off: it only lights the scene, the camera sees a plain background",
    )

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
            world = world_light.apply(
                context.scene,
                obj["blend123_light_json"],
                SceneFrame.from_list(obj["blend123_frame"]),
                job_id=str(obj.get("blend123_job", "")),
                visible_to_camera=self.visible_to_camera,
            )
        except (LightFormatError, ValueError) as exc:
            _say(self, "ERROR", getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))
            return {"CANCELLED"}
        _say(self, "INFO", f"the scene now uses the World {world.name!r}; your World is kept")
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
    BLEND123_OT_resume,
    BLEND123_OT_connect,
    BLEND123_OT_make_reference_camera,
    BLEND123_OT_apply_light,
    BLEND123_OT_report,
)
