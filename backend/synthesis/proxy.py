"""The built-in "default" model: a quick geometric proxy, not diffusion.

It needs no weights and no GPU, so the whole pipeline runs anywhere: the reference
silhouette is inflated into a closed shell (:mod:`.proxy_geometry`), textured with the
image on the front and its mirror image on the back, and rendered from each requested
pose with the z-buffered rasteriser (:mod:`blend123.backend.raster`). Views are consistent by
construction; what they cannot show is what the image does not.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from blend123.backend.images import as_rgba, prepare_reference
from blend123.backend.progress import ProgressFn, no_progress
from blend123.backend.synthesis.proxy_geometry import ProxySurface, build_surface
from blend123.backend.raster import rasterize_screen
from blend123.protocol.camera import DEFAULT_FOV_DEG, DEFAULT_RADIUS, SphericalPose, project_points

#: The back is a guess: shade it a little darker so it reads as the far side.
BACK_SHADE = 0.85
#: Vertex lattice of the shell; the texture keeps the full output resolution.
GRID = 256
#: Proxies kept for reuse (an orbit and its follow-up requests share one).
CACHE_SIZE = 4


class ProxyViewSynthesizer:
    """Novel views of the subject from a textured, inflated silhouette."""

    name = "default"
    description = "quick proxy (geometric, not diffusion)"

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, int], ProxySurface] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(
        self,
        image: np.ndarray,
        poses: Sequence[SphericalPose],
        *,
        reference: SphericalPose = SphericalPose(0.0, -90.0, DEFAULT_RADIUS),
        camera_angle_x: float = math.radians(DEFAULT_FOV_DEG),
        resolution: int = 256,
        progress: ProgressFn = no_progress,
    ) -> np.ndarray:
        """(N, resolution, resolution, 4) uint8 RGBA views, transparent background.

        ``image`` is the reference image as seen from ``reference``; raises
        :class:`blend123.backend.images.ImageError` when no subject can be found in it.
        """
        if resolution < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")
        surface = self.surface(image, max(resolution, GRID))
        vertices = surface.world_vertices(reference, camera_angle_x)
        views = np.zeros((len(poses), resolution, resolution, 4), np.uint8)
        for i, pose in enumerate(poses):
            views[i] = render_view(surface, vertices, pose, camera_angle_x, resolution)
            progress("views", (i + 1) / len(poses))
        return views

    def surface(self, image: np.ndarray, texture_size: int) -> ProxySurface:
        """The proxy for ``image``, built once and then reused for every pose."""
        rgba = as_rgba(image)
        digest = hashlib.blake2b(rgba.tobytes(), digest_size=16)
        digest.update(np.asarray(rgba.shape, np.int64).tobytes())
        key = (digest.hexdigest(), texture_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        surface = build_surface(prepare_reference(rgba, size=texture_size), grid=GRID)
        with self._lock:
            self._cache[key] = surface
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return surface


def render_view(
    surface: ProxySurface, vertices: np.ndarray, pose: SphericalPose, camera_angle_x: float, resolution: int
) -> np.ndarray:
    """One (resolution, resolution, 4) uint8 view of the placed proxy."""
    xy, depth = project_points(pose.to_c2w(), camera_angle_x, resolution, resolution, vertices)
    frags = rasterize_screen(xy, depth, surface.triangles, resolution, resolution, front_only=True)
    covered = frags.covered
    triangle = frags.face[covered]
    uv = frags.interpolate(surface.xy, surface.triangles)
    colour = _bilinear(surface.texture, uv)
    colour[surface.back[triangle]] *= BACK_SHADE
    out = np.zeros((resolution, resolution, 4), np.uint8)
    out[covered, :3] = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
    out[covered, 3] = 255
    return out


def _bilinear(texture: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at pixel coordinates with centres at +0.5, clamped at the edges."""
    h, w = texture.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy
