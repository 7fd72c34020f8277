"""Live preview: re-request the active camera's view whenever it moves and then rests.

The newest request wins (``core.jobs``); its view replaces the camera's background image
in place (``scene_import.show_live_view``), so nothing piles up in the scene.
"""

from __future__ import annotations

import time

import bpy

from .core.jobs import LIVE
from .errors import JobFailed
from .session import Session
from .submit import novel_view_for_camera


def camera_key(scene: bpy.types.Scene, camera: bpy.types.Object) -> tuple:
    """Everything that changes the camera's view: pose, lens, sensor, shift, render size."""
    m, d, r = camera.matrix_world, camera.data, scene.render
    return (
        camera.name,
        tuple(round(v, 5) for row in m for v in row),
        tuple(round(v, 4) for v in (d.lens, d.sensor_width, d.sensor_height, d.shift_x, d.shift_y, r.pixel_aspect_x, r.pixel_aspect_y)),
        d.sensor_fit,
        r.resolution_x,
        r.resolution_y,
    )


def enabled() -> bool:
    return any(getattr(s, "blend123", None) and s.blend123.live_preview for s in bpy.data.scenes)


def check(s: Session, now: float | None = None) -> bool:
    """Request a view when the active camera has moved and then rested. True if sent."""
    scene = bpy.context.scene
    if scene is None or not scene.blend123.live_preview or scene.camera is None or not s.connected:
        return False
    if not s.live.observe(camera_key(scene, scene.camera), time.monotonic() if now is None else now):
        return False
    try:
        novel_view_for_camera(bpy.context, scene, scene.camera, LIVE)
    except JobFailed as exc:
        s.tracker.set_error(exc.message, exc.hint)
        return False
    return True
