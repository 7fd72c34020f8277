"""Fit the SG light (and optionally vertex offsets) to the views by differentiable rendering.

Deferred shading with a non-differentiable rasteriser: the CPU rasteriser (``raster.py``)
finds which face covers each pixel; the barycentrics of the pixel centre are then
recomputed in torch from the projected vertex positions, so gradients reach the vertices
(through positions and normals) and every per-vertex attribute. The face visibility is
cached per view and refreshed every ``rerasterize_every`` steps when the vertices move.

Rendered colour (linear light) = albedo(vertex, interpolated) * shading(normal), with the
shading ``E(n) / pi`` of the 24-SG light (``light.py``). Losses:

* photometric: L1 between rendered and input colours in sRGB-like (gamma 2.2) values,
  where the pixel is both covered and inside the subject mask;
* ``L_illum = |V(I) - shading|^2`` with V the HSV value (max of r, g, b) of the input in
  linear light: brightness variation is explained by the light, not the albedo;
* albedo total variation over mesh edges (piecewise-flat paint, sharp borders kept);
* Laplacian of the vertex offsets (when offsets are optimised).

Runs on whatever device ``device`` names (CUDA when available with ``"auto"``); the work
per step is a gather over a fixed number of sampled pixels, so it is cheap on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from blend123.protocol.camera import SphericalPose, focal_px

from .carve import camera_cube
from .light import SGLight
from .mesh import decimate
from .projection import camera_to_pixels, world_to_camera
from ..raster import rasterize
from .sds import SDSGuide


#: The fewest steps a fit that stops early takes (175-300 on the quality benchmark's
#: objects, 275 on the demo's duck, up to the cap on the mug), for its progress.
_FEWEST_STEPS = 175
#: The fit's set-up (a coarse copy of the mesh, the pixels each view sees of it, their
#: shading bases) as a fraction of the stage (duck and mug, 2-core CPU: 20-28%).
_SETUP_SHARE = 0.25


@dataclass
class RefineOptions:
    steps: int = 300
    samples: int = 16_384  # pixels per step, drawn from all views
    lr_albedo: float = 0.2
    lr_light: float = 0.5
    lr_offsets: float = 0.0  # 0: geometry fixed (only light and albedo are fitted)
    w_illum: float = 0.5
    w_albedo_tv: float = 0.02
    w_offset_laplacian: float = 50.0
    rerasterize_every: int = 50  # steps between visibility refreshes while vertices move
    alpha_threshold: int = 127
    seed: int = 0
    sds_steps: int = 0  # last steps that add masked SDS on unseen surfaces (needs a guide)
    w_sds: float = 0.01
    sds_elevations: tuple[float, float] = (-60.0, 80.0)  # range of the SDS cameras' elevations
    #: With fixed geometry, fit on the mesh decimated to this many faces (0: the mesh as
    #: given) and carry the albedo back to every vertex: the light is low-frequency, and
    #: the cost of a step then no longer grows with the output's face budget.
    coarse_faces: int = 0
    #: Stop once the loss, averaged over windows of ``stop_window`` steps, improves by less
    #: than this fraction from one window to the next (0: always run ``steps``).
    stop_tolerance: float = 0.0
    stop_window: int = 25
    min_steps: int = 100


@dataclass
class RefineResult:
    vertices: np.ndarray  # (V, 3) float64, refined (or the input when offsets are off)
    light: SGLight  # on the CPU
    albedo: np.ndarray  # (V, 3) float32 per-vertex albedo, linear light
    seen: np.ndarray  # (V,) bool: vertices of faces some input view sees
    losses: list[float] = field(default_factory=list)  # total loss per step (fewer than ``steps`` when stopped early)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def srgb_to_linear(x):
    """sRGB values in [0, 1] -> linear light (numpy or torch)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    x = lib.clip(x, 0.0, 1.0)
    return lib.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    lib = torch if isinstance(x, torch.Tensor) else np
    x = lib.clip(x, 0.0, 1.0)
    return lib.where(x <= 0.0031308, 12.92 * x, 1.055 * lib.clip(x, 0.0031308, None) ** (1 / 2.4) - 0.055)


@dataclass
class _Pixels:
    """Every usable pixel of every view: covered by the mesh and inside the mask."""

    view: torch.Tensor  # (P,) long
    xy: torch.Tensor  # (P, 2) pixel centres
    face: torch.Tensor  # (P,) long
    rgb: torch.Tensor  # (P, 3) linear


def _visible_pixels(
    vertices: np.ndarray, faces: np.ndarray, images: np.ndarray, c2w: np.ndarray, angle: float, threshold: int, device
) -> _Pixels:
    n, h, w = images.shape[:3]
    views, xys, fids, rgbs = [], [], [], []
    for i in range(n):
        frags = rasterize(c2w[i], angle, w, h, vertices, faces)
        # Strictly inside the mask: edge pixels mix subject and background colour.
        keep = frags.covered & (images[i, ..., 3] >= max(threshold, 250))
        rows, cols = np.nonzero(keep)
        views.append(np.full(rows.size, i))
        xys.append(np.stack([cols + 0.5, rows + 0.5], axis=1))
        fids.append(frags.face[rows, cols])
        rgbs.append(srgb_to_linear(images[i, rows, cols, :3].astype(np.float32) / 255.0))
    cat = np.concatenate
    return _Pixels(
        view=torch.as_tensor(cat(views), dtype=torch.long, device=device),
        xy=torch.as_tensor(cat(xys), dtype=torch.float32, device=device),
        face=torch.as_tensor(cat(fids), dtype=torch.long, device=device),
        rgb=torch.as_tensor(cat(rgbs), dtype=torch.float32, device=device),
    )


@dataclass
class _FixedShading:
    """Per usable pixel, what fixed geometry makes constant: corners, barycentrics, and the
    light's irradiance basis at the pixel's normal (so shading is one matrix product)."""

    corners: torch.Tensor  # (P * 3,) long, each pixel's three vertices in a row
    bary: torch.Tensor  # (P, 3, 1)
    basis: torch.Tensor  # (P, K)

    @classmethod
    def of(cls, vertices: torch.Tensor, faces: torch.Tensor, normals_v: torch.Tensor, pixels: _Pixels, w2c, focal, size, light: SGLight) -> "_FixedShading":
        every = torch.arange(len(pixels.view), device=vertices.device)
        with torch.no_grad():
            bary = barycentrics(vertices, faces, pixels, every, w2c, focal, size)
            corners = faces[pixels.face]
            normal = (bary[..., None] * normals_v[corners]).sum(1)
            normal = normal / torch.linalg.vector_norm(normal, dim=1, keepdim=True).clamp_min(1e-12)
            basis = light.irradiance_basis(normal) / math.pi
        return cls(corners.reshape(-1).contiguous(), bary[..., None].contiguous(), basis)

    def shade(self, albedo_v: torch.Tensor, light: SGLight) -> tuple[torch.Tensor, torch.Tensor]:
        """Albedo (P, 3) and shading (P,) of every pixel. ``index_select`` and its
        backward are 2-3x faster on the CPU than indexing with a tensor."""
        albedo = (self.bary * albedo_v.index_select(0, self.corners).view(-1, 3, 3)).sum(1)
        return albedo, self.basis @ light.amplitudes


def vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (differentiable)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_n = torch.linalg.cross(b - a, c - a)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(0, faces[:, k], face_n)
    return normals / torch.linalg.vector_norm(normals, dim=1, keepdim=True).clamp_min(1e-12)


def barycentrics(
    vertices: torch.Tensor, faces: torch.Tensor, pixels: _Pixels, idx: torch.Tensor, w2c: torch.Tensor, focal: float,
    size: tuple[int, int],
) -> torch.Tensor:
    """Perspective-correct barycentrics (S, 3) of sampled pixel centres, differentiable in the vertices."""
    width, height = size
    corners = vertices[faces[pixels.face[idx]]]  # (S, 3, 3)
    cam = world_to_camera(corners, w2c[pixels.view[idx]])  # (S, 3, 3)
    x, y, depth = camera_to_pixels(cam, focal, width, height, min_depth=1e-6)
    p = pixels.xy[idx]

    def cross(ux, uy, vx, vy):
        return ux * vy - uy * vx

    ax, bx, cx = x.unbind(1)
    ay, by, cy = y.unbind(1)
    area = cross(bx - ax, by - ay, cx - ax, cy - ay)
    area = torch.where(area.abs() < 1e-9, torch.full_like(area, 1e-9), area)
    w0 = cross(bx - p[:, 0], by - p[:, 1], cx - p[:, 0], cy - p[:, 1]) / area
    w1 = cross(cx - p[:, 0], cy - p[:, 1], ax - p[:, 0], ay - p[:, 1]) / area
    w = torch.stack([w0, w1, 1.0 - w0 - w1], dim=1) / depth
    return w / w.sum(1, keepdim=True)


def _edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def refine(
    vertices: np.ndarray,
    faces: np.ndarray,
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    options: RefineOptions = RefineOptions(),
    device: str = "auto",
    on_progress: Callable[[float], None] = lambda fraction: None,
    guide: SDSGuide | None = None,
) -> RefineResult:
    """Fit light, per-vertex albedo and (with ``lr_offsets > 0``) vertex offsets to the views.

    With a ``guide`` and ``options.sds_steps``, the last steps also add masked SDS
    (``sds.py``) on the albedo of surfaces no input view sees.
    """
    if options.coarse_faces and options.lr_offsets == 0 and guide is None and len(faces) > options.coarse_faces:
        coarse_vertices, coarse_faces = decimate(np.asarray(vertices, dtype=np.float64), np.asarray(faces), options.coarse_faces)
        on_progress(0.1 * _SETUP_SHARE)
        fit = refine(coarse_vertices, coarse_faces, images, c2w, camera_angle_x, replace(options, coarse_faces=0), device, on_progress)
        nearest = cKDTree(coarse_vertices).query(vertices)[1]
        return RefineResult(np.asarray(vertices, dtype=np.float64), fit.light, fit.albedo[nearest], fit.seen[nearest], fit.losses)

    dev = resolve_device(device)
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    n_views, height, width = images.shape[:3]
    focal = focal_px(camera_angle_x, width)
    w2c = torch.as_tensor(np.linalg.inv(c2w), dtype=torch.float32, device=dev)
    faces_t = torch.as_tensor(faces, dtype=torch.long, device=dev)
    base = torch.as_tensor(vertices, dtype=torch.float32, device=dev)
    edges = torch.as_tensor(_edges(np.asarray(faces)), dtype=torch.long, device=dev)
    ones = torch.ones(edges.numel(), device=dev)
    degree = torch.zeros(len(vertices), device=dev).index_add(0, edges.reshape(-1), ones)

    pixels = _visible_pixels(vertices, faces, images, c2w, camera_angle_x, options.alpha_threshold, dev)
    on_progress(0.85 * _SETUP_SHARE)
    if len(pixels.view) == 0:
        raise ValueError("no view sees the mesh inside its mask")
    value = pixels.rgb.max(1).values  # V(I), linear
    seen = torch.zeros(len(vertices), dtype=torch.bool, device=dev)
    seen[faces_t[torch.unique(pixels.face)].reshape(-1)] = True
    sds_gen = torch.Generator(device="cpu").manual_seed(options.seed + 1)  # apart from the pixel sampling
    centre, _ = camera_cube(c2w)  # what the cameras look at: the subject
    radius = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).mean())

    light = SGLight(amplitude=float(value.mean()) * 2.0).to(dev)
    raw_albedo = torch.zeros(len(vertices), 3, device=dev, requires_grad=True)  # sigmoid -> 0.5
    offsets = torch.zeros_like(base, requires_grad=True)
    groups = [{"params": [raw_albedo], "lr": options.lr_albedo}, {"params": light.parameters(), "lr": options.lr_light}]
    move = options.lr_offsets > 0
    if move:
        groups.append({"params": [offsets], "lr": options.lr_offsets})
    optimiser = _Adam(groups)
    losses: list[float] = []
    edge_from, edge_to = edges[:, 0].contiguous(), edges[:, 1].contiguous()
    fixed_normals = None if move else vertex_normals_torch(base, faces_t)
    fixed = None
    if not move:
        # Fixed geometry: one fixed sample of pixels, shaded by precomputed bases, every
        # step (full-batch): no per-step gathers from all pixels, and a loss that does not
        # jitter, so it can tell when it has converged.
        keep = torch.randperm(len(pixels.view), generator=gen)[: options.samples].to(dev)
        pixels = _Pixels(pixels.view[keep], pixels.xy[keep], pixels.face[keep], pixels.rgb[keep])
        value = value[keep]
        fixed = _FixedShading.of(base, faces_t, fixed_normals, pixels, w2c, focal, (width, height), light)

    perceived = _perceived(pixels.rgb)  # the targets as the photometric loss compares them
    for step in range(options.steps):
        on_progress(_progress(step, options))
        if move and step > 0 and step % options.rerasterize_every == 0:
            current = (base + offsets).detach().cpu().double().numpy()
            pixels = _visible_pixels(current, faces, images, c2w, camera_angle_x, options.alpha_threshold, dev)
            value = pixels.rgb.max(1).values
            perceived = _perceived(pixels.rgb)
        if fixed is None:
            idx = torch.randint(len(pixels.view), (min(options.samples, len(pixels.view)),), generator=gen).to(dev)
        else:
            idx = slice(None)
        verts = base + offsets if move else base
        albedo_v = torch.sigmoid(raw_albedo)
        normals_v = vertex_normals_torch(verts, faces_t) if move else fixed_normals
        if fixed is not None:
            albedo, shading = fixed.shade(albedo_v, light)
        else:
            bary = barycentrics(verts, faces_t, pixels, idx, w2c, focal, (width, height))
            albedo, shading = _shade(bary, faces_t[pixels.face[idx]], albedo_v, normals_v, light)
        rendered = albedo * shading[:, None]
        photo = (_perceived(rendered) - perceived[idx]).abs().mean()
        illum = ((value[idx] - shading) ** 2).mean()
        tv = (albedo_v.index_select(0, edge_from) - albedo_v.index_select(0, edge_to)).abs().sum(1).mean()
        loss = photo + options.w_illum * illum + options.w_albedo_tv * tv
        if guide is not None and step >= options.steps - options.sds_steps:
            pose = _sds_camera(options.sds_elevations, centre, radius, sds_gen)
            sds = _masked_sds(guide, pose, centre, verts, faces_t, albedo_v, normals_v, light, seen, camera_angle_x, sds_gen)
            if sds is not None:
                loss = loss + options.w_sds * sds
        if move:
            neighbour_sum = torch.zeros_like(offsets).index_add(0, edges[:, 0], offsets[edges[:, 1]])
            neighbour_sum = neighbour_sum.index_add(0, edges[:, 1], offsets[edges[:, 0]])
            lap = offsets - neighbour_sum / degree.clamp_min(1)[:, None]
            loss = loss + options.w_offset_laplacian * (lap**2).sum(1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"refinement diverged at step {step}")
        if _converged(losses, options):
            break
    on_progress(1.0)
    final = (base + offsets).detach() if move else base
    return RefineResult(
        vertices=final.cpu().double().numpy(),
        light=light.cpu(),
        albedo=torch.sigmoid(raw_albedo).detach().cpu().numpy(),
        seen=seen.cpu().numpy(),
        losses=losses,
    )


class _Adam:
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` with its defaults computes it.

    Written out because the first ``torch.optim`` optimiser of a process imports
    TorchDynamo (about 2 s of a 10 s conversion) for wrappers this loop never uses.
    """

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(list(group["params"]), float(group["lr"])) for group in groups]
        self.betas, self.eps, self.steps = betas, eps, 0
        self.moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for params, _ in self.groups for p in params}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        first_fix, second_fix = 1.0 - b1**self.steps, 1.0 - b2**self.steps
        for params, lr in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                m, v = self.moments[id(p)]
                m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                p.addcdiv_(m, (v / second_fix).sqrt_().add_(self.eps), value=-lr / first_fix)


def _perceived(linear: torch.Tensor) -> torch.Tensor:
    """Gamma 2.2 values of linear colours: the photometric loss compares these, so dark
    regions count like the metrics count them."""
    return linear.clamp_min(1e-5) ** (1 / 2.2)


def _progress(step: int, options: RefineOptions) -> float:
    """The fit's fraction done at ``step``, after its set-up. A fit that stops early ends
    somewhere between ``_FEWEST_STEPS`` and its cap, so ``step`` counts against the step
    it is expected to stop at given that it has not stopped yet (the stop taken as even
    over that range): the bar neither jumps to the end nor waits at the cap."""
    cap = max(options.steps, 1)
    if options.stop_tolerance > 0:
        fewest = min(_FEWEST_STEPS, cap)
        expected = (max(step, fewest) + cap) / 2.0
    else:
        expected = cap
    return _SETUP_SHARE + (1.0 - _SETUP_SHARE) * min(step / expected, 0.99)


def _converged(losses: list[float], options: RefineOptions) -> bool:
    """The loss has levelled off: the last window's mean improved on the one before by
    less than ``stop_tolerance`` of itself. Windowed, because each step's loss is over a
    random sample of pixels and jitters by more than the late steps improve it."""
    window = options.stop_window
    if options.stop_tolerance <= 0 or len(losses) < max(options.min_steps, 2 * window) or len(losses) % window:
        return False
    last = sum(losses[-window:]) / window
    before = sum(losses[-2 * window : -window]) / window
    return before - last < options.stop_tolerance * last


def _shade(
    bary: torch.Tensor, corners: torch.Tensor, albedo_v: torch.Tensor, normals_v: torch.Tensor, light: SGLight
) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo (S, 3) and shading (S,) at surface points given by barycentrics over ``corners``."""
    albedo = (bary[..., None] * albedo_v[corners]).sum(1)
    normal = (bary[..., None] * normals_v[corners]).sum(1)
    normal = normal / torch.linalg.vector_norm(normal, dim=1, keepdim=True).clamp_min(1e-12)
    return albedo, light.shading(normal)


def _sds_camera(elevations: tuple[float, float], centre: np.ndarray, radius: float, generator: torch.Generator) -> np.ndarray:
    """c2w of a random camera on the sphere of the input cameras, aimed at their centre."""
    u = torch.rand(2, generator=generator).tolist()
    low, high = elevations
    return SphericalPose(low + (high - low) * u[0], -180.0 + 360.0 * u[1], radius).to_c2w(centre)


def _masked_sds(
    guide: SDSGuide,
    c2w: np.ndarray,
    centre: np.ndarray,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    albedo_v: torch.Tensor,
    normals_v: torch.Tensor,
    light: SGLight,
    seen: torch.Tensor,
    camera_angle_x: float,
    generator: torch.Generator,
) -> torch.Tensor | None:
    """SDS loss of a render from ``c2w``, masked to faces no input view saw (None: none in view).

    Only the albedo gets the gradient: the shading is held fixed, so the light stays the
    one the views measured.
    """
    size = guide.size
    frags = rasterize(c2w, camera_angle_x, size, size, vertices.detach().cpu().double().numpy(), faces.cpu().numpy())
    rows, cols = np.nonzero(frags.covered)
    if rows.size == 0:
        return None
    device = vertices.device
    face = torch.as_tensor(frags.face[rows, cols], dtype=torch.long, device=device)
    unseen = ~seen[faces[face]].any(1)
    if not unseen.any():
        return None
    pixels = _Pixels(
        view=torch.zeros(len(face), dtype=torch.long, device=device),
        xy=torch.as_tensor(np.stack([cols + 0.5, rows + 0.5], 1), dtype=torch.float32, device=device),
        face=face,
        rgb=torch.zeros((len(face), 3), device=device),
    )
    w2c = torch.as_tensor(np.linalg.inv(c2w), dtype=torch.float32, device=device)[None]
    focal = focal_px(camera_angle_x, size)
    bary = barycentrics(vertices.detach(), faces, pixels, torch.arange(len(face), device=device), w2c, focal, (size, size))
    albedo, shading = _shade(bary, faces[face], albedo_v, normals_v.detach(), light)
    colour = linear_to_srgb(albedo * shading.detach()[:, None])
    flat = torch.as_tensor(rows * size + cols, dtype=torch.long, device=device)
    image = torch.ones((size * size, 3), device=device).index_put((flat,), colour)
    mask = torch.zeros(size * size, device=device).index_put((flat,), unseen.float())
    image = image.T.reshape(1, 3, size, size)
    return guide.loss(image, mask.reshape(1, 1, size, size), c2w, generator, centre)
