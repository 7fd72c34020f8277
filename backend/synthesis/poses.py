"""Our camera poses in each diffusion model's own pose convention (one function per family).

Ours (``protocol/camera.py``): Blender world, Z up; azimuth ``atan2(y, x)`` of the camera
position, counter-clockwise seen from above; elevation absolute; the reference camera at
world azimuth -90 (on -Y), so relative +90 moves the camera to the viewer's right (+X).

Zero123 was trained on Blender renders with exactly that azimuth (``atan2(y, x)`` of the
camera position, Z up) and polar = 90 - elevation, so no axis swap: its delta azimuth is our
target world azimuth minus the reference's, i.e. our *relative* azimuth.

SV3D's orbit convention (generative-models ``simple_video_sample.py``): azimuths relative to
the input view, increasing along the orbit, the input view last at 0; the protocol's
``orbit_relative_azimuths`` is that same list, so SV3D's azimuth is our relative azimuth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from blend123.protocol.camera import SphericalPose


def zero123_pose_vector(reference: SphericalPose, target: SphericalPose, variant: str = "zero123") -> np.ndarray:
    """The 4-d pose Zero123 (``variant="zero123"``) or Stable Zero123 (``"stable-zero123"``) expects.

    Zero123: ``[d_polar_rad, sin(d_azimuth), cos(d_azimuth), d_radius]`` with polar = 90 deg -
    elevation, so a target *above* the reference has a negative d_polar. Stable Zero123
    replaces the radius delta by the reference's absolute polar angle in radians.
    """
    d_polar = math.radians((90.0 - target.elevation_deg) - (90.0 - reference.elevation_deg))
    d_azimuth = math.radians(target.azimuth_deg - reference.azimuth_deg)
    if variant == "zero123":
        fourth = target.radius - reference.radius
    elif variant == "stable-zero123":
        fourth = math.radians(90.0 - reference.elevation_deg)
    else:
        raise ValueError(f"unknown Zero123 variant {variant!r}")
    return np.array([d_polar, math.sin(d_azimuth), math.cos(d_azimuth), fourth], dtype=np.float64)


def sv3d_angles(reference: SphericalPose, targets: Sequence[SphericalPose]) -> tuple[np.ndarray, np.ndarray]:
    """(polars_rad, azimuths_rad) of SV3D's camera input for ``targets`` seen from ``reference``.

    Polar = radians(90 - elevation), absolute; azimuth relative to the reference view in
    [0, 2 pi), as generative-models builds them.
    """
    polars = np.array([math.radians(90.0 - t.elevation_deg) for t in targets], dtype=np.float64)
    azimuths = np.array([math.radians((t.azimuth_deg - reference.azimuth_deg) % 360.0) for t in targets], dtype=np.float64)
    return polars, azimuths
