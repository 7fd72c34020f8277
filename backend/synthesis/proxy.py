"""The built-in "default" model: a quick geometric proxy, not diffusion.

It needs no weights and no GPU, so the whole pipeline runs anywhere: the reference
silhouette is inflated into a closed shell (:mod:`.proxy_geometry`), textured with the
image on the front and its mirror image on the back, and rendered from each requested
pose with the z-buffered rasteriser (:mod:`blend123.backend.raster`). Views are consistent by
construction; what they cannot show is what the image does not.

The shell is placed where the reference photo shows the subject, at its true size: seen
through the reference camera (its pose, its lens) it covers the photo's subject exactly.
Each view is rendered with the asking camera's own intrinsics (both fields of view, lens
shift, non-square frames), so a longer lens zooms in and a wider one zooms out.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from blend123.backend.images import as_rgba, prepare_reference
from blend123.backend.raster import rasterize_screen
from blend123.backend.synthesis.proxy_geometry import FILL, ProxySurface, build_surface
from blend123.backend.synthesis.registry import CARDS, ModelCard, SynthesisRequest
from blend123.backend.synthesis.scene import subject_in_world
from blend123.protocol.camera import CameraIntrinsics, SphericalPose
from blend123.protocol.errors import BAD_REQUEST, ProtocolError

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
    card: ModelCard = CARDS["default"]
    holds_tensors = False  # numpy only: releasing it needs no garbage-collection pass

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, int], ProxySurface] = OrderedDict()
        self._placed: tuple[ProxySurface, tuple, np.ndarray] | None = None  # the last placement
        self._lock = threading.Lock()

    def check(self, request: SynthesisRequest) -> None:
        self.card.refuse_unsupported(self.name, request)

    def __call__(self, request: SynthesisRequest) -> np.ndarray:
        """(N, h, w, 4) uint8 RGBA views in the asking camera, transparent background.

        Raises :class:`blend123.backend.images.ImageError` when no subject can be found in
        the reference image.
        """
        self.check(request)
        camera = request.camera
        vertices, surface = self.placed(request, max(camera.width, camera.height, GRID))
        views = np.zeros((len(request.poses), camera.height, camera.width, 4), np.uint8)
        for i, pose in enumerate(request.poses):
            views[i] = render_view(surface, vertices, pose.to_c2w(), camera)
            request.progress("views", (i + 1) / len(request.poses))
        return views

    def sds_guide(self, image: np.ndarray, c2w: np.ndarray):
        raise ProtocolError(
            BAD_REQUEST, "the default model is not a Zero123-class model: it cannot guide SDS", "use zero123-xl or stable-zero123 as the sds model"
        )

    def placed(self, request: SynthesisRequest, texture_size: int) -> tuple[np.ndarray, ProxySurface]:
        """The proxy's world vertices for this photo and reference camera, and its surface:
        computed once, then reused for every view of an orbit (which asks one pose at a time)."""
        surface = self.surface(request.image, texture_size)
        key = (request.reference, request.reference_fov_deg)
        with self._lock:
            placed = self._placed
            if placed is not None and placed[0] is surface and placed[1] == key:
                return placed[2], surface
        subject = subject_in_world(request.image, request.reference, request.reference_fov_deg)
        vertices = surface.world_vertices(subject)
        with self._lock:
            self._placed = (surface, key, vertices)
        return vertices, surface

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
        surface = build_surface(prepare_reference(rgba, size=texture_size, fill=FILL), grid=GRID)
        with self._lock:
            self._cache[key] = surface
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return surface


def render_view(surface: ProxySurface, vertices: np.ndarray, c2w: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    """One (camera.height, camera.width, 4) uint8 view of the placed proxy."""
    xy, depth = camera.project(c2w, vertices)
    frags = rasterize_screen(xy, depth, surface.triangles, camera.width, camera.height, front_only=True)
    covered = frags.covered
    triangle = frags.face[covered]
    uv = frags.interpolate(surface.xy, surface.triangles)
    colour = _bilinear(surface.texture, uv)
    colour[surface.back[triangle]] *= BACK_SHADE
    out = np.zeros((camera.height, camera.width, 4), np.uint8)
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
