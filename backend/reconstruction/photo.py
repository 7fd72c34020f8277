"""Photo-consistency carving: find the concavities that masks cannot see.

The visual hull fills the inside of a bowl or a mug, and a ring's hole seen at a slant,
because silhouettes only bound a subject from outside. Colour sees them: a point of the
hull that is really on the surface shows the same colour to every camera that sees it
(the views are of a diffuse subject under fixed light), while a point on the hull's
"lid" over a bowl projects onto different parts of the inside in different views.

For every view, rays through the subject mask are walked one voxel at a time through the
hull. Each step's point carries a small patch parallel to the view's image plane (3 x 3
samples, 2 pixels apart: a fine pattern's cell, a checker square a few pixels wide, is
then never all a patch sees, or the patch would match it at any depth); the
patch is projected into the nearest other views and compared with the view's own pixels,
and the cost is the mean of the ``matches`` smallest of those differences, so cameras that
do not see the point (occlusion) do not count against it. The ray's surface is its best-matching
step, unless the hull's entry point matches almost as well (flat colour matches at every
depth, and there the hull is the safe guess). The entry's patch lies in the hull's tangent
plane there (within half a voxel of depth) instead of facing the view: a surface the hull
has right, seen at a slant (a checkered table top under a low orbit), then matches as the
plane it is, where a facing patch spreads over depths the neighbours see apart, fails, and
sends the walk to a chance match under the surface. Steps in front of the surface vote the
voxel they fall in free, the surface step votes its voxel solid; a voxel is carved when
rays of at least ``views`` views found it free and more rays found it free than found it
surface, so a chance match behind the true surface is outvoted where the other rays agree
on it.
Points the hull already has right match at entry and carve nothing, so convex parts keep
the hull's sub-voxel silhouette surface.

Two things look like a cavity to that vote and are not. A highlight: its pixel matches no
other view at the true surface, and walking on finds the reflection's virtual image behind
it, on which the views agree; a ray whose pixel is brighter in every channel than its
neighbours see the hull's entry is not walked. A chance match in one or two views (a
frame's inconsistent detail, a fine pattern): the carved regions whose voxels were found
free by fewer than ``region_views`` views on average are given back to the hull.

The result is the hull field lowered where space was carved:
``min(hull field, signed distance to the free space + margin)``, in world units.
Runs with torch on the CPU or CUDA.
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from blend123.protocol.camera import focal_px, pixel_rays

from ..progress import photo_fractions
from .carve import HullGrid
from .parallel import in_order
from .projection import camera_to_pixels, world_to_camera


#: A slanted patch's samples lie within this many voxels of its centre's depth: the hull
#: places its surface to about half a voxel, and its tangent plane says nothing beyond
#: that (a curved surface seen at a slant leaves it within a patch).
_SLANT_DEPTH_VOXELS = 0.5
#: A highlight's pixel is brighter than this share of the neighbours see its point. The
#: nearest neighbours may catch the same highlight (all of them: a glossy ball's highlights
#: went undetected); half of them took carving from cavities' lids by chance (the bowl
#: -0.006 F@1%, the degraded mug below its masks' hull), three quarters did not.
_HIGHLIGHT_QUANTILE = 0.75
#: Rays per batch: bounds the memory of the (rays x steps x patch pixels) cost tensors.
_RAY_CHUNK = 2048


@dataclass
class PhotoOptions:
    neighbours: int = 6  # other views each ray's points are compared in
    matches: int = 3  # the cost averages this many best-agreeing neighbours (the rest may not see the point)
    max_angle_deg: float = 75.0  # between viewing directions of a view and its neighbours
    max_cost: float = 0.1  # a ray whose best match differs more than this (0..1 colour) tells nothing
    entry_tolerance: float = 0.02  # keep the hull's entry point when it matches within this of the best
    surface_weight: float = 0.5  # a voxel is carved only with more free votes than this times its surface votes
    ray_stride: int = 0  # every n-th pixel along each image axis casts a ray (0: width / 128)
    blur_px: float = 1.0  # Gaussian on the views before comparing (resampling noise)
    patch_radius: int = 1  # patches of (2r + 1)^2 samples are compared
    # Pixels between the patch's samples: 2 spans 5 x 5 pixels at the cost of 3 x 3 (on the
    # quality set's fine checker mesh F@1% 0.877 -> 0.894, its albedo 19.33 -> 19.56 dB;
    # a dense 5 x 5 patch did as well at 2-3x the time).
    patch_step: int = 2
    views: int = 2  # views whose rays must find a voxel free to carve it
    # A carved region (26-connected) stays only where the views that found its voxels free
    # average at least this many (see ``_corroborated``); 0 keeps every region.
    region_views: float = 3.0
    # A ray whose pixel is brighter than the neighbours see its hull entry, in every colour
    # channel, by more than this (0..1) looks at a highlight: it is not walked (see ``_entry_test``).
    highlight_margin: float = 0.1
    vote_stride: int = 2  # the vote grid's voxel is this many hull-grid voxels wide
    margin_voxels: float = 0.5  # carving shallower than this is ignored (vote-grid voxels)
    alpha_threshold: int = 127
    slanted_entry: bool = True  # the hull's entry patch lies in the hull's tangent plane


@dataclass(frozen=True)
class PhotoWork:
    """What photo carving will do, sampled before it starts: its time follows it
    (``progress.photo_seconds``), where the object's silhouettes do not (tiles' fine
    checker fails the entry match on most rays, so they are walked through a thick box:
    3x the time of an object with as many mask pixels)."""

    view_rays: tuple[int, ...]  # rays each view casts
    compared: float  # patch points the rays will compare, estimated from a sample of them

    @property
    def rays(self) -> int:
        return sum(self.view_rays)


#: Rays sampled from each of a few views to estimate :class:`PhotoWork`: the entry test
#: costs one patch comparison a ray, 0.05-0.2 s in all on one thread (2-5% of the stage).
_WORK_SAMPLE_RAYS = 256
_WORK_SAMPLE_VIEWS = 3


@dataclass
class PhotoResult:
    grid: HullGrid  # the hull grid with the free space carved out of its field
    free: np.ndarray  # bool on the vote grid (every ``vote_stride``-th hull voxel): free space
    depth: list[np.ndarray]  # per view (H, W): surface distance along each ray, NaN where none


def photo_carve(
    hull: HullGrid,
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    options: PhotoOptions = PhotoOptions(),
    device: torch.device | str = "cpu",
    on_progress: Callable[[float], None] = lambda fraction: None,
    workers: int = 1,
    on_work: Callable[[PhotoWork], None] = lambda work: None,
) -> PhotoResult:
    """Carve out of ``hull`` the space the views' colours show to be empty.

    ``images`` (N, H, W, 4) uint8 RGBA with alpha as the subject mask, ``c2w`` (N, 4, 4).
    ``on_progress`` gets the fraction done after each view; it may raise to cancel.
    ``workers`` > 1 walks that many views at once on the CPU, in threads (torch releases
    the GIL inside its operations): for small operations that beats splitting each one
    over threads. The votes are summed in view order either way, so the result does not
    depend on it. ``on_work`` hears what the walk will do (:class:`PhotoWork`) before it
    starts, so a progress clock can plan the stage.
    """
    walker = _Walker(hull, images, c2w, camera_angle_x, options, torch.device(device))
    work = walker.work()
    on_work(work)
    # The set-up, then each view, in proportion to the time the work sampled foretells.
    fractions = photo_fractions(list(work.view_rays), work.compared)
    on_progress(fractions[0])
    votes = _Votes.on(walker.hull, options.vote_stride)
    depths = []
    count = len(images)
    threads = workers if walker.device.type == "cpu" else 1
    with closing(in_order(lambda i: walker.walk_view(i, votes), range(count), threads, "blend123-photo")) as walked:
        for i, (depth, view_free, view_surface) in enumerate(walked):  # summed in view order
            votes.free += view_free
            votes.surface += view_surface
            votes.views += (view_free > 0).to(votes.views.dtype)
            depths.append(depth)
            on_progress(fractions[i + 1])
    free = votes.decide(options)
    field_np = _carved_field(hull, free, options.vote_stride, options.margin_voxels)
    on_progress(1.0)
    return PhotoResult(HullGrid(hull.origin, hull.spacing, field_np), free, depths)


def photo_work(
    hull: HullGrid, images: np.ndarray, c2w: np.ndarray, camera_angle_x: float, options: PhotoOptions = PhotoOptions(), device: torch.device | str = "cpu"
) -> PhotoWork:
    """What :func:`photo_carve` of these would do, sampled as it samples it before it starts."""
    return _Walker(hull, images, c2w, camera_angle_x, options, torch.device(device)).work()


class _Walker:
    """The views prepared for comparison, and the walk of each one's rays through the hull."""

    def __init__(self, hull: HullGrid, images: np.ndarray, c2w: np.ndarray, camera_angle_x: float, options: PhotoOptions, device: torch.device) -> None:
        self.images, self.c2w, self.camera_angle_x, self.options, self.device = images, c2w, camera_angle_x, options, device
        self.count, self.height, self.width = images.shape[:3]
        self.colours = _prepared_colours(images, options.blur_px, options.alpha_threshold).to(device)
        self.hull = _Grid(
            torch.as_tensor(hull.field, dtype=torch.float32, device=device)[None, None],
            torch.as_tensor(hull.origin, dtype=torch.float32, device=device),
            hull.spacing,
            torch.tensor(hull.field.shape, device=device),
        )
        self.w2c = torch.as_tensor(np.linalg.inv(c2w), dtype=torch.float32, device=device)
        self.focal = focal_px(camera_angle_x, self.width)
        self.stride = options.ray_stride or max(1, round(self.width / 128))

    def _neighbours(self, i: int) -> list[int]:
        return _neighbours(self.c2w, i, self.options.neighbours, self.options.max_angle_deg)

    def rays_of(self, i: int) -> np.ndarray:
        """View ``i``'s ray pixels (every ``stride``-th on the subject; none without
        neighbours to compare in: its rays would tell nothing)."""
        if not self._neighbours(i):
            return np.zeros((0, 2), dtype=np.int64)
        stride, pick = self.stride, np.zeros((self.height, self.width), dtype=bool)
        pick[::stride, ::stride] = self.images[i, ::stride, ::stride, 3] > self.options.alpha_threshold
        return np.argwhere(pick)

    def _view(self, i: int) -> "_View":
        neighbours = self._neighbours(i)
        o = self.options
        return _View(self.colours[i], self.colours[neighbours], self.w2c[neighbours], self.c2w[i], self.focal, o.patch_radius, o.matches, o.patch_step, self.hull.spacing)

    def _rays(self, i: int) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """View ``i``'s rays through pixels: (pixels, origins, directions) of a pixel batch."""
        o, d = pixel_rays(self.c2w[i], self.camera_angle_x, self.width, self.height)

        def batch(yx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rows, cols = yx[:, 0], yx[:, 1]
            return (
                torch.as_tensor(yx, dtype=torch.long, device=self.device),
                torch.as_tensor(o[rows, cols], dtype=torch.float32, device=self.device),
                torch.as_tensor(d[rows, cols], dtype=torch.float32, device=self.device),
            )

        return batch

    def walk_view(self, i: int, votes: "_Votes") -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """View ``i``'s surface depths and its own free and surface votes."""
        pixels = self.rays_of(i)
        depth = np.full((self.height, self.width), np.nan, dtype=np.float32)
        view_free, view_surface = torch.zeros_like(votes.free), torch.zeros_like(votes.surface)
        if len(pixels):
            view, rays, found = self._view(i), self._rays(i), []
            for start in range(0, len(pixels), _RAY_CHUNK):
                yx, rays_o, rays_d = rays(pixels[start : start + _RAY_CHUNK])
                found.append(_walk(view, self.hull, yx, rays_o, rays_d, self.options, votes, view_free, view_surface))
            depth[pixels[:, 0], pixels[:, 1]] = torch.cat(found).cpu().numpy()
        return depth, view_free, view_surface

    def work(self) -> PhotoWork:
        """:class:`PhotoWork` from the entry test of a few hundred rays of a few views
        spread over the orbit: the rays whose entry fails are walked through the hull, and
        the hull's depth along them is what the stage's time follows."""
        pixels = [self.rays_of(i) for i in range(self.count)]
        view_rays = tuple(len(p) for p in pixels)
        spread = np.linspace(0, self.count - 1, min(self.count, _WORK_SAMPLE_VIEWS)).round().astype(int)
        sampled = [int(i) for i in spread if len(pixels[i])]
        rng = np.random.default_rng(0)  # the same sample, so the same plan, for the same views
        per_ray = []
        for i in sampled:
            yx = pixels[i][rng.choice(len(pixels[i]), min(_WORK_SAMPLE_RAYS, len(pixels[i])), replace=False)]
            ray = _entry_test(self._view(i), self.hull, *self._rays(i)(yx), self.options)
            # Every ray that enters the hull compares its entry; a walked one each step behind it.
            compared = ray.inside.any(1).sum() + (ray.inside & ~ray.at_entry)[ray.walk].sum()
            per_ray.append(float(compared) / len(yx))
        rays = sum(view_rays)
        return PhotoWork(view_rays, rays * float(np.mean(per_ray)) if per_ray else float(rays))


@dataclass
class _Grid:
    """The hull field as a tensor for ``grid_sample``, and where its voxels are."""

    field: torch.Tensor  # (1, 1, X, Y, Z)
    origin: torch.Tensor  # (3,)
    spacing: float
    shape: torch.Tensor  # (3,) long

    def at(self, points: torch.Tensor) -> torch.Tensor:
        """The field at world ``points`` (..., 3), trilinear; the border's value outside."""
        size = (self.shape - 1).to(points.dtype)
        unit = ((points - self.origin) / self.spacing / size * 2.0 - 1.0).flip(-1)  # grid_sample reads (z, y, x)
        value = F.grid_sample(self.field, unit.reshape(1, 1, 1, -1, 3), align_corners=True, padding_mode="border")
        return value.view(points.shape[:-1])


@dataclass
class _Votes:
    """Counts on the vote grid (``stride`` hull voxels per voxel)."""

    spacing: float
    shape: torch.Tensor  # (3,) long
    origin: torch.Tensor
    free: torch.Tensor  # (X * Y * Z,) rays that found the voxel free
    surface: torch.Tensor  # rays whose surface is in the voxel
    views: torch.Tensor  # views with at least one ray that found it free

    @classmethod
    def on(cls, grid: _Grid, stride: int) -> "_Votes":
        # Coarser than the hull's grid, so the rays (a couple of pixels apart) leave no gaps
        # in the free space they find.
        shape = (grid.shape - 1) // stride + 1
        zeros = torch.zeros(int(shape.prod()), dtype=torch.int32, device=grid.origin.device)
        return cls(grid.spacing * stride, shape, grid.origin, zeros, zeros.clone(), zeros.clone())

    def add(self, counts: torch.Tensor, points: torch.Tensor) -> None:
        ijk = torch.round((points - self.origin) / self.spacing).long()
        ijk = ijk[((ijk >= 0) & (ijk < self.shape)).all(-1)]
        flat = (ijk[:, 0] * self.shape[1] + ijk[:, 1]) * self.shape[2] + ijk[:, 2]
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))

    def decide(self, options: PhotoOptions) -> np.ndarray:
        """Voxels rays of at least ``views`` views found free, more rays than found it surface.

        A ray whose best match lies too deep (a chance match behind the true surface) is
        outvoted where it crosses that surface, which the other rays agree on.
        """
        shape = tuple(self.shape.tolist())
        free = self.free.view(shape).float()
        surface = self.surface.view(shape).float()
        views = self.views.view(shape)
        carved = (views >= options.views) & (free > options.surface_weight * surface)
        return _corroborated(carved.cpu().numpy(), views.cpu().numpy(), options.region_views)


def _corroborated(carved: np.ndarray, views: np.ndarray, least: float) -> np.ndarray:
    """The regions of ``carved`` (26-connected) whose voxels were found free by ``least``
    views or more on average (``views``: per voxel, the views with a ray that found it free).

    A cavity's air is seen through its opening from a range of directions, so most of its
    voxels are found free by many views (the quality set's bowl 7.8 on average, the mug's
    inside 5.4, a kettle's handle hole 4.8-5.6). A chance match frees voxels for the rays of
    one or two views only: a highlight that moves with the view fails the true surface
    there and lets a step inside match (the glossy kettle: regions of 2.0-2.8 views, up to
    9 vote voxels deep into its body), as does a fine pattern seen at a slant. A voxel's
    own count cannot tell them apart: a cavity's rim is seen by few views too.
    """
    if least <= 0:
        return carved
    labels, count = ndimage.label(carved, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return carved
    mean = np.asarray(ndimage.mean(views.astype(np.float32), labels, np.arange(1, count + 1)))
    return np.concatenate([[False], mean >= least])[labels]


@dataclass
class _Entry:
    """A batch of rays marched through the hull, and the patch cost at each one's entry."""

    t: torch.Tensor  # (R, S) distances of the steps
    inside: torch.Tensor  # (R, S) the step is inside the hull
    points: torch.Tensor  # (R, S, 3)
    at_entry: torch.Tensor  # (R, S) the ray's first step inside
    cost: torch.Tensor  # (R, S) patch cost, compared at the entry only (inf elsewhere)
    walk: torch.Tensor  # (R,) the entry does not match: the ray is walked through the hull


def _entry_test(view: "_View", grid: _Grid, yx: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor, options: PhotoOptions) -> _Entry:
    t, inside = _march(grid, rays_o, rays_d)
    points = rays_o[:, None] + t[..., None] * rays_d[:, None]
    entry = inside.to(torch.int8).argmax(1)
    rows = torch.arange(len(entry), device=entry.device)
    at_entry = torch.zeros_like(inside)
    at_entry[rows, entry] = inside.any(1)
    # The hull's surface is compared as the plane it is there, not a patch facing the view.
    planes = _hull_normals(grid, points[rows, entry]) if options.slanted_entry else None
    cost = view.cost(yx, points, t, rays_d, at_entry, planes)
    entry_cost = cost.gather(1, entry[:, None])[:, 0]
    walk = inside.any(1) & ~(entry_cost <= options.entry_tolerance)
    if options.highlight_margin > 0 and bool(walk.any()):
        # A highlight is light reflected toward this view alone: its pixel is brighter in
        # every channel than the other views see the same point, and walking on finds the
        # reflection's virtual image behind the surface, where the views agree on it (on a
        # convex mirror, one point for every view), so the walk would carve into the body.
        # Such a ray tells nothing; the other views' rays find the surface there.
        glaring = walk.nonzero()[:, 0]
        walk[glaring] = view.excess(yx[glaring], points[glaring, entry[glaring]]) <= options.highlight_margin
    return _Entry(t, inside, points, at_entry, cost, walk)


def _walk(
    view: "_View",
    grid: _Grid,
    yx: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    options: PhotoOptions,
    votes: _Votes,
    view_free: torch.Tensor,
    view_surface: torch.Tensor,
) -> torch.Tensor:
    """Walk a batch of one view's rays; vote; return each ray's surface distance (NaN: none).

    A ray whose hull entry point already matches within ``entry_tolerance`` keeps it
    whatever the deeper steps cost (see ``_surface_step``), so only the other rays are
    walked all the way: on the surfaces the hull has right (most of them) the walk costs
    one step instead of the hull's depth, and the outcome is the same.
    """
    ray = _entry_test(view, grid, yx, rays_o, rays_d, options)
    t, inside, points, at_entry, cost = ray.t, ray.inside, ray.points, ray.at_entry, ray.cost
    walk = ray.walk.nonzero()[:, 0]
    if len(walk):
        deeper = inside[walk] & ~at_entry[walk]
        cost[walk] = torch.where(deeper, view.cost(yx[walk], points[walk], t[walk], rays_d[walk], deeper), cost[walk])
    surface = _surface_step(cost, inside, options)
    hit = surface >= 0
    step = torch.arange(t.shape[1], device=t.device)[None]
    # Free: inside the hull and in front of the surface found along the ray.
    votes.add(view_free, points[inside & hit[:, None] & (step < surface[:, None])])
    votes.add(view_surface, points[hit[:, None] & (step == surface[:, None])])
    return torch.where(hit, t.gather(1, surface.clamp(min=0)[:, None])[:, 0], torch.nan)


def _prepared_colours(images: np.ndarray, blur_px: float, alpha_threshold: int) -> torch.Tensor:
    """(N, 4, H, W): colours in [0, 1] lightly blurred (so resampling matches), then the mask.

    The mask channel lets comparisons skip pixels of the background, whose colour under
    alpha 0 means nothing.
    """
    rgb = images[..., :3].astype(np.float32) / 255.0
    mask = (images[..., 3:] > alpha_threshold).astype(np.float32)
    if blur_px > 0:
        # Normalised convolution: the blur averages subject pixels only, so the background
        # does not bleed into the subject's edges.
        sigma = (0, blur_px, blur_px, 0)
        weight = ndimage.gaussian_filter(mask, sigma)
        rgb = np.where(weight > 1e-3, ndimage.gaussian_filter(rgb * mask, sigma) / np.maximum(weight, 1e-3), rgb)
    return torch.as_tensor(np.concatenate([rgb, mask], -1)).permute(0, 3, 1, 2).contiguous()


def _neighbours(c2w: np.ndarray, i: int, k: int, max_angle_deg: float) -> list[int]:
    """Up to ``k`` other views with the closest viewing directions, within the angle."""
    forward = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    cosine = forward @ forward[i]
    order = [j for j in np.argsort(-cosine) if j != i and cosine[j] >= math.cos(math.radians(max_angle_deg))]
    return [int(j) for j in order[:k]]


def _hull_normals(grid: _Grid, points: torch.Tensor) -> torch.Tensor:
    """(R, 3) unit gradients of the hull field at ``points`` (central differences, a voxel
    apart); zero where the field is flat there."""
    axes = torch.eye(3, device=points.device) * grid.spacing
    value = grid.at(points[:, None] + torch.cat([axes, -axes])[None])  # (R, 6)
    gradient = value[:, :3] - value[:, 3:]
    return gradient / gradient.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _march(grid: _Grid, rays_o: torch.Tensor, rays_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps one voxel apart through the grid's box: distances (R, S) and inside-hull flags."""
    lo = grid.origin - 0.5 * grid.spacing
    hi = lo + grid.spacing * grid.shape.to(rays_o.dtype)
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0, t1 = (lo - rays_o) * inv, (hi - rays_o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    samples = int(math.ceil(float((far - near).max()) / grid.spacing)) + 1
    t = near[:, None] + (torch.arange(samples, device=rays_o.device) + 0.5) * grid.spacing
    inside = (grid.at(rays_o[:, None] + t[..., None] * rays_d[:, None]) > 0) & (t < far[:, None])
    return t, inside


class _View:
    """One reference view and its neighbours: patch colour costs of points on its rays."""

    def __init__(
        self,
        colours: torch.Tensor,
        neighbour_colours: torch.Tensor,
        neighbour_w2c: torch.Tensor,
        c2w: np.ndarray,
        focal: float,
        patch_radius: int,
        matches: int,
        patch_step: int,
        spacing: float = math.inf,
    ) -> None:
        device = colours.device
        self.spacing = spacing
        self.matches = max(1, min(matches, len(neighbour_colours)))
        steps = torch.arange(-patch_radius, patch_radius + 1, device=device) * patch_step
        dv, du = torch.meshgrid(steps, steps, indexing="ij")
        self.du, self.dv = du.reshape(-1), dv.reshape(-1)
        pose = torch.as_tensor(c2w[:3, :3], dtype=torch.float32, device=device)
        # 3D offset of each patch pixel per unit depth, parallel to this view's image plane.
        self.basis = (self.du[:, None] * pose[:, 0] - self.dv[:, None] * pose[:, 1]) / focal  # (P, 3)
        self.forward = -pose[:, 2]
        self.colours, self.neighbour_colours, self.neighbour_w2c = colours, neighbour_colours, neighbour_w2c
        self.focal = focal

    def patch(self, points: torch.Tensor, z: torch.Tensor, dirs: torch.Tensor, planes: torch.Tensor | None = None) -> torch.Tensor:
        """(M, P, 3) patch samples around ``points`` (M, 3) at depths ``z`` (M,) on rays
        ``dirs`` (M, 3): where this view's rays through the patch pixels meet the plane
        facing the view, or, given ``planes`` (M, 3) normals, the plane of that normal."""
        if planes is None:
            return points[:, None] + z[:, None, None] * self.basis
        # Patch pixel k's ray is g + b_k per unit depth (g: the point's own ray), and meets
        # the plane n.(X - point) = 0 at depth z (n.g) / (n.g + n.b_k); a flat field's zero
        # normal gives the facing patch.
        g = dirs / (dirs @ self.forward)[:, None]
        ng = (planes * g).sum(-1, keepdim=True)
        depth = z[:, None] * ng / (ng + planes @ self.basis.T)  # (M, P)
        depth = torch.where(torch.isfinite(depth), depth, z[:, None])
        bound = _SLANT_DEPTH_VOXELS * self.spacing
        depth = torch.minimum(torch.maximum(depth, z[:, None] - bound), z[:, None] + bound)
        centre = points - z[:, None] * g  # the view's camera centre
        return centre[:, None] + depth[..., None] * (g[:, None] + self.basis[None])

    def _seen(self, image: torch.Tensor, pose: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the neighbour ``image`` (4, H, W) taken from ``pose`` (w2c) shows at world
        ``points`` (..., 3): colour and mask (..., 4), bilinear; and the points' depths there."""
        height, width = image.shape[1:]
        px, py, depth = camera_to_pixels(world_to_camera(points, pose), self.focal, width, height)
        grid = torch.stack([px / width * 2 - 1, py / height * 2 - 1], -1)  # align_corners=False
        sampled = F.grid_sample(image[None], grid.view(1, 1, -1, 2), align_corners=False, padding_mode="border")
        return sampled.view(4, -1).T.reshape(*points.shape[:-1], 4), depth

    def excess(self, yx: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(R,) how much brighter the rays' pixels ``yx`` (R, 2) are than the neighbours
        see ``points`` (R, 3): the least over the colour channels of the pixel's colour less
        the neighbours' upper quartile (-1 where no neighbour sees the point on the subject)."""
        own = self.colours[:3, yx[:, 0], yx[:, 1]].T  # (R, 3)
        seen = []
        for image, pose in zip(self.neighbour_colours, self.neighbour_w2c):
            sampled, depth = self._seen(image, pose, points)
            usable = (depth > 0) & (sampled[:, 3] > 0.5)
            seen.append(torch.where(usable[:, None], sampled[:, :3], torch.nan))
        brighter_than = torch.stack(seen).nanquantile(_HIGHLIGHT_QUANTILE, dim=0)
        return torch.nan_to_num((own - brighter_than).amin(-1), nan=-1.0)

    def cost(
        self,
        yx: torch.Tensor,
        points: torch.Tensor,
        t: torch.Tensor,
        dirs: torch.Tensor,
        inside: torch.Tensor,
        planes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(R, S) patch colour difference over the best-agreeing neighbours (inf outside).

        ``yx`` (R, 2) are the rays' pixels, ``points`` (R, S, 3) their steps at distances
        ``t`` along ``dirs``; only steps ``inside`` the hull are compared. The patch faces
        this view, unless ``planes`` (R, 3) gives each ray's surface normal there: then its
        samples are where their pixels' rays meet that plane (a surface seen at a slant
        spreads a facing patch over depths the neighbours see apart).
        """
        cost = torch.full(inside.shape, torch.inf, device=points.device)
        sel = inside.nonzero(as_tuple=True)
        if not len(sel[0]):
            return cost
        height, width = self.colours.shape[1:]
        y = (yx[:, 0, None] + self.dv).clamp(0, height - 1)
        x = (yx[:, 1, None] + self.du).clamp(0, width - 1)
        own = self.colours[:, y, x].permute(1, 2, 0)[sel[0]]  # (M, P, 4)
        z = t[sel] * (dirs[sel[0]] @ self.forward)  # depth along this view's optical axis
        patch = self.patch(points[sel], z, dirs[sel[0]], None if planes is None else planes[sel[0]])
        diffs = []
        for image, pose in zip(self.neighbour_colours, self.neighbour_w2c):
            sampled, depth = self._seen(image, pose, patch)
            # Only patch pixels on the subject in both views count; a patch mostly off it
            # (near a silhouette) says nothing about this point.
            weight = own[..., 3] * sampled[..., 3]
            diff = (sampled[..., :3] - own[..., :3]).abs().mean(-1)
            diff = (weight * diff).sum(1) / weight.sum(1).clamp(min=1e-6)
            usable = (depth > 0).all(1) & (weight.mean(1) > 0.5)
            diffs.append(torch.where(usable, diff, torch.inf))
        ranked = torch.stack(diffs, -1).sort(-1).values
        # inf (no usable neighbour among the best half) marks the step as telling nothing.
        cost[sel] = ranked[..., : self.matches].mean(-1)
        return cost


def _surface_step(cost: torch.Tensor, inside: torch.Tensor, options: PhotoOptions) -> torch.Tensor:
    """Index of the step each ray's surface is at, -1 where the ray tells nothing.

    The best-matching step along the ray wins, unless the hull's own entry point matches
    almost as well: in flat colour every depth matches, and the hull is the safe guess.
    """
    cost = torch.where(inside, cost, torch.inf)
    best, at = cost.min(1)
    entry = inside.to(torch.int8).argmax(1)
    entry_cost = cost.gather(1, entry[:, None])[:, 0]
    step = torch.where(entry_cost <= best + options.entry_tolerance, entry, at)
    return torch.where(best < options.max_cost, step, torch.full_like(step, -1))


def _carved_field(hull: HullGrid, free: np.ndarray, stride: int, margin_voxels: float) -> np.ndarray:
    """``min(hull field, signed distance to the free space + margin)``, world units.

    ``free`` is on the vote grid (every ``stride``-th hull voxel). The margin (vote
    voxels) moves the carved surface into the free space, so a free layer thinner than it
    (noise in front of a surface the hull already has right) carves nothing.
    """
    if not free.any():
        return hull.field
    outside = ndimage.distance_transform_edt(~free) - 0.5
    inside = ndimage.distance_transform_edt(free) - 0.5
    carved = (np.where(free, -inside, outside) + margin_voxels) * (hull.spacing * stride)
    axes = [np.arange(n) / stride for n in hull.field.shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    carved = ndimage.map_coordinates(carved.astype(np.float32), coords, order=1, mode="nearest")
    return np.minimum(hull.field, carved)
