"""Camera paths of the evaluation set (numpy only, shared by the renderer and the scorer).

Input: a 21-view *dynamic* orbit like the one SV3D's 3D stage trains on: the usual evenly
spaced relative azimuths with a little deterministic noise, and an elevation that follows
a sum of sinusoids between about -10 and 40 degrees, so tops and undersides are seen.
Held out: views between the orbit's azimuths and at other elevations, never on the orbit.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from blend123.protocol.camera import (
    DEFAULT_RADIUS,
    ORBIT_VIEWS,
    SphericalPose,
    orbit_relative_azimuths,
    world_azimuth,
)

ELEVATION_RANGE = (-10.0, 40.0)
#: Azimuth jitter as a fraction of the orbit's step (360 / 21 deg).
AZIMUTH_NOISE = 0.15
#: Held-out views: (elevation, relative azimuth) before the per-object azimuth offset.
#: Azimuths sit half-way between orbit steps, elevations off the orbit's path.
HELDOUT = ((-5.0, 25.71), (30.0, 94.29), (12.0, 145.71), (38.0, 214.29), (3.0, 265.71), (22.0, 334.29))


@dataclass(frozen=True)
class View:
    """One camera of the set, with the relative azimuth it was generated from."""

    pose: SphericalPose
    relative_azimuth_deg: float

    def c2w(self) -> np.ndarray:
        return self.pose.to_c2w()


def object_seed(name: str) -> int:
    """A stable per-object seed (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def dynamic_orbit(seed: int, count: int = ORBIT_VIEWS, radius: float = DEFAULT_RADIUS) -> list[View]:
    """``count`` views; the last one is the reference (input) view at relative azimuth 0."""
    rng = np.random.default_rng(seed)
    step = 360.0 / count
    noise = rng.uniform(-AZIMUTH_NOISE, AZIMUTH_NOISE, count) * step
    noise[-1] = 0.0  # the input view stays exactly where the user's reference camera is
    lo, hi = ELEVATION_RANGE
    t = np.arange(1, count + 1) / count
    phases = rng.uniform(0.0, 2 * math.pi, 3)
    wave = 0.55 * np.sin(2 * math.pi * t + phases[0]) + 0.3 * np.sin(4 * math.pi * t + phases[1])
    wave += 0.15 * np.sin(6 * math.pi * t + phases[2])  # in [-1, 1]
    elevation = np.clip(0.5 * (lo + hi) + 0.5 * (hi - lo) * wave, lo, hi)
    views = []
    for rel, jitter, elev in zip(orbit_relative_azimuths(count), noise, elevation):
        relative = (rel + jitter) % 360.0
        views.append(View(SphericalPose(float(elev), world_azimuth(relative), radius), relative))
    return views


def heldout_views(seed: int, radius: float = DEFAULT_RADIUS) -> list[View]:
    """Six views off the orbit, turned by a per-object offset of up to a fifth of a step."""
    offset = np.random.default_rng(seed + 1).uniform(-0.2, 0.2) * 360.0 / ORBIT_VIEWS
    views = []
    for elev, rel in HELDOUT:
        relative = (rel + offset) % 360.0
        views.append(View(SphericalPose(elev, world_azimuth(relative), radius), relative))
    return views
