"""Applying the backend's results to the scene: views, meshes, and how a job ended.

Called with what ``JobTracker.route`` made of one event, from the timer (UI) or the
blocking loop (background); ``dispatch`` drives it. The results of a job that failed, was
cancelled or was lost stay in the scene, labelled as partial: their collection's name
says so and every object in it carries ``blend123_state``.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from . import preferences, scene_import
from .core.frame import SceneFrame
from .core.jobs import LIVE, MESH, ORBIT, PREVIEW, JobInfo, Routed
from .core.requests import SettingsError
from .errors import JobFailed, as_job_failed
from .protocol.errors import CANCELLED, JOB_LOST
from .protocol.messages import Done, Mesh, View
from .reports import report
from .session import LOST_JOB_HINT, session
from .submit import submit_mesh

#: How a job that did not finish is labelled (collection name suffix, ``blend123_state``).
FAILED, CANCELLED_STATE, LOST = "failed", "cancelled", "lost"
_NOUNS = {ORBIT: "view", MESH: "mesh", PREVIEW: "view", LIVE: "view"}


def _scene(info: JobInfo) -> bpy.types.Scene:
    scene = bpy.data.scenes.get(info.context.get("scene", ""))
    if scene is None:
        raise JobFailed(f"the scene {info.context.get('scene')!r} of job {info.job_id[:8]} is gone", "keep the scene open until its jobs finish")
    return scene


def _camera(info: JobInfo) -> bpy.types.Object:
    camera = bpy.data.objects.get(info.context["camera"])
    if camera is None or camera.type != "CAMERA":
        raise JobFailed(f"camera {info.context['camera']!r} was deleted before its view arrived", "request the view again")
    return camera


def apply(routed: Routed) -> JobInfo | None:
    """Apply one routed event to the scene. Returns a follow-up job (orbit -> mesh)."""
    info, event = routed.job, routed.event
    if info is None or routed.error:
        return None
    scene = _scene(info)
    ctx = info.context
    if isinstance(event, View):
        if info.purpose == LIVE:
            scene_import.show_live_view(scene, event, _camera(info))
        elif info.purpose == PREVIEW:
            scene_import.add_preview_plane(scene, event, _camera(info))
        elif info.purpose == ORBIT:
            scene_import.add_orbit_view(scene, event, SceneFrame.from_list(ctx["frame"]), _collection(scene, info, "orbit"))
        note_view_transform(scene)
    elif isinstance(event, Mesh):
        obj = scene_import.add_mesh(scene, event, SceneFrame.from_list(ctx["frame"]), _collection(scene, info, "mesh"))
        _save_glb(event)
        ctx["object"] = obj.name
    elif isinstance(event, Done):
        if event.state == CANCELLED:
            label_partial(info, CANCELLED_STATE)
        elif info.purpose == ORBIT:
            return _orbit_done(scene, info)
        if not bpy.app.background:
            _undo_push(f"blend123 {info.purpose}")
    return None


def _orbit_done(scene: bpy.types.Scene, info: JobInfo) -> JobInfo | None:
    ctx = info.context
    settings = scene.blend123
    settings.last_orbit_job = info.job_id
    settings.last_orbit_frame = ctx["frame"]
    settings.last_orbit_collection = ctx.get("collection", "")
    if not bpy.app.background:
        _undo_push("blend123 orbit")
    if ctx.get("then_mesh"):
        try:
            return submit_mesh(None, scene, info.job_id, ctx["frame"], ctx["options"], chain=info.chain)
        except (SettingsError, JobFailed) as exc:  # the orbit is kept: Make mesh again after fixing it
            raise as_job_failed(exc) from None
    return None


def ended_badly(routed: Routed) -> tuple[str, str]:
    """A failed (or lost) job: label what it left in the scene; the (message, hint) to show."""
    info, event = routed.job, routed.event
    code = getattr(event, "code", "")
    lost = code == JOB_LOST
    # A lost job cannot be resumed: never pass on advice to resume it.
    hint = LOST_JOB_HINT if lost else getattr(event, "hint", "")
    if info is None:
        return routed.error, hint
    kept = label_partial(info, LOST if lost else FAILED)
    message = f"{info.purpose} job {info.job_id[:8]} {'lost' if lost else 'failed'}: {routed.error}"
    return message, "; ".join(p for p in (hint, kept) if p)


def label_partial(info: JobInfo, state: str) -> str:
    """Mark the results of a job that did not finish; returns a sentence for the panel."""
    name = info.context.get("collection", "")
    coll = bpy.data.collections.get(name) if name else None
    if coll is None:
        return ""
    if coll.get("blend123_state") != state:
        coll.name = f"{name} ({state})"
        coll["blend123_state"] = state
        for obj in coll.all_objects:
            obj["blend123_state"] = state
    info.context["collection"] = coll.name
    noun = _NOUNS.get(info.purpose, "result")
    n = sum(1 for o in coll.all_objects if o.type == ("MESH" if info.purpose == MESH else "CAMERA"))
    return f"its {n} {noun}{'s' if n != 1 else ''} so far are kept, labelled '{coll.name}'"


def note_view_transform(scene: bpy.types.Scene) -> None:
    """Generated pictures show their true colours only with the Standard view transform.

    The artist's scene is theirs: the view transform is changed only when the preferences
    say so, and either way the artist is told once (per scene and session) why.
    """
    s = session()
    view = scene.view_settings
    if view.view_transform == "Standard" or scene.name in s.told_view_transform:
        return
    s.told_view_transform.add(scene.name)
    old = view.view_transform
    if preferences.get().standard_view:
        view.view_transform, view.look = "Standard", "None"
        report("INFO", f"switched the view transform of {scene.name!r} from {old} to Standard so generated pictures show their true colours", "turn 'Switch to Standard view' off in the blend123 preferences to keep yours")
    else:
        report(
            "INFO",
            f"the {old} view transform tone-maps generated pictures; the Standard one shows them with their true colours",
            "set it in Render Properties > Color Management, or tick 'Switch to Standard view' in the blend123 preferences",
        )


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

