"""Building protocol requests from the add-on's settings: numpy only, no bpy.

Two cameras travel with a view request: the reference camera (its pose and lens fix the
subject's size, ``reference_fov_deg``) and the asking camera (the one whose view is
wanted: its full intrinsics, ``GenerationSettings.camera``). They are different lenses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..protocol import settings as S
from ..protocol.camera import ORBIT_VIEWS, CameraIntrinsics
from ..protocol.errors import Blend123Error
from ..protocol.messages import GenerationSettings, NovelView, Orbit, Reconstruct
from .frame import SceneFrame, ScenePose


class SettingsError(Blend123Error, ValueError):
    """A setting the user must change; ``hint`` says how."""


@dataclass(frozen=True)
class JobOptions:
    """Everything from the scene settings a request needs (plain values, no bpy)."""

    model: str = S.MODEL.default
    resolution: int = S.RESOLUTION.default
    steps: int | None = S.STEPS.default  # None: the model's own default
    guidance: float | None = S.GUIDANCE.default  # None: the model's own default
    seed: int = S.SEED.default
    orbit_elevations: str = "10"
    texture_size: int = S.TEXTURE_SIZE.default
    max_faces: int = S.MAX_FACES.default
    sds_model: str = ""  # a Zero123-class model that paints surfaces no view saw; "": off


def parse_elevations(text: str, views: int = ORBIT_VIEWS) -> list[float]:
    """'10' or '0, 5, 10, ...' (one per view) -> degrees; SettingsError when malformed."""
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SettingsError(f"orbit elevations {text!r} are not numbers", "write one elevation in degrees, e.g. 10, or one per view separated by commas") from None
    if len(values) not in (1, views):
        raise SettingsError(f"orbit elevations: got {len(values)} values", f"give one elevation or exactly {views}, one per view")
    if any(abs(v) > 89.0 for v in values):
        raise SettingsError("orbit elevations must be within -89..89 degrees", "lower the elevations")
    return values


def settings(frame: SceneFrame, options: JobOptions, camera: CameraIntrinsics | None = None) -> GenerationSettings:
    """``frame.fov_deg`` is the reference camera's lens; ``camera`` the asking camera's
    (None for an orbit: the model's own square views)."""
    return GenerationSettings(
        model=options.model or S.MODEL.default,
        reference_elevation=float(frame.reference_elevation),
        radius=float(frame.radius),
        reference_fov_deg=float(frame.fov_deg),
        camera=camera,
        resolution=int(options.resolution),
        steps=None if options.steps is None else int(options.steps),
        guidance=None if options.guidance is None else float(options.guidance),
        seed=int(options.seed),
    )


def novel_view_request(image: np.ndarray, frame: SceneFrame, pose: ScenePose, options: JobOptions, camera: CameraIntrinsics | None = None) -> NovelView:
    """The view ``camera`` (the asking camera's intrinsics) sees from ``pose``."""
    poses = np.array([[pose.elevation, pose.azimuth, pose.radius]], dtype=np.float64)
    if abs(pose.elevation) > 89.0:
        raise SettingsError("the camera is straight above or below the subject", "tilt the camera so it sees the subject from the side")
    request = NovelView(image, poses, settings(frame, options, camera))
    _validate(request)
    return request


def orbit_request(image: np.ndarray, frame: SceneFrame, options: JobOptions) -> Orbit:
    request = Orbit(image, parse_elevations(options.orbit_elevations), settings=settings(frame, options))
    _validate(request)
    return request


def reconstruct_request(orbit_job: str, options: JobOptions) -> Reconstruct:
    """A mesh from a finished orbit; with ``sds_model`` the backend paints what no view saw,
    conditioned on the orbit's own input photo and reference camera."""
    if not orbit_job:
        raise SettingsError("there is no finished orbit to reconstruct from", "press Generate orbit first")
    request = Reconstruct(
        source_job=orbit_job, texture_size=int(options.texture_size), max_faces=int(options.max_faces), sds_model=options.sds_model
    )
    _validate(request)
    return request


def _validate(request) -> None:
    from ..protocol.errors import ProtocolError

    try:
        request.validate()
    except ProtocolError as exc:
        raise SettingsError(exc.message, exc.hint or "change the blend123 settings in the sidebar") from None
