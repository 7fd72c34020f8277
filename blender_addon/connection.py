"""The connection to the backend, and the two ways results reach the scene.

* UI: :func:`tick` runs from ``bpy.app.timers`` on the main thread; it drains a bounded
  number of events per call (``Client.poll`` never blocks) and applies them. No threads.
* Background (``bpy.app.background``, ``blender -b``, the ``bpy`` module): timers never
  fire there, so :meth:`Session.run_blocking` waits on ``Client.events`` instead.

Both paths route events through the same :class:`JobTracker` and :func:`apply`.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable

import bpy

from . import preferences, scene_import
from .core.backend_process import BackendStartError, LocalBackend, serve_command
from .core.frame import SceneFrame
from .core.jobs import LIVE, MESH, ORBIT, PREVIEW, JobInfo, JobTracker, LivePreview, Routed
from .core.requests import SettingsError, reconstruct_request
from .protocol.client import Client, CurveClientKeys
from .protocol.errors import ProtocolError
from .protocol.messages import Done, Error, HelloReply, Mesh, Message, View

#: Events applied per timer tick: keeps each tick short so the UI stays responsive.
EVENTS_PER_TICK = 8
TICK_S = 0.1
#: How long a local backend may take to start answering (it imports torch).
LOCAL_START_S = 60.0


class JobFailed(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Session:
    """One per Blender session: the client, what the backend said, the running jobs."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.server: HelloReply | None = None
        self.status = "not connected"
        self.hint = ""
        self.tracker = JobTracker()
        self.live = LivePreview()
        self.local = LocalBackend()
        self._connect_deadline = 0.0  # > 0 while waiting for a local backend to answer
        self._address = ""

    # --- connection -------------------------------------------------------------------------------

    def models(self):
        return list(self.server.models) if self.server else []

    @property
    def connecting(self) -> bool:
        """True while a just-started local backend is being waited for (by the timer)."""
        return bool(self._connect_deadline)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.server is not None

    def connect(
        self, context: bpy.types.Context | None = None, *, wait_s: float | None = None, timeout_s: float = 30.0, address: str = ""
    ) -> bool:
        """Say hello to the backend; start a local one first if the preferences ask to.

        Returns True once connected. In the UI a starting local backend is waited for by
        the timer; with ``wait_s`` (background mode) this call waits for it.
        """
        prefs = preferences.get(context)
        self.disconnect()
        self._address = address = address or prefs.address
        try:
            keys = None
            if prefs.client_secret_key or prefs.server_public_key:
                if not (prefs.client_secret_key and prefs.server_public_key):
                    raise ProtocolError("bad_keys", "a protected backend needs both the client secret key and the server public key", "set both key files in the blend123 preferences")
                keys = CurveClientKeys.from_files(bpy.path.abspath(prefs.client_secret_key), bpy.path.abspath(prefs.server_public_key))
            if prefs.start_local and not self.local.running:
                jobs = preferences.jobs_folder(context)
                self.local.start(serve_command(address, bpy.path.abspath(prefs.python_executable) if prefs.python_executable else "", str(jobs / "backend")), jobs / "backend.log")
            self.client = Client(address, keys=keys, timeout_s=timeout_s)
        except (ProtocolError, BackendStartError, OSError) as exc:
            self._fail(getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))
            return False
        if self.local.running:
            self._connect_deadline = time.monotonic() + LOCAL_START_S
            self.status, self.hint = "starting the local backend...", ""
            if wait_s is None and not bpy.app.background:
                ensure_timer()
                return False
            deadline = time.monotonic() + (wait_s if wait_s is not None else LOCAL_START_S)
            while time.monotonic() < deadline:
                if self._try_hello(1.0):
                    return True
            return self._try_hello(1.0, final=True)
        # A backend that is up answers hello in milliseconds: don't freeze the UI for long.
        return self._try_hello(min(timeout_s, 5.0, wait_s if wait_s is not None else 3.0), final=True)

    def _try_hello(self, timeout_s: float, final: bool = False) -> bool:
        client = self.client
        if client is None:
            return False
        saved, client.timeout_s = client.timeout_s, timeout_s
        try:
            self.server = client.hello("blend123-blender")
        except ProtocolError as exc:
            if final:
                hint = exc.hint
                if self.local.log_path and self.local.running:
                    hint = f"the local backend has not answered yet; see {self.local.log_path}"
                elif self.local.log_path and not self.local.running:
                    hint = f"the local backend stopped; see {self.local.log_path}"
                self._fail(exc.message, hint or "start the backend with `blend123 serve`, or tick 'Start a local backend' in the preferences")
            return False
        finally:
            client.timeout_s = saved
        self._connect_deadline = 0.0
        self.status, self.hint = f"connected to {self._address}", ""
        return True

    def _fail(self, message: str, hint: str) -> None:
        self.status, self.hint = f"not connected: {message}", hint
        self.server = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client, self.server = None, None
        self.status, self.hint = "not connected", ""
        self._connect_deadline = 0.0

    def require(self, context: bpy.types.Context | None = None) -> Client:
        """The connected client, connecting on demand; JobFailed says why not."""
        if not self.connected:
            self.connect(context, wait_s=LOCAL_START_S if bpy.app.background else None)
        if not self.connected:
            raise JobFailed(self.status, self.hint or "press Connect in the blend123 panel")
        return self.client

    # --- jobs -------------------------------------------------------------------------------------

    def submit(self, request: Message, purpose: str, **ctx: Any) -> JobInfo:
        client = self.require()
        try:
            job_id = client.submit(request)
        except ProtocolError as exc:
            if exc.code == "timeout":
                self._fail(exc.message, exc.hint)
            raise JobFailed(exc.message, exc.hint) from None
        self.tracker.clear_error()
        return self.tracker.add(job_id, purpose, **ctx)

    def run_blocking(self, info: JobInfo, on_event: Callable[[Message], None] | None = None) -> list[Routed]:
        """Wait for a job and apply its events (background mode). Raises JobFailed."""
        client = self.require()
        applied = []
        try:
            for event in client.events(info.job_id):
                if on_event is not None:
                    on_event(event)
                routed = self.tracker.route(event)
                follow_up = apply(routed)
                applied.append(routed)
                if routed.error:
                    raise JobFailed(routed.error, getattr(event, "hint", ""))
                if follow_up is not None:
                    applied += self.run_blocking(follow_up, on_event)
        except ProtocolError as exc:
            self.tracker.forget(info.job_id)
            raise JobFailed(exc.message, exc.hint) from None
        return applied

    def cancel_all(self) -> int:
        n = 0
        for job_id in list(self.tracker.jobs):
            try:
                if self.client is not None:
                    self.client.cancel(job_id)
                n += 1
            except ProtocolError:
                self.tracker.forget(job_id)
        return n

    def pump(self, max_events: int = EVENTS_PER_TICK) -> int:
        """One timer tick: connection, live preview, then at most ``max_events`` events."""
        if self._connect_deadline and self.client is not None and self.server is None:
            if not self._try_hello(0.05):
                if time.monotonic() > self._connect_deadline or not self.local.running:
                    self._try_hello(0.05, final=True)
                    self._connect_deadline = 0.0
                return 0
        if not self.connected:
            return 0
        check_live_preview(self)
        events = self.client.poll(max_events)
        for event in events:
            routed = self.tracker.route(event)
            try:
                apply(routed)
            except JobFailed as exc:
                self.tracker.set_error(exc.message, exc.hint)
                report("ERROR", exc.message, exc.hint)
            if routed.error:
                report("ERROR", routed.error, getattr(event, "hint", ""))
            if isinstance(event, Error) and getattr(event, "code", "") == "timeout":
                self.status = f"backend silent: {event.message}"
        for job_id in self.tracker.stale_live_jobs():  # latest wins: stop the others
            try:
                self.client.cancel(job_id)
            except ProtocolError:
                pass
            self.tracker.forget(job_id)
        return len(events)

    def needs_timer(self) -> bool:
        live = any(getattr(s, "blend123", None) and s.blend123.live_preview for s in bpy.data.scenes)
        return bool(self._connect_deadline or self.tracker.busy or live)

    def shutdown(self) -> None:
        self.disconnect()
        self.local.stop()


_SESSION: Session | None = None


def session() -> Session:
    global _SESSION
    if _SESSION is None:
        _SESSION = Session()
    return _SESSION


def drop_session() -> None:
    global _SESSION
    if _SESSION is not None:
        _SESSION.shutdown()
    _SESSION = None


# --- applying events ----------------------------------------------------------------------------------


def _scene(info: JobInfo) -> bpy.types.Scene:
    scene = bpy.data.scenes.get(info.context.get("scene", ""))
    if scene is None:
        raise JobFailed(f"the scene {info.context.get('scene')!r} of job {info.job_id[:8]} is gone", "keep the scene open until its jobs finish")
    return scene


def apply(routed: Routed) -> JobInfo | None:
    """Apply one routed event to the scene. Returns a follow-up job (orbit -> mesh)."""
    info, event = routed.job, routed.event
    if info is None or routed.error:
        return None
    scene = _scene(info)
    ctx = info.context
    if isinstance(event, View):
        if info.purpose in (PREVIEW, LIVE):
            camera = bpy.data.objects.get(ctx["camera"])
            if camera is None:
                raise JobFailed(f"camera {ctx['camera']!r} was deleted before its view arrived", "request the view again")
            if info.purpose == LIVE:
                scene_import.replace_live_plane(scene, event, camera)
            else:
                scene_import.add_novel_view(scene, event, camera, _collection(scene, info, "view"))
        elif info.purpose == ORBIT:
            scene_import.add_orbit_view(scene, event, SceneFrame.from_list(ctx["frame"]), _collection(scene, info, "orbit"))
    elif isinstance(event, Mesh):
        obj = scene_import.add_mesh(scene, event, SceneFrame.from_list(ctx["frame"]), _collection(scene, info, "mesh"))
        _save_glb(event)
        ctx["object"] = obj.name
    elif isinstance(event, Done) and event.state == "done":
        if info.purpose == ORBIT:
            settings = scene.blend123
            settings.last_orbit_job = info.job_id
            settings.last_orbit_frame = ctx["frame"]
            settings.last_orbit_collection = ctx.get("collection", "")
            if ctx.get("then_mesh"):
                try:
                    request = reconstruct_request(info.job_id, ctx["options"])
                except SettingsError as exc:  # the orbit is kept: Make mesh again after fixing it
                    raise JobFailed(exc.message, exc.hint) from None
                return session().submit(request, MESH, scene=scene.name, frame=ctx["frame"])
        if not bpy.app.background:
            _undo_push(f"blend123 {info.purpose}")
    return None


def _collection(scene: bpy.types.Scene, info: JobInfo, kind: str) -> bpy.types.Collection:
    name = info.context.get("collection")
    coll = bpy.data.collections.get(name) if name else None
    if coll is None:
        coll = scene_import.job_collection(scene, kind, info.job_id)
        info.context["collection"] = coll.name
    return coll


def _save_glb(mesh: Mesh) -> Path | None:
    if not mesh.glb:
        return None
    try:
        path = preferences.jobs_folder() / f"{mesh.job_id}.glb"
        path.write_bytes(mesh.glb)
        return path
    except OSError as exc:  # the mesh is in the scene already: a warning is enough
        report("WARNING", f"could not save the GLB: {exc}", "check the jobs folder in the preferences")
        return None


def _undo_push(message: str) -> None:
    # Results applied from a timer are outside any operator: give them their own undo step.
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


def report(level: str, message: str, hint: str = "") -> None:
    """Show a message in the Info log (and the terminal), from anywhere."""
    text = f"blend123: {message}" + (f" - {hint}" if hint else "")
    print(text)
    try:
        bpy.ops.blend123.report(level=level, message=text)
    except (AttributeError, RuntimeError):
        pass


# --- live preview ----------------------------------------------------------------------------------


def _camera_key(scene: bpy.types.Scene, camera: bpy.types.Object) -> tuple:
    m = camera.matrix_world
    return (camera.name, tuple(round(v, 5) for row in m for v in row), round(camera.data.lens, 4), scene.render.resolution_x, scene.render.resolution_y)


def check_live_preview(s: Session, now: float | None = None) -> bool:
    """Request a view when the active camera has moved and then rested. True if sent."""
    scene = bpy.context.scene
    if scene is None or not scene.blend123.live_preview or scene.camera is None:
        return False
    if not s.live.observe(_camera_key(scene, scene.camera), time.monotonic() if now is None else now):
        return False
    from .operators import novel_view_for_camera

    try:
        novel_view_for_camera(bpy.context, scene, scene.camera, LIVE)
    except JobFailed as exc:
        s.tracker.set_error(exc.message, exc.hint)
        return False
    return True


# --- the timer ----------------------------------------------------------------------------------------


def tick() -> float | None:
    """bpy.app.timers callback: never blocks; returns None to stop when idle."""
    s = session()
    try:
        s.pump()
    except Exception as exc:  # a timer that raises is dropped by Blender: keep it alive
        traceback.print_exc()
        s.tracker.set_error(f"internal error: {exc}", "see the terminal; please report it")
    _redraw()
    return TICK_S if s.needs_timer() else None


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
            if area.type == "VIEW_3D":
                area.tag_redraw()
