"""The fitted Spherical-Gaussian (SG) light as an environment map: numpy only, no bpy.

Expected ``Mesh.light_json`` (backend frame, Z up, linear RGB)::

    {"ambient": [r, g, b],
     "lobes": [{"axis": [x, y, z], "sharpness": s, "amplitude": [r, g, b]}, ...]}

Radiance in direction w: ``ambient + sum amplitude * exp(s * (dot(w, axis) - 1))``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..protocol.errors import Blend123Error


class LightFormatError(Blend123Error, ValueError):
    """The backend sent a light this add-on cannot read."""


@dataclass(frozen=True)
class SGLight:
    ambient: np.ndarray  # (3,)
    axes: np.ndarray  # (K, 3) unit vectors
    sharpness: np.ndarray  # (K,)
    amplitude: np.ndarray  # (K, 3)

    @classmethod
    def from_json(cls, text: str) -> SGLight:
        try:
            doc = json.loads(text)
            ambient = np.asarray(doc.get("ambient", [0.0, 0.0, 0.0]), dtype=np.float64).reshape(3)
            lobes = doc.get("lobes", [])
            axes = np.asarray([lobe["axis"] for lobe in lobes], dtype=np.float64).reshape(-1, 3)
            sharp = np.asarray([lobe["sharpness"] for lobe in lobes], dtype=np.float64).reshape(-1)
            amp = np.asarray([lobe["amplitude"] for lobe in lobes], dtype=np.float64).reshape(-1, 3)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LightFormatError(f"the fitted light is not in the expected SG format: {exc}") from None
        norms = np.linalg.norm(axes, axis=1, keepdims=True)
        if len(axes) and (norms < 1e-12).any():
            raise LightFormatError("an SG lobe has a zero axis")
        return cls(ambient, axes / np.where(norms > 0, norms, 1.0), sharp, amp)

    def rotated(self, rotation: np.ndarray) -> SGLight:
        """The light with its axes turned by a 3x3 rotation (backend frame -> scene)."""
        return SGLight(self.ambient, self.axes @ np.asarray(rotation, dtype=np.float64)[:3, :3].T, self.sharpness, self.amplitude)

    def radiance(self, directions: np.ndarray) -> np.ndarray:
        d = np.asarray(directions, dtype=np.float64)
        out = np.broadcast_to(self.ambient, d.shape).copy()
        for axis, s, amp in zip(self.axes, self.sharpness, self.amplitude):
            out += np.exp(s * (d @ axis - 1.0))[..., None] * amp
        return out

    def equirect(self, width: int = 256, height: int = 128) -> np.ndarray:
        """(height, width, 3) float32 lat-long map, first row at the top (+Z), Blender's layout.

        Cycles' Environment Texture maps u = 0.5 - atan2(y, x) / (2 pi) (+X in the middle,
        +Y a quarter to the left) and v = 0.5 + asin(z) / pi (checked against Cycles renders
        in the backend's light tests).
        """
        u = (np.arange(width) + 0.5) / width
        v = (np.arange(height) + 0.5) / height
        phi = (0.5 - u) * 2.0 * np.pi  # atan2(y, x)
        theta = (0.5 - v) * np.pi  # elevation, top row first
        gp, gt = np.meshgrid(phi, theta)
        dirs = np.stack([np.cos(gt) * np.cos(gp), np.cos(gt) * np.sin(gp), np.sin(gt)], axis=-1)
        return self.radiance(dirs).astype(np.float32)
