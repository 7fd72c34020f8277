"""The disentangled light: 24 Spherical Gaussians (SGs) with fixed axes, white amplitudes.

An SG is ``G(w; mu, s, a) = a * exp(s * (mu . w - 1))``: here, the world radiance
arriving from direction ``w`` (linear RGB, Blender frame, Z up). The axes are fixed on
a Fibonacci sphere and share one sharpness; only the (scalar, white) amplitudes are
fitted, through a softplus so they stay positive.

Lambertian shading needs the irradiance ``E(n) = integral L(w) max(0, n . w) dw``. The
clamped cosine is itself close to an SG (axis n, sharpness 2.133, amplitude 1.17), and
the integral of a product of two SGs has a closed form:

    <G1, G2> = 2 pi a1 a2 exp(d - (s1 + s2)) (1 - exp(-2 d)) / d,   d = |s1 mu1 + s2 mu2|

A diffuse surface of albedo ``rho`` then leaves radiance ``rho * E(n) / pi``: that is the
``shading`` the reconstruction multiplies albedo by, so the lobes are true world radiance
and Blender, lit by :meth:`SGLight.environment_image`, reproduces the input views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: SG fit of the clamped cosine lobe max(0, n . w): (sharpness, amplitude).
COSINE_SHARPNESS = 2.133
COSINE_AMPLITUDE = 1.17
LOBES = 24
#: Shared sharpness of the light's lobes: 24 axes lie ~45 deg apart, and lobes of this
#: width overlap enough that their sum can be smooth (a sky) or peaked (a sun).
DEFAULT_SHARPNESS = 6.0
#: Rows (elevations, poles included) and columns (azimuths) of the table that
#: :meth:`SGLight.shading_at` reads: the shading is as smooth as a lobe of sharpness ~1.6
#: over the normal, so bilinear reads of this grid (1.4 deg apart) are within 1e-4 of the
#: closed form, at a tenth of its cost for a texture's half-million normals.
_TABLE_ROWS, _TABLE_COLUMNS = 129, 256


def fibonacci_axes(count: int = LOBES) -> np.ndarray:
    """(count, 3) unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(np.maximum(1.0 - z * z, 0.0))
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


class SGLight(torch.nn.Module):
    """24 fixed-axis SGs, one shared sharpness, softplus amplitudes (white light)."""

    def __init__(self, count: int = LOBES, sharpness: float = DEFAULT_SHARPNESS, amplitude: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("axes", torch.as_tensor(fibonacci_axes(count), dtype=torch.float32))
        self.register_buffer("sharpness", torch.tensor(float(sharpness)))
        # softplus^-1(amplitude), so a fresh light is uniform with that amplitude.
        raw = math.log(math.expm1(amplitude)) if amplitude < 20 else amplitude
        self.raw_amplitude = torch.nn.Parameter(torch.full((count,), raw, dtype=torch.float32))

    @property
    def amplitudes(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_amplitude)

    def irradiance(self, normals: torch.Tensor) -> torch.Tensor:
        """E(n) for unit normals (..., 3): (...,) scalar (white light)."""
        return self.irradiance_basis(normals) @ self.amplitudes

    def irradiance_basis(self, normals: torch.Tensor) -> torch.Tensor:
        """(..., K): each lobe's irradiance at unit amplitude, so ``E(n) = basis @ amplitudes``.

        Axes and sharpness are fixed, so the irradiance is linear in the amplitudes: with
        fixed normals the basis is computed once and a light fit is a matrix product.
        """
        # sg_inner's |s1 mu + s2 n| from the dot products (the axes are unit): one (..., K)
        # matrix product instead of a (..., K, 3) sum, exact for normals of any length.
        s1, s2 = self.sharpness.to(normals.dtype), COSINE_SHARPNESS
        cos = normals @ self.axes.to(normals.dtype).T
        n2 = (normals * normals).sum(-1, keepdim=True)
        d = torch.sqrt((s1 * s1 + s2 * s2 * n2 + 2.0 * s1 * s2 * cos).clamp_min(1e-12)).clamp_min(1e-6)
        # exp(d - s1 - s2) - exp(-d - s1 - s2) with one exponential: d <= s1 + s2 (about 8),
        # so exp(d) stays far from overflow.
        grow = torch.exp(d)
        return (2.0 * math.pi * COSINE_AMPLITUDE) * torch.exp(-(s1 + s2)) * (grow - 1.0 / grow) / d

    def shading(self, normals: torch.Tensor) -> torch.Tensor:
        """Lambertian outgoing radiance per unit albedo: E(n) / pi."""
        return self.irradiance(normals) / math.pi

    @torch.no_grad()
    def shading_at(self, normals: np.ndarray) -> np.ndarray:
        """:meth:`shading` of many unit normals (M, 3), numpy in and out (float64): read
        bilinearly off a table of the shading over the sphere (elevation x azimuth)."""
        rows, columns = _TABLE_ROWS, _TABLE_COLUMNS
        elevation = np.linspace(-0.5 * math.pi, 0.5 * math.pi, rows)
        azimuth = np.arange(columns + 1) * (2.0 * math.pi / columns) - math.pi  # the seam column twice
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")
        grid = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
        table = self.shading(torch.as_tensor(grid, dtype=torch.float32, device=self.axes.device)).cpu().numpy()
        table = table.astype(np.float64).ravel()
        normals = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
        y = (np.arcsin(np.clip(normals[:, 2], -1.0, 1.0)) + 0.5 * math.pi) * ((rows - 1) / math.pi)
        x = (np.arctan2(normals[:, 1], normals[:, 0]) + math.pi) * (columns / (2.0 * math.pi))
        y0 = np.minimum(y.astype(np.int64), rows - 2)
        x0 = np.minimum(x.astype(np.int64), columns - 1)
        fy, fx = y - y0, x - x0
        at = y0 * (columns + 1) + x0
        below = table[at] * (1.0 - fx) + table[at + 1] * fx
        above = table[at + columns + 1] * (1.0 - fx) + table[at + columns + 2] * fx
        return below * (1.0 - fy) + above * fy

    def radiance(self, directions: torch.Tensor) -> torch.Tensor:
        """Radiance (...,) arriving from unit directions (..., 3)."""
        cos = directions @ self.axes.T
        return (self.amplitudes * torch.exp(self.sharpness * (cos - 1.0))).sum(-1)

    @torch.no_grad()
    def scale_(self, factor: float) -> None:
        """Multiply every amplitude by ``factor`` (> 0)."""
        amp = self.amplitudes * factor
        self.raw_amplitude.copy_(amp + torch.log(-torch.expm1(-amp)))  # softplus^-1

    def to_json(self) -> dict:
        """The format the Blender add-on reads (world radiance, linear RGB, Z up)."""
        axes = self.axes.detach().cpu().double().numpy()
        amps = self.amplitudes.detach().cpu().double().numpy()
        s = float(self.sharpness)
        return {
            "ambient": [0.0, 0.0, 0.0],
            "lobes": [
                {"axis": [float(x) for x in axis], "sharpness": s, "amplitude": [float(a)] * 3}
                for axis, a in zip(axes, amps)
            ],
        }

    @classmethod
    def from_json(cls, doc: dict) -> "SGLight":
        """Inverse of :meth:`to_json` (for lights written by this module: fixed axes, white)."""
        lobes = doc["lobes"]
        light = cls(count=len(lobes), sharpness=float(lobes[0]["sharpness"]))
        axes = np.asarray([lobe["axis"] for lobe in lobes], dtype=np.float64)
        amps = np.asarray([np.mean(lobe["amplitude"]) for lobe in lobes], dtype=np.float64)
        light.axes.copy_(torch.as_tensor(axes / np.linalg.norm(axes, axis=1, keepdims=True)))
        with torch.no_grad():
            a = torch.as_tensor(amps, dtype=torch.float32).clamp_min(1e-8)
            light.raw_amplitude.copy_(a + torch.log(-torch.expm1(-a)))
        return light

    @torch.no_grad()
    def environment_image(self, width: int = 512, height: int = 256) -> np.ndarray:
        """(height, width, 3) float32 equirectangular radiance map, first row = top (+Z).

        Blender's Environment Texture (Cycles/EEVEE, default mapping) looks direction
        ``(x, y, z)`` up at ``u = 0.5 - atan2(y, x) / (2 pi)``, ``v = 0.5 + asin(z) / pi``
        (v = 0 is the bottom row): the image centre faces +X, +Y is a quarter to the
        left, the top row is the zenith. Verified by rendering with Cycles in
        ``tests/test_reconstruction_light.py`` when bpy is installed.
        """
        u = (np.arange(width) + 0.5) / width
        v = 1.0 - (np.arange(height) + 0.5) / height  # first row at the top
        azimuth = (0.5 - u) * 2.0 * math.pi  # atan2(y, x)
        elevation = (v - 0.5) * math.pi
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
        d = torch.as_tensor(dirs, dtype=torch.float32, device=self.axes.device)
        rad = self.radiance(d).cpu().numpy().astype(np.float32)
        return np.repeat(rad[..., None], 3, axis=-1)


def benchmark_view(doc: dict) -> dict:
    """Extra keys for ``benchmarks/quality/metrics.py``: per-lobe arrays whose irradiance
    sum, times the texture's albedo *in linear light*, is the rendered colour (it has no
    1/pi, so the amplitudes carry it)."""
    lobes = doc["lobes"]
    return {
        "space": "linear",
        "axes": [lobe["axis"] for lobe in lobes],
        "sharpness": [lobe["sharpness"] for lobe in lobes],
        "amplitudes": [lobe["amplitude"][0] / math.pi for lobe in lobes],
    }
