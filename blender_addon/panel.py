"""The sidebar panel (3D viewport, tab ``blend123``)."""

from __future__ import annotations

import bpy

from .session import session
from .core.jobs import format_eta


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "blend123"


class BLEND123_PT_main(_Panel, bpy.types.Panel):
    bl_label = "blend123"

    def draw(self, context):
        layout = self.layout
        s = session()
        settings = context.scene.blend123

        box = layout.box()
        if s.connected:
            server = s.server
            box.label(text=f"blend123 {server.server_version} on {server.device}", icon="CHECKMARK")
            if server.gpu_total_bytes:
                box.label(text=f"{server.gpu_name}: {server.gpu_free_bytes / 2**30:.1f} GiB free")
            if getattr(server, "memory_mode", ""):
                box.label(text=f"Memory mode: {server.memory_mode}")
            models = [m.name for m in server.models if m.available]
            box.label(text="Models: " + (", ".join(models) or "none available"))
        else:
            box.alert = s.lost or bool(s.hint)  # red: the artist has something to do
            box.label(text=s.status, icon="ERROR" if box.alert else "UNLINKED")
            if s.hint:
                box.label(text=s.hint)
            if s.lost:
                box.label(text="Reconnecting by itself...", icon="FILE_REFRESH")
        box.operator("blend123.connect", icon="LINKED")
        resumable = s.resumable
        if resumable:
            row = layout.box()
            row.label(text=f"{len(resumable)} job(s) kept running on the backend", icon="INFO")
            row.operator("blend123.resume", text=f"Resume {len(resumable)} Job(s)", icon="PLAY")

        col = layout.column()
        col.prop(settings, "reference_source", expand=True)
        col.prop(settings, "reference_image" if settings.reference_source == "IMAGE" else "reference_file", text="")
        col.prop(settings, "centre_mode")
        if settings.centre_mode == "OBJECT":
            col.prop(settings, "subject")
        row = col.row(align=True)
        row.prop(settings, "reference_camera")
        row.operator("blend123.make_reference_camera", text="", icon="CAMERA_DATA")

        col = layout.column(align=True)
        col.operator("blend123.preview", icon="IMAGE_PLANE")
        col.operator("blend123.live_preview", text="Stop Live Preview" if settings.live_preview else "Live Preview", icon="PLAY", depress=settings.live_preview)
        col.operator("blend123.orbit", icon="ORIENTATION_GIMBAL")
        col.operator("blend123.mesh", icon="MESH_MONKEY")
        col.operator("blend123.apply_light", icon="LIGHT_SUN")

        if s.tracker.busy:
            label, fraction, eta = s.tracker.summary()
            text = f"{label} {fraction * 100:.0f}%" + (f", {format_eta(eta)}" if eta >= 0 else "")
            layout.progress(factor=max(0.0, min(1.0, fraction)), type="BAR", text=text)
            layout.operator("blend123.cancel", icon="CANCEL")
        if s.tracker.last_error:
            err = layout.box()
            err.alert = True
            err.label(text=s.tracker.last_error, icon="ERROR")
            if s.tracker.last_hint:
                err.label(text=s.tracker.last_hint)


class BLEND123_PT_settings(_Panel, bpy.types.Panel):
    bl_label = "Settings"
    bl_parent_id = "BLEND123_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.blend123
        col = self.layout.column()
        col.use_property_split = True
        for name in ("model", "resolution", "steps"):
            col.prop(settings, name)
        row = col.row(heading="Guidance")
        row.prop(settings, "use_guidance", text="")
        sub = row.row()
        sub.active = settings.use_guidance
        sub.prop(settings, "guidance", text="")
        for name in ("seed", "orbit_elevations", "max_faces", "texture_size", "sds_model", "plane_distance"):
            col.prop(settings, name)
        if settings.reference_camera is None:
            col.prop(settings, "reference_elevation")
            col.prop(settings, "reference_distance")


CLASSES = (BLEND123_PT_main, BLEND123_PT_settings)
