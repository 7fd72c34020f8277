"""What a job does: view synthesis and reconstruction, streaming results as they are made.

Free of sockets and threads: a task gets a :class:`TaskContext` (progress, emit, output
folder, access to earlier jobs' results) and calls it. The server's worker supplies one
backed by the job queue and the jobs folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from blend123.protocol.camera import SphericalPose, orbit_relative_azimuths, reference_pose, world_azimuth
from blend123.protocol.errors import BAD_REQUEST, ProtocolError
from blend123.protocol.messages import GenerationSettings, Mesh, Message, NovelView, Orbit, Reconstruct, View

from .images import save_rgba
from .progress import ProgressFn
from .synthesis.registry import ResidentModel


@dataclass
class TaskContext:
    job_id: str
    folder: Path  # this job's folder, for human-readable outputs
    progress: ProgressFn
    emit: Callable[[Message], None]
    models: ResidentModel
    # Decoded result events of an earlier job (for reconstruct from an orbit's views).
    source_events: Callable[[str], list[Message]]
    # The request an earlier job was submitted with (its input photo and reference camera).
    source_request: Callable[[str], Message]


def run_task(request: Message, ctx: TaskContext) -> None:
    if isinstance(request, NovelView):
        poses = [(float(e), float(a), float(r) if r > 0 else request.settings.radius) for e, a, r in request.poses]
        _synthesize(request.image, poses, request.settings, ctx)
    elif isinstance(request, Orbit):
        _synthesize(request.image, orbit_poses(request), request.settings, ctx)
    elif isinstance(request, Reconstruct):
        _reconstruct(request, ctx)
    else:  # the server only queues the three kinds above
        raise ProtocolError(BAD_REQUEST, f"{request.TYPE} is not a job")


def orbit_poses(request: Orbit) -> list[tuple[float, float, float]]:
    """(elevation, relative azimuth, radius) for every view of an orbit request."""
    n = request.views
    azimuths = request.azimuths or orbit_relative_azimuths(n)
    elevations = request.elevations if len(request.elevations) == n else request.elevations * n
    return [(float(e), float(a), request.settings.radius) for e, a in zip(elevations, azimuths)]


def _synthesize(image: np.ndarray, poses: list[tuple[float, float, float]], settings: GenerationSettings, ctx: TaskContext) -> None:
    ctx.progress("load model", 0.0)
    model = ctx.models.get(settings.model)
    reference = reference_pose(settings.reference_elevation, settings.radius)
    camera_angle_x = settings.asking_camera().camera_angle_x  # interim: square views
    views_dir = ctx.folder / "views"
    views_dir.mkdir(exist_ok=True)
    frames = []
    total = len(poses)
    # Diffusion models denoise several poses per call (SV3D: a whole orbit); the default
    # model renders one per call so each view streams back the moment it exists.
    per_call = max(1, int(getattr(model, "max_poses_per_call", 1)))
    extra = {"steps": settings.steps, "guidance": settings.guidance, "seed": settings.seed} if getattr(model, "accepts_settings", False) else {}
    for start in range(0, total, per_call):
        chunk = poses[start : start + per_call]
        targets = [SphericalPose(elevation, world_azimuth(azimuth), radius) for elevation, azimuth, radius in chunk]

        def view_progress(stage: str, fraction: float, start: int = start, count: int = len(chunk)) -> None:
            ctx.progress("views", (start + count * min(1.0, max(0.0, fraction))) / total)

        rgbas = model(image, targets, reference=reference, camera_angle_x=camera_angle_x, resolution=settings.resolution, progress=view_progress, **extra)
        for offset, ((elevation, azimuth, radius), pose, rgba) in enumerate(zip(chunk, targets, rgbas)):
            index = start + offset
            c2w = pose.to_c2w()
            name = f"view_{index:03d}"
            save_rgba(views_dir / f"{name}.png", rgba)
            frames.append({"file_path": f"views/{name}.png", "transform_matrix": c2w.tolist(), "elevation": elevation, "azimuth": azimuth})
            ctx.emit(View(ctx.job_id, index, total, elevation, azimuth, radius, c2w.astype(np.float32), camera_angle_x, rgba, model=settings.model))
            ctx.progress("views", (index + 1) / total)
    write_transforms(ctx.folder / "transforms.json", camera_angle_x, frames)


def write_transforms(path: Path, camera_angle_x: float, frames: list[dict]) -> None:
    """A NeRF "Blender" ``transforms.json``; extra per-frame keys are ignored by readers."""
    path.write_text(json.dumps({"camera_angle_x": camera_angle_x, "frames": frames}, indent=1))


def _reconstruct(request: Reconstruct, ctx: TaskContext) -> None:
    from .reconstruction.pipeline import ReconstructionOptions, reconstruct

    ctx.models.release_if_memory_short()  # reconstruction needs the GPU more than a parked model
    if request.source_job:
        images, c2w, camera_angle_x = views_of_job(ctx.source_events(request.source_job), request.source_job)
    else:
        images, c2w, camera_angle_x = request.images, request.c2w.astype(np.float64), request.camera_angle_x
    options = ReconstructionOptions(texture_size=request.texture_size, max_faces=request.max_faces)
    guide = _sds_guide(request, ctx) if request.sds_model else None
    result = reconstruct(images, c2w, camera_angle_x, options, ctx.progress, guide=guide)
    (ctx.folder / "mesh.glb").write_bytes(result.glb)
    light_json = json.dumps(result.light) if result.light else ""
    if light_json:
        (ctx.folder / "light.json").write_text(light_json)
    ctx.emit(
        Mesh(
            ctx.job_id,
            vertices=result.vertices.astype(np.float32),
            faces=result.faces.astype(np.int32),
            uvs=result.uvs.astype(np.float32),
            texture=result.texture,
            glb=result.glb,
            light_json=light_json,
        )
    )


def _sds_guide(request: Reconstruct, ctx: TaskContext):
    """The loaded Zero123-class model and the prepared reference photo, for masked SDS."""
    from .reconstruction.sds import SDSGuide
    from .synthesis.adapters import Zero123Synthesizer

    model = ctx.models.get(request.sds_model)
    if not isinstance(model, Zero123Synthesizer):
        raise ProtocolError(
            BAD_REQUEST,
            f"sds_model {request.sds_model!r} is not a Zero123-class model",
            "use zero123-xl or stable-zero123 (see `blend123 doctor` for what is installed)",
        )
    image, c2w = sds_reference(request, ctx)
    prepared = model.prepared(image)
    return SDSGuide(model.pipe, prepared.astype(np.float32) / 255.0, c2w)


def sds_reference(request: Reconstruct, ctx: TaskContext) -> tuple[np.ndarray, np.ndarray]:
    """The photo SDS is conditioned on and its camera: the request's own, or its orbit's.

    Taking them from the source orbit keeps the mesh painted from the very photo the views
    came from, even if the client's reference image has changed since.
    """
    if request.sds_image is not None and request.sds_c2w is not None:
        return request.sds_image, request.sds_c2w.astype(np.float64)
    source = ctx.source_request(request.source_job)
    if not isinstance(source, (Orbit, NovelView)):
        raise ProtocolError(BAD_REQUEST, f"job {request.source_job} is not a view-synthesis job", "reconstruct from an orbit's job id")
    settings = source.settings
    return source.image, reference_pose(settings.reference_elevation, settings.radius).to_c2w()


def views_of_job(events: list[Message], job_id: str) -> tuple[np.ndarray, np.ndarray, float]:
    views = sorted((e for e in events if isinstance(e, View)), key=lambda v: v.index)
    if len(views) < 2:
        raise ProtocolError(BAD_REQUEST, f"job {job_id} has {len(views)} view(s); reconstruction needs an orbit", "run an orbit first and pass its job id")
    shapes = {v.image.shape for v in views}
    if len(shapes) != 1:
        raise ProtocolError(BAD_REQUEST, f"job {job_id} has views of different sizes {sorted(shapes)}")
    images = np.stack([v.image for v in views])
    c2w = np.stack([v.c2w.astype(np.float64) for v in views])
    return images, c2w, views[0].camera_angle_x
