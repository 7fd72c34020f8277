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

from blend123.protocol import settings as S
from blend123.protocol.camera import CameraIntrinsics, SphericalPose, orbit_relative_azimuths, reference_pose, world_azimuth
from blend123.protocol.errors import BAD_REQUEST, ProtocolError
from blend123.protocol.messages import MAX_IMAGE_SIDE, GenerationSettings, Mesh, Message, NovelView, Orbit, Reconstruct, View

from .images import save_rgba
from .progress import PlanFn, ProgressFn, no_plan
from .synthesis.registry import ResidentModel, SynthesisRequest
from .synthesis.scene import sample_bilinear


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
    # Tells the progress clock how long a stage will take once the job knows how it will run.
    plan: PlanFn = no_plan


def warm_up() -> None:
    """Import what jobs need but a quick-proxy orbit does not (torch, then the
    reconstruction with scipy and xatlas: 2 s or so), so a backend does it while idle or
    beside its first orbit, not while a Make Mesh waits."""
    from .device import describe_device

    describe_device()
    from .reconstruction import pipeline  # noqa: F401 - imported for its side effect


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
    camera = settings.asking_camera()  # the pixels every view comes back in
    views_dir = ctx.folder / "views"
    views_dir.mkdir(exist_ok=True)
    frames = []
    total = len(poses)
    targets = [SphericalPose(elevation, world_azimuth(azimuth), radius) for elevation, azimuth, radius in poses]

    def request_for(chunk: list[SphericalPose], start: int) -> SynthesisRequest:
        def view_progress(stage: str, fraction: float) -> None:
            ctx.progress("views", (start + len(chunk) * min(1.0, max(0.0, fraction))) / total)

        return SynthesisRequest(
            image, chunk, reference, settings.reference_fov_deg, camera,
            steps=settings.steps, guidance=settings.guidance, seed=settings.seed, progress=view_progress,
        )

    model.check(request_for(targets, 0))  # refuse before any work, not after the first chunk
    # Diffusion models denoise several poses per call (SV3D: a whole orbit); the default
    # model renders one per call so each view streams back the moment it exists.
    per_call = max(1, model.card.max_poses_per_call)
    for start in range(0, total, per_call):
        chunk = targets[start : start + per_call]
        rgbas = model(request_for(chunk, start))
        for offset, ((elevation, azimuth, radius), pose, rgba) in enumerate(zip(poses[start:], chunk, rgbas)):
            index = start + offset
            c2w = pose.to_c2w()
            name = f"view_{index:03d}"
            save_rgba(views_dir / f"{name}.png", rgba, fast=True)
            frames.append({"file_path": f"views/{name}.png", "transform_matrix": c2w.tolist(), "elevation": elevation, "azimuth": azimuth})
            view = View(ctx.job_id, index, total, elevation, azimuth, radius, c2w.astype(np.float32), camera.camera_angle_x, rgba,
                        model=settings.model, camera=camera)
            ctx.emit(view)
            ctx.progress("views", (index + 1) / total)
    write_transforms(ctx.folder / "transforms.json", camera, frames)


def write_transforms(path: Path, camera: CameraIntrinsics | float, frames: list[dict]) -> None:
    """A NeRF "Blender" ``transforms.json`` with the intrinsics of the pixels it lists:
    ``camera_angle_x`` (and ``camera_angle_y``) as the Blender datasets write them, plus
    ``fl_x, fl_y, cx, cy, w, h`` as instant-ngp and nerfstudio do, so non-square frames and
    shifted lenses read back exactly. A bare ``camera_angle_x`` (radians) is accepted for
    views whose size is unknown. Extra per-frame keys are ignored by readers."""
    fields = camera.transforms_fields() if isinstance(camera, CameraIntrinsics) else {"camera_angle_x": float(camera)}
    path.write_text(json.dumps({**fields, "frames": frames}, indent=1))


def _reconstruct(request: Reconstruct, ctx: TaskContext) -> None:
    from .reconstruction.pipeline import ReconstructionOptions, reconstruct

    ctx.models.release_if_memory_short()  # reconstruction needs the GPU more than a parked model
    if request.source_job:
        images, c2w, camera = views_of_job(ctx.source_events(request.source_job), request.source_job)
    else:
        images, c2w = request.images, request.c2w.astype(np.float64)
        h, w = images.shape[1:3]
        camera = request.camera or CameraIntrinsics.from_fov_x(request.camera_angle_x, w, h)
    # Reconstruction works in square, centred frames: other lenses are resampled into one.
    images, camera_angle_x = square_views(images, camera)
    options = ReconstructionOptions(
        texture_size=request.texture_size,
        max_faces=request.max_faces,
        # The quick proxy renders one shell exactly: its views agree by construction, and
        # registering them would only cost time. Anything else may drift and disagree.
        register_views=not _from_the_proxy(request, ctx),
    )
    guide = _sds_guide(request, ctx) if request.sds_model else None
    result = reconstruct(images, c2w, camera_angle_x, options, ctx.progress, guide=guide, plan=ctx.plan)
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


def _from_the_proxy(request: Reconstruct, ctx: TaskContext) -> bool:
    if not request.source_job:
        return False
    source = ctx.source_request(request.source_job)
    settings = getattr(source, "settings", None)
    return settings is not None and S.is_quick_proxy(settings.model)


def _sds_guide(request: Reconstruct, ctx: TaskContext):
    """The loaded Zero123-class model's guide for masked SDS (other models refuse)."""
    model = ctx.models.get(request.sds_model)
    image, c2w = sds_reference(request, ctx)
    return model.sds_guide(image, c2w)


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


def views_of_job(events: list[Message], job_id: str) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
    views = sorted((e for e in events if isinstance(e, View)), key=lambda v: v.index)
    if len(views) < 2:
        raise ProtocolError(BAD_REQUEST, f"job {job_id} has {len(views)} view(s); reconstruction needs an orbit", "run an orbit first and pass its job id")
    shapes = {v.image.shape for v in views}
    if len(shapes) != 1:
        raise ProtocolError(BAD_REQUEST, f"job {job_id} has views of different sizes {sorted(shapes)}")
    images = np.stack([v.image for v in views])
    c2w = np.stack([v.c2w.astype(np.float64) for v in views])
    return images, c2w, views[0].intrinsics()


def square_views(images: np.ndarray, camera: CameraIntrinsics) -> tuple[np.ndarray, float]:
    """The views in a square, centred, square-pixel camera that covers their whole frame
    (same orientation, same focal density), and its ``camera_angle_x``. Views already in such
    a camera pass through untouched; the rest are resampled, padded with transparency."""
    if camera.is_simple():
        return images, camera.camera_angle_x
    corners = camera.directions_at([[0, 0], [camera.width, 0], [0, camera.height], [camera.width, camera.height]])
    half_tan = float(np.abs(corners[:, :2]).max())  # the widest corner, either axis
    focal = max(camera.fx, camera.fy)
    side = int(min(MAX_IMAGE_SIDE, math.ceil(2.0 * half_tan * focal)))
    square = CameraIntrinsics.square(math.degrees(2.0 * math.atan(half_tan)), side)
    # Camera-space rays of the square frame, looked up in the views' own frame.
    dirs = square.camera_directions().reshape(-1, 3)
    xy = np.stack([camera.cx + camera.fx * dirs[:, 0], camera.cy - camera.fy * dirs[:, 1]], axis=1)
    out = np.empty((len(images), side, side, 4), np.uint8)
    for i, image in enumerate(images):
        resampled = sample_bilinear(image.astype(np.float64) / 255.0, xy).reshape(side, side, 4)
        out[i] = (np.clip(resampled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out, square.camera_angle_x
