"""Bake view colours into a UV texture: multi-view fusion that keeps the views' detail.

Each texel covered by a chart is a surface point. Every view that sees it (depth test
against the view's rasterised depth map of the mesh, facing the camera, inside the subject
mask) gives a sample; the texel's colour is a weighted mean of its samples where

- the weights favour the views that see the point best: ``(cos / depth) ** SHARPNESS``,
  i.e. projected resolution (pixels per unit of surface) raised to a high power, so the
  one to three sharpest views dominate instead of all views being averaged (averaging
  views that disagree by a pixel blurs fine texture);
- samples far from the texel's robust centre (the lower median of the samples'
  luminance across views) are rejected smoothly: a specular highlight is bright in the
  one or two views near the mirror direction only, and a misregistered view shows the
  neighbouring texture; both are outvoted by the rest;
- each view's exposure and white balance is levelled first: a per-view, per-channel gain
  against the median of the views, fitted on a sample of texels (generated views drift
  from frame to frame);
- each view's small misregistration (a pixel or two, as generated views have) is fitted
  on the same texels, as one image shift per view that best matches the consensus.

The weights and the robust centre are functions of the surface point and its (smooth)
normal only, so the two sides of a UV seam, being the same points, get the same colour:
there are no seams to level. Texels no view saw, and the gutters between charts, take
the colour of the nearest baked texel, so bilinear filtering and mip-mapping never pull
in unrelated colours at chart borders.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from blend123.protocol.camera import focal_px, project_points

from ..raster import rasterize
from .parallel import all_of, in_order
from .texels import TexelSurface

#: Texels fused at once: bounds memory (chunk x views x 3 floats) for large textures, and
#: is the unit of work of the bake's threads (64k: 10-25 % faster than 128k on one thread,
#: the buffers then staying in cache).
_CHUNK_TEXELS = 1 << 16
#: Where rasterising the views' depth and fitting their gains end, as fractions of
#: :func:`bake` (duck, 2-core CPU: 0.34 s of 1.2 s, then little): an even pace through all.
_BAKE_SHARES = (0.28, 0.32)
#: Views seeing a surface more obliquely than this (cosine) do not contribute: at grazing
#: angles the colour comes from a sliver of pixels and mixes with the silhouette edge.
_MIN_COSINE = 0.1
#: Exponent on a view's projected resolution (cos / depth): 8 keeps views within ~20 deg of
#: the best one at over half its weight and those 45 deg off at 6 %.
SHARPNESS = 8.0
#: Robust rejection: a sample whose luminance is further than ``_REJECT_ABS +
#: _REJECT_REL * centre`` from the texel's centre loses its weight (Gaussian falloff).
_REJECT_ABS = 0.04
_REJECT_REL = 0.12
#: Texels sampled to fit the per-view gains and shifts.
_FIT_TEXELS = 8_000
#: Largest per-view shift (pixels) and gain change the fit may make.
_MAX_SHIFT = 3.0
#: Texels a view's shift is fitted on: seen with at least this coverage (alpha x cosine).
#: Texels seen edge-on move with the silhouette, not the texture; but a thin flat part (a
#: table's top under an orbit's low elevations) is seen at cosines of 0.2-0.45 only, and a
#: floor of 0.45 left a degraded table's views 44-49 texels, too few to fit (1.4 px off
#: their true shifts; 0.3: 0.55 px, no seen object worse by more than 0.03 px).
_FIT_MIN_COVERAGE = 0.3
_GAIN_RANGE = (0.6, 1.6)
#: A round of the fit that changes no gain and no shift by more than these ends it.
_CONVERGED_GAIN = 0.01
_CONVERGED_SHIFT = 0.25
#: After the first round, corrections all below these (sub-pixel, a couple of percent) are
#: taken as they are: further rounds would only refine noise.
_SMALL_GAIN = 0.02
_SMALL_SHIFT = 0.6
#: A view's fitted shift is kept only if it cuts its robust colour misfit by this share.
_MIN_GAIN_OF_SHIFT = 0.05
#: All views' fitted shifts are kept only if together they cut the views' disagreement
#: (each view against the median of the others) by this share.
_SHIFTS_MIN_AGREEMENT_GAIN = 0.1
#: ... and by this share when the views are registered on the first hull
#: (:func:`register_views`): measured there on the quality set, views that agree gained
#: -0.5% to +3.2% from their fitted shifts, views 1-2 px off +8.9% (the bowl, whose hull's
#: lid lies far from the inside its views show) to +59%; the middle. At 0.1 the degraded
#: bowl kept no shift: registered, its albedo 19.61 -> 20.65 dB, held-out views 23.91 ->
#: 26.04 dB, F@2% 0.795 -> 0.816 (F@1% 0.696 -> 0.689).
_REGISTER_MIN_AGREEMENT_GAIN = 0.06
#: ... and by this share in the bake of views registered before (``bake(registered=True)``):
#: their shifts there refine the registration on the final mesh, a few tenths of a pixel
#: that cannot cut the disagreement by a tenth (degraded tiles: 0.47 -> 0.34 px off the
#: true shifts, albedo 17.45 -> 17.68 dB), where views that agreed from the start keep
#: the stricter gate against fitting a rough surface's error as misregistration.
_REFINED_SHIFTS_MIN_AGREEMENT_GAIN = 0.0
#: Residual (colour, 0-1) beyond which the shift fit weights a sample down (Huber).
_HUBER = 0.1
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def bake(
    surface: TexelSurface,
    mesh_vertices: np.ndarray,
    mesh_faces: np.ndarray,
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    on_progress: Callable[[float], None] = lambda fraction: None,
    align: bool = True,
    workers: int = 1,
    registered: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused colours of the texels in ``surface``: ``(rgb (M, 3) float32, weight (M,))``.

    ``mesh_vertices``/``mesh_faces`` are the occluders for the depth test (the same
    surface, unsplit). ``images`` are (N, H, W, 4) uint8 RGBA with alpha as the mask.
    ``weight`` is the texel's coverage by the views (sum of alpha x cosine; 0 = unseen).
    ``align`` fits per-view gains and shifts first (see the module); off, every view is
    taken as given; ``registered`` says the views were moved onto each other before (by a
    pixel or two), so the shifts fitted here refine that and are kept if they bring the
    views together at all. ``on_progress`` gets the fraction done as chunks of texels
    complete.
    ``workers`` > 1 does views and chunks of texels that many at once, in threads; the
    result does not depend on it.
    """
    start, end = _BAKE_SHARES
    on_view = lambda i: on_progress(start * (i + 1) / len(images))  # noqa: E731
    views = _views(mesh_vertices, mesh_faces, images, c2w, camera_angle_x, on_view, workers)
    positions = surface.positions.astype(np.float32)
    normals = surface.normals.astype(np.float32)
    if align:
        gate = _REFINED_SHIFTS_MIN_AGREEMENT_GAIN if registered else _SHIFTS_MIN_AGREEMENT_GAIN
        fit_views(views, positions, normals, workers=workers, min_agreement_gain=gate)
    on_progress(end)
    m = len(positions)
    rgb = np.zeros((m, 3), dtype=np.float32)
    weight = np.zeros(m, dtype=np.float32)

    def fuse(part: slice) -> tuple[np.ndarray, np.ndarray]:
        p, n = np.ascontiguousarray(positions[part].T), np.ascontiguousarray(normals[part].T)
        n_dot_p = (n * p).sum(0)
        projections = [view.project(p, n, n_dot_p) for view in views]
        return _Samples.gather(views, projections, p.shape[1]).fuse()

    parts = [slice(chunk, chunk + _CHUNK_TEXELS) for chunk in range(0, m, _CHUNK_TEXELS)]
    with closing(in_order(fuse, parts, workers, "blend123-bake")) as fused:
        for c, (part, (colour, coverage)) in enumerate(zip(parts, fused)):
            rgb[part], weight[part] = colour, coverage
            on_progress(end + (1.0 - end) * (c + 1) / len(parts))
    return rgb, weight


def register_views(
    mesh_vertices: np.ndarray,
    mesh_faces: np.ndarray,
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    points: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    workers: int = 1,
    keep_placement: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views levelled and registered to each other on a (rough) mesh of the subject:
    ``(images (N, H, W, 4) uint8, gains (N, 3), shifts (N, 2) px)``.

    Each view's colour is divided by its fitted gain and the image (alpha with it) moved by
    its fitted shift, so the subject lands where the mesh projects in every view (with
    ``keep_placement``, the mesh moved by one translation); for
    photo-consistency and light fitting on generated views (exposure drift, a pixel or two
    of misregistration). Gains and shifts are fitted on ``points`` with unit ``normals``
    on the surface (default: points spread over the mesh by area) as :func:`bake` fits
    them on texels.
    ``workers`` > 1 does that many views at once, in threads.

    ``keep_placement``: the mesh is rough, made from these views' own silhouettes, so it
    cannot say where the subject is better than the views together do: the part of the
    shifts that a move of the subject in space would cause is taken out (see
    :func:`_without_common_motion`). Off, the views are moved onto the mesh as it is.
    """
    if points is None:
        from .mesh import surface_points

        points, normals = surface_points(mesh_vertices, mesh_faces, _FIT_TEXELS)
    views = _views(mesh_vertices, mesh_faces, images, c2w, camera_angle_x, workers=workers)
    fit_views(views, np.asarray(points, np.float32), np.asarray(normals, np.float32), workers=workers, min_agreement_gain=_REGISTER_MIN_AGREEMENT_GAIN)
    if keep_placement:
        _without_common_motion(views, np.asarray(points, np.float64).mean(0))
    gains = np.stack([v.gain for v in views])
    shifts = np.stack([v.shift for v in views])

    def levelled(view: _View) -> np.ndarray:
        premult = view.image.copy()
        premult[..., :3] /= view.gain
        moved = moved_image(premult, view.shift)
        alpha = np.clip(moved[..., 3:4], 0.0, 1.0)  # bicubic overshoots a hair at the silhouette
        straight = np.where(alpha > 1e-6, moved[..., :3] / np.maximum(alpha, 1e-6), 0.0)
        return np.clip(np.rint(np.concatenate([straight, alpha], axis=-1) * 255.0), 0, 255).astype(np.uint8)

    return np.stack(all_of(levelled, views, workers, "blend123-register")), gains, shifts


def fit_views(
    views: list["_View"],
    positions: np.ndarray,
    normals: np.ndarray,
    rounds: int = 3,
    workers: int = 1,
    min_agreement_gain: float = _SHIFTS_MIN_AGREEMENT_GAIN,
) -> None:
    """Fit each view's gain (per channel) and shift against the consensus of all views, on
    a fixed random sample of texels; sets ``gain`` and ``shift`` of ``views`` in place.
    ``workers`` > 1 fits that many views at once, in threads (each view's fit reads the
    round's shared samples and writes only its own gain and shift). The shifts are kept
    only if together they cut the views' disagreement by ``min_agreement_gain``."""
    if len(views) < 3 or len(positions) == 0:
        return
    rng = np.random.default_rng(0)
    pick = rng.choice(len(positions), size=min(_FIT_TEXELS, len(positions)), replace=False)
    p, n = np.ascontiguousarray(positions[pick].T), np.ascontiguousarray(normals[pick].T)
    projections = [view.project(p, n) for view in views]
    all_of(_View.gradients, views, workers, "blend123-gradients")  # made once, before the rounds read them
    for round_ in range(rounds):
        before = np.concatenate([np.stack([v.gain for v in views]), np.stack([v.shift for v in views])], axis=1)
        samples = _Samples.gather(views, projections, len(pick))
        # Each view against the others only: a median that can be the view itself pulls it to 1.
        targets = samples.medians_of_others()
        fit_one = lambda i: views[i].fit(projections[i], samples, i, targets[:, i])  # noqa: E731
        all_of(fit_one, range(len(views)), workers, "blend123-fit")
        after = np.concatenate([np.stack([v.gain for v in views]), np.stack([v.shift for v in views])], axis=1)
        change = np.abs(after - before)
        if change[:, :3].max() < _CONVERGED_GAIN and change[:, 3:].max() < _CONVERGED_SHIFT:
            break  # nothing left to level
        if round_ == 0 and change[:, :3].max() < _SMALL_GAIN and change[:, 3:].max() < _SMALL_SHIFT:
            break  # consistent views (renders): one round fixes what little there is
    # The views' median is the reference: gains of 1 on average.
    gains = np.stack([v.gain for v in views])
    gains /= np.median(gains, axis=0, keepdims=True)
    for view, gain in zip(views, gains):
        view.gain = gain.astype(np.float32)
    # Shifts fitted against a wrong surface (a hull's roof under a fine pattern) compensate
    # its error, not the views': they move consistent views apart. Keep them only if they
    # bring the views together (measured: views really 1-2 px off agree 35-54% better
    # shifted; clean renders of the quality set -9% to +2%).
    _keep_shifts_that_help(views, projections, len(pick), min_agreement_gain)


def _without_common_motion(views: list["_View"], centre: np.ndarray) -> None:
    """Take out of the views' shifts the part one move of the subject in space explains.

    The views' consensus hardly sees such a move (along the surface, not at all), and on
    a rough mesh (a visual hull, its concavities filled and a roof over its top) that part
    followed the mesh's errors, not the subject: 0.1-0.56 px on the quality set's degraded
    views, which moved the carved mesh off the subject (taking it out: mean F@1% 0.844 ->
    0.847; see the README). The move is fitted as one translation at ``centre``, seen by
    each view through its projection's derivative (least squares over all views; a
    direction the views barely see is left alone), and the shifts it explains are
    subtracted."""
    shifts = np.stack([view.shift for view in views]).astype(np.float64)
    if len(views) < 3 or not shifts.any() or not np.isfinite(shifts).all():
        return
    step = 1e-3 * float(np.median([np.linalg.norm(view.c2w[:3, 3] - centre) for view in views]))
    moved = np.concatenate([centre[None], centre + step * np.eye(3)])
    height, width = views[0].depth.shape
    jacobian = []  # (N, 2, 3): pixels per unit of translation, per view
    for view in views:
        pixels, _ = project_points(view.c2w, view.camera_angle_x, width, height, moved)
        jacobian.append((pixels[1:] - pixels[0]).T / step)
    jacobian = np.stack(jacobian)
    move, *_ = np.linalg.lstsq(jacobian.reshape(-1, 3), shifts.reshape(-1), rcond=1e-2)
    for view, seen in zip(views, jacobian @ move):
        view.shift = (view.shift - seen).astype(np.float32)


def _keep_shifts_that_help(views: list["_View"], projections: list[_Projection], count: int, min_gain: float) -> None:
    """Zero the views' shifts unless, together, they cut the views' disagreement on the
    ``count`` projected points by ``min_gain``."""
    shifts = [view.shift for view in views]
    if max(float(np.abs(shift).max()) for shift in shifts) == 0:
        return
    fitted = _disagreement(views, projections, count)
    for view in views:
        view.shift = np.zeros(2, dtype=np.float32)
    if fitted < (1.0 - min_gain) * _disagreement(views, projections, count):
        for view, shift in zip(views, shifts):
            view.shift = shift


def _disagreement(views: list["_View"], projections: list[_Projection], count: int) -> float:
    """Mean colour distance (sum over channels) of each view's samples from the median of
    the other views' samples of the same points."""
    samples = _Samples.gather(views, projections, count)
    others = samples.medians_of_others()
    seen = (samples.weight > 1e-6) & np.isfinite(others).all(axis=-1)
    return float(np.abs(samples.rgb - others).sum(axis=-1)[seen].mean()) if seen.any() else 0.0


def _views(
    mesh_vertices, mesh_faces, images, c2w, camera_angle_x, on_view: Callable[[int], None] = lambda i: None, workers: int = 1
) -> list["_View"]:
    n_views, height, width = images.shape[:3]

    def view(i: int) -> _View:
        depth = rasterize(c2w[i], camera_angle_x, width, height, mesh_vertices, mesh_faces).depth
        return _View(c2w=c2w[i], camera_angle_x=camera_angle_x, depth=depth, image=_premultiplied(images[i]))

    views = []
    with closing(in_order(view, range(n_views), workers, "blend123-depth")) as made:
        for i, made_view in enumerate(made):
            views.append(made_view)
            on_view(i)
    return views


@dataclass
class _Projection:
    """Where the points a view sees fall in it."""

    indices: np.ndarray  # (K,) of the points given
    pixels: np.ndarray  # (K, 2)
    resolution: np.ndarray  # (K,) cos / distance: pixels per unit of surface, up to the focal
    cosine: np.ndarray  # (K,)


@dataclass
class _View:
    c2w: np.ndarray
    camera_angle_x: float
    depth: np.ndarray  # (H, W) rasterised depth of the mesh, +inf where empty
    image: np.ndarray  # (H, W, 4) float32 premultiplied RGBA
    gain: np.ndarray = None  # (3,) the view's colour / the consensus
    shift: np.ndarray = None  # (2,) pixels added to projections before sampling
    _gradients: np.ndarray | None = None
    _w2c: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.gain = np.ones(3, dtype=np.float32) if self.gain is None else self.gain
        self.shift = np.zeros(2, dtype=np.float32) if self.shift is None else self.shift

    def project(self, positions: np.ndarray, normals: np.ndarray, n_dot_p: np.ndarray | None = None) -> _Projection:
        """The points this view sees: in frame, facing it, not occluded.

        ``positions`` and ``normals`` are (3, K) float32 columns (x, y, z rows): every step
        below is then an elementwise pass over contiguous rows, where (K, 3) rows would
        need a slow gather of three floats per point. ``n_dot_p`` (normals . positions),
        when given, saves recomputing it for every view.
        """
        height, width = self.depth.shape
        centre = self.c2w[:3, 3].astype(np.float32)
        if n_dot_p is None:
            n_dot_p = (normals * positions).sum(0)
        # n . (centre - p) > 0 first: a cheap cull of the half that faces away.
        front = np.flatnonzero(centre @ normals - n_dot_p > 0.0)
        p = np.take(positions, front, axis=1)
        to_camera = centre[:, None] - p
        distance = np.maximum(np.sqrt((to_camera * to_camera).sum(0)), 1e-12)
        cosine = (np.take(normals, front, axis=1) * to_camera).sum(0) / distance
        keep = np.flatnonzero(cosine > _MIN_COSINE)
        facing = front[keep]
        cosine, distance = cosine[keep], distance[keep]
        x, y, depth = self._project_points(np.take(p, keep, axis=1))
        in_frame = (x >= 0) & (x < width) & (y >= 0) & (y < height) & (depth > 0)
        col = np.clip(np.floor(x).astype(np.int64), 0, width - 1)
        row = np.clip(np.floor(y).astype(np.int64), 0, height - 1)
        # Depth slack: the surface point and the pixel centre differ by up to about a
        # pixel footprint times the slope, which grows as the surface turns away.
        footprint = np.abs(depth) / focal_px(self.camera_angle_x, width)
        slope = np.sqrt(np.maximum(1.0 - cosine**2, 0.0)) / cosine
        visible = np.flatnonzero(in_frame & (depth <= self.depth[row, col] + footprint * (1.5 + 2.0 * slope)))
        cos = cosine[visible].astype(np.float32)
        resolution = (cos / distance[visible]).astype(np.float32)
        pixels = np.stack([x[visible], y[visible]], axis=1).astype(np.float32)
        return _Projection(facing[visible], pixels, resolution, cos)

    def _project_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`~blend123.protocol.camera.project_points` of (3, K) columns: ``x, y, depth``."""
        if self._w2c is None:
            self._w2c = np.linalg.inv(np.asarray(self.c2w, dtype=np.float64))
        height, width = self.depth.shape
        cam = self._w2c[:3, :3].astype(np.float32) @ points + self._w2c[:3, 3, None].astype(np.float32)
        depth = -cam[2]
        f = focal_px(self.camera_angle_x, width)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = 0.5 * width + f * cam[0] / depth
            y = 0.5 * height - f * cam[1] / depth
        return x, y, depth

    def sample(self, projection: _Projection, gradients: bool = False):
        """``(straight rgb (K, 3), weight (K,), coverage (K,), d rgb / d pixel (K, 3, 2) or None)``
        at the projected points, shifted by the view's shift; colour levelled by its gain."""
        at = projection.pixels + self.shift
        premult = _sample_bilinear(self.image, at)
        alpha = premult[:, 3]
        rgb = premult[:, :3] / np.maximum(alpha, 1e-6)[:, None] / self.gain
        grads = None
        if gradients:
            grads = _sample_bilinear(self.gradients(), at).reshape(-1, 2, 3).transpose(0, 2, 1) / self.gain[:, None]
        # Coverage-weighted resolution: partly covered (edge) pixels count by their alpha.
        sharp = projection.resolution**SHARPNESS if SHARPNESS != 8.0 else _pow8(projection.resolution)
        return rgb, alpha * sharp, alpha * projection.cosine, grads

    def gradients(self) -> np.ndarray:
        """(H, W, 6) d colour / dx then d colour / dy of the straight colour, the background
        filled with the nearest subject colour so the silhouette is no edge."""
        if self._gradients is None:
            straight = self.image[..., :3] / np.maximum(self.image[..., 3:4], 1e-6)
            straight = fill_nearest(straight, self.image[..., 3] > 0.5)
            # Sobel in the image plane only (ndimage.sobel would smooth across channels too).
            d, s = np.array([-0.5, 0.0, 0.5]), np.array([0.25, 0.5, 0.25])
            gx = ndimage.correlate1d(ndimage.correlate1d(straight, d, axis=1, mode="nearest"), s, axis=0, mode="nearest")
            gy = ndimage.correlate1d(ndimage.correlate1d(straight, d, axis=0, mode="nearest"), s, axis=1, mode="nearest")
            self._gradients = np.concatenate([gx, gy], axis=2).astype(np.float32)
        return self._gradients

    def fit(self, projection: _Projection, samples: "_Samples", i: int, target: np.ndarray, steps: int = 3) -> None:
        """Update gain and shift from this view's samples (``samples[:, i]``, at
        ``projection``) against the consensus ``target`` of the other views."""
        seen = samples.weight[:, i] > 0
        others = (samples.weight > 0).sum(1) >= 3
        ok = seen & others & (samples.coverage[:, i] > _FIT_MIN_COVERAGE) & np.isfinite(target).all(1)
        if ok.sum() < 50:
            return
        mine, want = samples.rgb[ok, i], target[ok]
        # Gain: robust ratio per channel over bright enough texels (ratios of dark ones are noise).
        bright = want > 0.08
        gain = np.array(
            [np.median(mine[bright[:, c], c] / want[bright[:, c], c]) if bright[:, c].sum() >= 30 else 1.0 for c in range(3)]
        )
        self.gain = np.clip(self.gain * gain, *_GAIN_RANGE).astype(np.float32)
        # Shift: Gauss-Newton steps of  mine(p + d) = want  over all channels, Huber
        # weighted so outliers (highlights, occlusion) cannot drag it.
        rows = np.flatnonzero(ok)
        where = np.searchsorted(projection.indices, rows)
        sub = _Projection(rows, projection.pixels[where], projection.resolution[where], projection.cosine[where])
        start = self.shift.copy()
        start_cost = None
        for _ in range(steps):
            colour, _, _, grads = self.sample(sub, gradients=True)
            residual = (colour - want).reshape(-1)
            if start_cost is None:
                start_cost = _huber_cost(residual)
            jac = grads.reshape(-1, 2)
            robust = np.minimum(1.0, _HUBER / np.maximum(np.abs(residual), 1e-12))
            lhs = (jac * robust[:, None]).T @ jac
            # A little ridge: a direction the texture does not constrain (stripes) stays put.
            lhs += 0.01 * np.trace(lhs) / 2.0 * np.eye(2)
            if not np.isfinite(lhs).all() or np.trace(lhs) <= 1e-12:
                return
            step = -np.linalg.solve(lhs, (jac * robust[:, None]).T @ residual)
            self.shift = np.clip(self.shift + np.clip(step, -1.0, 1.0), -_MAX_SHIFT, _MAX_SHIFT).astype(np.float32)
        # Keep the move only if it explains the colours clearly better: a shift that buys
        # little is chasing what moves with the view (highlights), not misregistration.
        colour, _, _, _ = self.sample(sub)
        if start_cost is not None and _huber_cost((colour - want).reshape(-1)) > (1.0 - _MIN_GAIN_OF_SHIFT) * start_cost:
            self.shift = start


def _huber_cost(residual: np.ndarray) -> float:
    a = np.abs(residual)
    return float(np.where(a <= _HUBER, 0.5 * a * a, _HUBER * (a - 0.5 * _HUBER)).sum())


@dataclass
class _Samples:
    """Every view's sample of a set of texels: (K, N, ...) arrays, weight 0 = not seen."""

    rgb: np.ndarray  # (K, N, 3) straight colour, levelled
    weight: np.ndarray  # (K, N) fusion weight before robust rejection
    coverage: np.ndarray  # (K, N) alpha x cosine
    grad: np.ndarray | None  # (K, N, 3, 2) or None

    @classmethod
    def gather(cls, views: list[_View], projections: list[_Projection], k: int, gradients: bool = False) -> "_Samples":
        n = len(views)
        # Filled view by view into (N, K) buffers (contiguous writes), used as (K, N) views.
        rgb = np.zeros((n, k, 3), dtype=np.float32)
        weight = np.zeros((n, k), dtype=np.float32)
        coverage = np.zeros((n, k), dtype=np.float32)
        grad = np.zeros((n, k, 3, 2), dtype=np.float32) if gradients else None
        for i, (view, projection) in enumerate(zip(views, projections)):
            idx = projection.indices
            rgb[i, idx], weight[i, idx], coverage[i, idx], g = view.sample(projection, gradients)
            if gradients:
                grad[i, idx] = g
        # Relative weights: the best view of each texel has 1 (no underflow far away).
        weight /= np.maximum(weight.max(axis=0, keepdims=True), 1e-30)
        return cls(rgb.transpose(1, 0, 2), weight.T, coverage.T, None if grad is None else grad.transpose(1, 0, 2, 3))

    def medians_of_others(self) -> np.ndarray:
        """(K, N, 3): for each texel and view, the per-channel (lower) median of the samples
        of the *other* views that see the texel (NaN where fewer than one)."""
        k, n = self.weight.shape
        seen = self.weight > 1e-6
        count = seen.sum(axis=1)  # (K,)
        values = np.where(seen[..., None], self.rgb, np.inf)
        order = np.argsort(values, axis=1)  # (K, N, 3)
        ordered = np.take_along_axis(values, order, axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n)[None, :, None], axis=1)
        # Without one of the c samples, the lower median is at (c - 2) // 2 of the rest:
        # position m of the full order if the left-out one ranks above m, else m + 1.
        m = np.maximum(count - 2, 0) // 2
        at_m = np.take_along_axis(ordered, np.broadcast_to(m[:, None, None], (k, 1, 3)), axis=1)
        at_next = np.take_along_axis(ordered, np.broadcast_to(np.minimum(m + 1, n - 1)[:, None, None], (k, 1, 3)), axis=1)
        out = np.where(rank > m[:, None, None], at_m, at_next)
        out[count < 2] = np.nan
        # A view that does not see the texel leaves all c samples: the plain lower median.
        full = np.take_along_axis(ordered, np.broadcast_to((np.maximum(count - 1, 0) // 2)[:, None, None], (k, 1, 3)), axis=1)
        out = np.where(seen[..., None], out, np.where(count[:, None, None] >= 1, full, np.nan))
        return np.where(np.isfinite(out), out, np.nan).astype(np.float32)

    def fuse(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (K, 3), coverage (K,))``: robust, resolution-weighted mean of the samples."""
        # View-major (N, K) copies of the buffers (contiguous: ``gather`` filled them so).
        rgb, weight = self.rgb.transpose(1, 0, 2), self.weight.T
        luma = rgb @ _LUMA
        seen = weight > 1e-6
        count = seen.sum(axis=0)
        # Lower median of the luminance of the samples seen (unseen sort last).
        ordered = np.sort(np.where(seen, luma, np.inf), axis=0)
        centre = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[None], axis=0)[0]
        centre[count == 0] = 0.0
        spread = _REJECT_ABS + _REJECT_REL * np.abs(centre)
        deviation = (luma - centre) / spread
        w = weight * np.where(seen, np.exp(-deviation * deviation), 0.0)
        total = w.sum(axis=0)
        # A texel whose samples all disagree with its centre keeps its plain weights.
        fallback = total < 1e-6
        if fallback.any():
            w[:, fallback] = weight[:, fallback]
            total[fallback] = w[:, fallback].sum(axis=0)
        out = np.einsum("nk,nkc->kc", w, rgb) / np.maximum(total, 1e-12)[:, None]
        return np.clip(out, 0.0, 1.0).astype(np.float32), self.coverage.sum(axis=1).astype(np.float32)


def fill_texture(surface: TexelSurface, rgb: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 4) uint8 opaque texture: baked texels, everything else nearest-filled."""
    image = np.zeros((size, size, 3), dtype=np.float32)
    known = np.zeros((size, size), dtype=bool)
    image[surface.rows[valid], surface.cols[valid]] = rgb[valid]
    known[surface.rows[valid], surface.cols[valid]] = True
    image = fill_nearest(image, known)
    out = np.empty((size, size, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def fill_nearest(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Copy into each unknown pixel the value of its nearest known pixel."""
    if known.all():
        return image
    if not known.any():
        return np.full_like(image, 0.5)
    _, (r, c) = ndimage.distance_transform_edt(~known, return_indices=True)
    return image[r, c]


def _pow8(x: np.ndarray) -> np.ndarray:
    """x ** 8 by three squarings (a power is several times slower)."""
    x = x * x
    x *= x
    x *= x
    return x


def _premultiplied(image: np.ndarray) -> np.ndarray:
    """RGBA uint8 -> float32 in [0, 1] with colour times alpha.

    Interpolating premultiplied values keeps the background colour out of edge pixels.
    """
    out = image.astype(np.float32) / 255.0
    out[..., :3] *= out[..., 3:4]
    return out


def moved_image(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 ``image`` with the content at pixel p + ``shift`` (x, y) brought
    to p: bicubic (torch's Keys kernel), clamped at the border.

    Bilinear resampling at half a pixel averages neighbours and halves a fine pattern's
    contrast; registering views that way blurs them before the bake even looks (on the
    quality set's degraded fine checker the albedo lost 0.16 dB to it).
    """
    h, w = image.shape[:2]
    chw = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 + float(shift[0])) * (2.0 / w) - 1.0
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 + float(shift[1])) * (2.0 / h) - 1.0
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)[None]
    out = F.grid_sample(chw, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def _sample_bilinear(image: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear sample (M, C) of an (H, W, C) float32 image at pixel coordinates (x right,
    y down, centres at +0.5), clamped at the border.

    torch's ``grid_sample`` does it in one pass over the points, reading the image in place
    (about 8x numpy's four gathers and blends).
    """
    h, w = image.shape[:2]
    chw = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    grid = torch.from_numpy(np.ascontiguousarray(pix, dtype=np.float32)) * torch.tensor([2.0 / w, 2.0 / h]) - 1.0
    out = F.grid_sample(chw, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(chw.shape[1], -1).T.numpy()
