"""Jobs from the scene: read the reference image, the subject frame and the asking camera,
build the request (``core.requests``) and submit it through the session."""

from __future__ import annotations

import bpy
import numpy as np

from . import preferences, scene_import
from .core.frame import SceneFrame
from .core.jobs import MESH, ORBIT, PREVIEW, JobInfo
from .core.requests import JobOptions, SettingsError, novel_view_request, orbit_request, reconstruct_request
from .errors import as_job_failed
from .images import ReferenceImageError, file_to_rgba, image_to_rgba
from .protocol.job_progress import ChainProgress
from .planes import camera_optics
from .session import session


def reference_rgba(scene: bpy.types.Scene) -> np.ndarray:
    settings = scene.blend123
    if settings.reference_source == "FILE":
        if not settings.reference_file:
            raise ReferenceImageError("no reference file is set", "pick the reference picture in the blend123 panel")
        return file_to_rgba(settings.reference_file)
    if settings.reference_image is None:
        raise ReferenceImageError("no reference image is set", "pick the reference image in the blend123 panel")
    return image_to_rgba(settings.reference_image)


def job_options(context: bpy.types.Context | None, scene: bpy.types.Scene) -> JobOptions:
    return scene.blend123.job_options(preferences.get(context).default_model)


def novel_view_for_camera(context, scene: bpy.types.Scene, camera: bpy.types.Object, purpose: str = PREVIEW) -> JobInfo:
    """Submit the view ``camera`` sees of the reference: its pose about the subject and its
    own lens, sensor fit, shift and render aspect (not the reference camera's lens)."""
    try:
        frame = scene_import.scene_frame(scene)
        pose = frame.pose_of(camera.matrix_world.translation)
        asking = camera_optics(camera, scene).intrinsics()
        request = novel_view_request(reference_rgba(scene), frame, pose, job_options(context, scene), asking)
    except (SettingsError, ReferenceImageError, scene_import.SceneSetupError, ValueError) as exc:
        raise as_job_failed(exc) from None
    return session().submit(request, purpose, scene=scene.name, camera=camera.name)


def submit_orbit(context, scene: bpy.types.Scene, then_mesh: bool = False) -> JobInfo:
    try:
        frame = scene_import.scene_frame(scene)
        options = job_options(context, scene)
        request = orbit_request(reference_rgba(scene), frame, options)
    except (SettingsError, ReferenceImageError, scene_import.SceneSetupError) as exc:
        raise as_job_failed(exc) from None
    # Make Mesh: the orbit and the mesh after it share one progress bar, shared as the
    # backend measures its machine now.
    server = session().fresh_server() if then_mesh else None
    chain = ChainProgress.orbit_then_mesh(options.model, server.proxy_orbit_share if server else -1.0) if then_mesh else None
    return session().submit(request, ORBIT, chain, scene=scene.name, frame=frame.as_list(), then_mesh=then_mesh, options=options)


def submit_mesh(
    context, scene: bpy.types.Scene, orbit_job: str = "", frame: list | None = None, options: JobOptions | None = None, chain: ChainProgress | None = None
) -> JobInfo:
    """A mesh from ``orbit_job`` (default: the scene's last finished orbit)."""
    settings = scene.blend123
    try:
        options = options or job_options(context, scene)
        frame = SceneFrame.from_list(frame if frame is not None else settings.last_orbit_frame)
        request = reconstruct_request(orbit_job or settings.last_orbit_job, options)
    except (SettingsError, ValueError) as exc:
        raise as_job_failed(exc) from None
    return session().submit(request, MESH, chain, 1 if chain else 0, scene=scene.name, frame=frame.as_list())

