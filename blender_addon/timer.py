"""The UI's heartbeat: a ``bpy.app.timers`` callback that never blocks for long.

It runs while the session watches a backend (health pings, reconnecting), while jobs run
and while live preview is on; idle and disconnected, it stops itself. Timers never fire in
background mode: there the operators wait on the socket instead (``dispatch.run_blocking``).
"""

from __future__ import annotations

import traceback

import bpy

from . import dispatch, live_preview
from .session import session

TICK_S = 0.1


def needs_timer() -> bool:
    s = session()
    return bool(s.watching or s.tracker.busy or live_preview.enabled())


def tick() -> float | None:
    """bpy.app.timers callback: returns None to stop when there is nothing to watch."""
    s = session()
    try:
        live_preview.check(s)
        dispatch.pump(s)
    except Exception as exc:  # a timer that raises is dropped by Blender: keep it alive
        traceback.print_exc()
        s.tracker.set_error(f"internal error: {exc}", "see the terminal; please report it")
    _redraw()
    return TICK_S if needs_timer() else None


def ensure_timer() -> None:
    if bpy.app.background:
        return  # timers never fire in background mode; the blocking path is used there
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)


def stop_timer() -> None:
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm else []:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PROPERTIES"):
                area.tag_redraw()
