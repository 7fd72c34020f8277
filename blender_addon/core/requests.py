"""Building protocol requests from the add-on's settings: numpy only, no bpy."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..protocol.camera import ORBIT_VIEWS
from ..protocol.messages import GenerationSettings, NovelView, Orbit, Reconstruct
from .frame import SceneFrame, ScenePose


class SettingsError(ValueError):
    """A setting the user must change; ``hint`` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class JobOptions:
    """Everything from the scene settings a request needs (plain values, no bpy)."""

    model: str = "default"
    resolution: int = 256
    steps: int = 50
    guidance: float = 3.0
    seed: int = 0
    orbit_elevations: str = "10"
    texture_size: int = 1024
    max_faces: int = 50_000
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


def settings(frame: SceneFrame, options: JobOptions, fov_deg: float | None = None) -> GenerationSettings:
    return GenerationSettings(
        model=options.model or "default",
        reference_elevation=float(frame.reference_elevation),
        radius=float(frame.radius),
        fov_deg=float(fov_deg if fov_deg is not None else frame.fov_deg),
        resolution=int(options.resolution),
        steps=int(options.steps),
        guidance=float(options.guidance),
        seed=int(options.seed),
    )


def novel_view_request(image: np.ndarray, frame: SceneFrame, pose: ScenePose, options: JobOptions) -> NovelView:
    poses = np.array([[pose.elevation, pose.azimuth, pose.radius]], dtype=np.float64)
    if abs(pose.elevation) > 89.0:
        raise SettingsError("the camera is straight above or below the subject", "tilt the camera so it sees the subject from the side")
    request = NovelView(image, poses, settings(frame, options))
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
