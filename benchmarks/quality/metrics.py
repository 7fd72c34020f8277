"""Scores of a reconstruction against the evaluation set's ground truth.

Geometry (world units; the reconstruction is in the cameras' frame, so no alignment):
Chamfer-L1 (the mean of both directions' mean nearest-point distance between surface
samples), F-score at 1% and 2% of the ground truth's bounding-box diagonal (from
``surface_metrics.py``), and volume IoU of the two meshes' insides on a
voxel grid (ray parity along each axis, majority of the three votes).

Appearance: the reconstruction rendered at held-out poses with the project's CPU
rasteriser (supersampled for anti-aliased edges), composited on white like the Cycles
renders, then PSNR and SSIM over the whole frame (the NeRF-synthetic convention), plus
PSNR over the two silhouettes' union and the silhouette IoU.

Albedo: the reconstruction's texture rendered unlit, against Cycles' diffuse-colour pass
on the pixels both fully cover, after one least-squares scale in linear light (lighting
and albedo trade a global factor); the error is then measured in sRGB values in [0, 1].

A reconstruction with a light model reports it in ``ReconstructionResult.light`` as 24
Spherical Gaussians (METHOD.md section 3): a dict with ``axes`` (K, 3), ``sharpness`` (K,)
and ``amplitudes`` (K,) or (K, 3); rendered colour = texture value x irradiance, or, with
``"space": "linear"``, the same product taken in linear light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

from blend123.backend.reconstruction.mesh import vertex_normals
from benchmarks.quality.surface_metrics import FScore, bbox_diagonal, f_score, sample_surface
from blend123.backend.raster import rasterize

#: PSNR of identical images (the MSE floor it corresponds to): keeps means finite.
PSNR_CAP_DB = 100.0
#: SG approximation of the clamped cosine lobe (sharpness, amplitude).
COSINE_LOBE = (2.133, 1.17)


# --- geometry ---------------------------------------------------------------------------------


@dataclass
class GeometryScores:
    chamfer_l1: float  # world units
    f1: FScore  # at 1% of the diagonal
    f2: FScore  # at 2% of the diagonal
    volume_iou: float
    diagonal: float  # of the ground truth's bounding box


def chamfer_l1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the two directions' mean nearest-neighbour (Euclidean) distance."""
    d_pred, _ = cKDTree(truth).query(predicted)
    d_true, _ = cKDTree(predicted).query(truth)
    return float(0.5 * (d_pred.mean() + d_true.mean()))


def geometry_scores(
    vertices: np.ndarray,
    faces: np.ndarray,
    true_vertices: np.ndarray,
    true_faces: np.ndarray,
    samples: int = 100_000,
    iou_resolution: int = 128,
    seed: int = 0,
) -> GeometryScores:
    # One seed for both: identical meshes give identical samples, so exactly perfect scores.
    predicted = sample_surface(vertices, faces, samples, seed)
    truth = sample_surface(true_vertices, true_faces, samples, seed)
    diagonal = bbox_diagonal(np.asarray(true_vertices)[np.unique(true_faces)])
    return GeometryScores(
        chamfer_l1=chamfer_l1(predicted, truth),
        f1=f_score(predicted, truth, 0.01 * diagonal),
        f2=f_score(predicted, truth, 0.02 * diagonal),
        volume_iou=volume_iou(vertices, faces, true_vertices, true_faces, iou_resolution),
        diagonal=diagonal,
    )


@dataclass
class VoxelGrid:
    """Voxel centres ``origin + spacing * (i, j, k)`` for indices below ``shape``."""

    origin: np.ndarray  # (3,)
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def around(cls, points: np.ndarray, resolution: int) -> "VoxelGrid":
        """``resolution`` voxels along the longest side of the points' box, plus a margin.

        The lattice is shifted by an irrational fraction of a voxel so that rays through
        voxel centres do not run exactly along the edges of meshes built on a regular
        grid (marching cubes), where a crossing could count twice.
        """
        lo, hi = points.min(0), points.max(0)
        spacing = float((hi - lo).max()) / resolution
        if spacing <= 0:
            raise ValueError("the points span no volume")
        origin = lo - 2 * spacing + (math.sqrt(2) - 1) * spacing
        shape = tuple(int(n) for n in np.ceil((hi + 2 * spacing - origin) / spacing).astype(int) + 1)
        return cls(origin, spacing, shape)


def occupancy(vertices: np.ndarray, faces: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """Voxels inside a closed mesh: (X, Y, Z) bool, the majority of three ray-parity votes.

    One vote per axis: along each grid line parallel to the axis, a voxel is inside when
    the surface crosses the line an odd number of times beyond it. The majority forgives a
    line that grazes an edge or slips through a small hole.
    """
    votes = np.zeros(grid.shape, dtype=np.int8)
    for axis in range(3):
        votes += _parity(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), grid, axis)
    return votes >= 2


def volume_iou(
    vertices: np.ndarray, faces: np.ndarray, true_vertices: np.ndarray, true_faces: np.ndarray, resolution: int = 128
) -> float:
    """Intersection over union of the two meshes' insides on a common voxel grid."""
    points = np.concatenate([np.asarray(vertices)[np.unique(faces)], np.asarray(true_vertices)[np.unique(true_faces)]])
    grid = VoxelGrid.around(points, resolution)
    a = occupancy(vertices, faces, grid)
    b = occupancy(true_vertices, true_faces, grid)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


#: Candidate (triangle, grid line) pairs tested at once: bounds the working memory.
_CHUNK = 1 << 21


def _parity(vertices: np.ndarray, faces: np.ndarray, grid: VoxelGrid, axis: int) -> np.ndarray:
    """Inside (odd crossings beyond the voxel) along grid lines parallel to ``axis``."""
    u, v = [a for a in range(3) if a != axis]
    nu, nv, n = grid.shape[u], grid.shape[v], grid.shape[axis]
    tri = (vertices[faces] - grid.origin) / grid.spacing  # grid units: centres at integers
    p, depth = tri[:, :, [u, v]], tri[:, :, axis]
    area = _cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    lo = np.ceil(p.min(1)).astype(np.int64)
    hi = np.floor(p.max(1)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [nu - 1, nv - 1])
    span = np.clip(hi - lo + 1, 0, None)
    count = np.where(np.abs(area) > 1e-12, span[:, 0] * span[:, 1], 0)
    ids = np.flatnonzero(count)
    crossings = np.zeros(nu * nv * (n + 1), dtype=np.int64)
    if ids.size:
        cum = np.cumsum(count[ids])
        for chunk in np.split(ids, np.unique(np.searchsorted(cum, np.arange(_CHUNK, cum[-1], _CHUNK)))):
            if chunk.size:
                _count_crossings(chunk, count, lo, hi, p, depth, area, n, nv, crossings)
    # beyond[..., j] = crossings with depth > centre j = sum over bins k > j.
    per_line = crossings.reshape(nu, nv, n + 1)
    beyond = np.cumsum(per_line[..., ::-1], axis=-1)[..., ::-1][..., 1:]
    inside = (beyond % 2).astype(np.int8)  # (nu, nv, n) in axis order (u, v, axis)
    return np.moveaxis(inside, -1, axis)


def _count_crossings(chunk, count, lo, hi, p, depth, area, n, nv, crossings) -> None:
    c = count[chunk]
    fid = np.repeat(chunk, c)
    off = np.arange(fid.size) - np.repeat(np.cumsum(c) - c, c)
    width = hi[fid, 0] - lo[fid, 0] + 1
    gu = lo[fid, 0] + off % width
    gv = lo[fid, 1] + off // width
    q = np.stack([gu, gv], axis=1).astype(np.float64)
    a, b, cc = p[fid, 0], p[fid, 1], p[fid, 2]
    w0 = _cross(b - q, cc - q) / area[fid]
    w1 = _cross(cc - q, a - q) / area[fid]
    w2 = 1.0 - w0 - w1
    hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0[hit] * depth[fid[hit], 0] + w1[hit] * depth[fid[hit], 1] + w2[hit] * depth[fid[hit], 2]
    k = np.clip(np.floor(z).astype(np.int64) + 1, 0, n)  # voxel centres below the crossing
    line = gu[hit] * nv + gv[hit]
    np.add.at(crossings, line * (n + 1) + k, 1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


# --- images -------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, cap: float = PSNR_CAP_DB) -> float:
    """PSNR (dB) of images in [0, 1]; over ``mask`` (H, W) if given; capped at ``cap``."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if mask is not None:
        diff = diff[mask]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(diff**2))
    return cap if mse <= 10 ** (-cap / 10) else float(-10 * math.log10(mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of (H, W, 3) images in [0, 1] (7x7 windows, the scikit-image default)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def composite(rgba: np.ndarray, background: float = 1.0) -> np.ndarray:
    """Straight-alpha RGBA (uint8 or [0, 1] float) over a grey level: (H, W, 3) in [0, 1]."""
    x = np.asarray(rgba, dtype=np.float64)
    if np.asarray(rgba).dtype == np.uint8:
        x = x / 255.0
    alpha = x[..., 3:4]
    return x[..., :3] * alpha + background * (1.0 - alpha)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# --- rendering a reconstruction -----------------------------------------------------------------


@dataclass
class TexturedMesh:
    vertices: np.ndarray  # (V, 3) world
    faces: np.ndarray  # (F, 3)
    uvs: np.ndarray  # (V, 2), origin bottom-left
    texture: np.ndarray  # (T, T, 3|4) uint8, first row at the top (sRGB values)
    light: dict | None = None  # SG light, see the module docstring

    @classmethod
    def from_result(cls, result) -> "TexturedMesh":
        return cls(result.vertices, result.faces, result.uvs, result.texture, getattr(result, "light", None))

    def smooth_normals(self) -> np.ndarray:
        """Vertex normals averaged over vertices sharing a position (UV seams split them)."""
        unique, inverse = np.unique(np.asarray(self.vertices, dtype=np.float64), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return vertex_normals(unique, inverse[np.asarray(self.faces)])[inverse]


@dataclass
class ViewRender:
    """Supersampled render box-filtered to the view size; colours premultiplied by coverage."""

    colour: np.ndarray  # (H, W, 3): appearance (texture x light, if any)
    albedo: np.ndarray  # (H, W, 3): the texture unlit
    coverage: np.ndarray  # (H, W) in [0, 1]

    def composite(self, background: float = 1.0) -> np.ndarray:
        return self.colour + background * (1.0 - self.coverage[..., None])

    def straight_albedo(self) -> np.ndarray:
        return self.albedo / np.maximum(self.coverage, 1e-12)[..., None]


def render_view(
    mesh: TexturedMesh, c2w: np.ndarray, camera_angle_x: float, size: int, supersample: int = 2
) -> ViewRender:
    """Render ``mesh`` at a (size x size) camera; appearance and unlit albedo in one pass."""
    big = size * supersample
    frags = rasterize(c2w, camera_angle_x, big, big, np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces))
    covered = frags.covered
    albedo = np.zeros((big, big, 3))
    colour = np.zeros((big, big, 3))
    if covered.any():
        uv = frags.interpolate(np.asarray(mesh.uvs, np.float64), mesh.faces)
        texel = sample_texture(mesh.texture, uv)
        albedo[covered] = texel
        if mesh.light is None:
            colour[covered] = texel
        else:
            normals = frags.interpolate(mesh.smooth_normals(), mesh.faces)
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
            colour[covered] = shade(texel, sg_irradiance(normals, mesh.light), mesh.light.get("space", "srgb"))

    def down(x):
        return x.reshape(size, supersample, size, supersample, *x.shape[2:]).mean(axis=(1, 3))

    return ViewRender(down(colour), down(albedo), down(covered.astype(np.float64)))


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup: (M, 3) in [0, 1] at UVs (origin bottom-left), edges clamped."""
    tex = np.asarray(texture)[..., :3].astype(np.float64) / 255.0
    h, w = tex.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x0 + 1] * fx
    bottom = tex[y0 + 1, x0] * (1 - fx) + tex[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def sg_light(light: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axes (K, 3) unit, sharpness (K,), amplitudes (K, 3)) from a light dict.

    Flat arrays are taken as they are; the JSON ``lobes`` (radiance) are divided by pi.

    Accepts the pipeline's JSON (``{"ambient": rgb, "lobes": [{"axis", "sharpness",
    "amplitude"}]}``, the format the Blender add-on reads) or flat arrays.
    """
    if "lobes" in light:
        lobes = light["lobes"]
        light = {
            "axes": [lobe["axis"] for lobe in lobes],
            "sharpness": [lobe["sharpness"] for lobe in lobes],
            # The JSON's lobes are world radiance; irradiance here is per albedo unit (E / pi).
            "amplitudes": [np.asarray(lobe["amplitude"], dtype=np.float64) / math.pi for lobe in lobes],
        }

    def pick(*names):
        for name in names:
            if name in light:
                return np.asarray(light[name], dtype=np.float64)
        raise ValueError(f"light model: expected one of {names} in ReconstructionResult.light, got {sorted(light)}")

    axes = pick("axes", "mu", "lobe_axes").reshape(-1, 3)
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    sharpness = pick("sharpness", "lambda", "sharpnesses").reshape(-1)
    amplitudes = pick("amplitudes", "amplitude", "a")
    amplitudes = np.broadcast_to(amplitudes.reshape(len(axes), -1), (len(axes), 3))
    return axes, sharpness, amplitudes


def sg_irradiance(normals: np.ndarray, light: dict) -> np.ndarray:
    """Irradiance (N, 3) at unit normals: sum over lobes of <G_k, G_cos(n)> in closed form."""
    axes, sharpness, amplitudes = sg_light(light)
    s_cos, a_cos = COSINE_LOBE
    v = sharpness[None, :, None] * axes[None] + s_cos * normals[:, None, :]  # (N, K, 3)
    d = np.maximum(np.linalg.norm(v, axis=-1), 1e-8)
    inner = 2 * math.pi * a_cos * np.exp(d - (sharpness[None] + s_cos)) * (1 - np.exp(-2 * d)) / d  # (N, K)
    return inner @ amplitudes + np.asarray(light.get("ambient", [0.0, 0.0, 0.0]), dtype=np.float64)


def shade(texel: np.ndarray, irradiance: np.ndarray, space: str = "srgb") -> np.ndarray:
    if space == "linear":
        return linear_to_srgb(srgb_to_linear(texel) * irradiance)
    return np.clip(texel * irradiance, 0.0, 1.0)


# --- appearance and albedo scores ---------------------------------------------------------------


@dataclass
class AppearanceScores:
    psnr: float  # whole frame, on white
    ssim: float
    psnr_object: float  # over the union of the two silhouettes
    mask_iou: float  # silhouettes at alpha 0.5


def appearance_scores(render: ViewRender, truth_rgba: np.ndarray) -> AppearanceScores:
    truth = composite(truth_rgba)
    predicted = np.clip(render.composite(), 0.0, 1.0)
    true_mask = truth_rgba[..., 3] >= 128
    mask = render.coverage >= 0.5
    union = true_mask | mask
    return AppearanceScores(
        psnr=psnr(predicted, truth),
        ssim=ssim(predicted, truth),
        psnr_object=psnr(predicted, truth, union),
        mask_iou=float(np.count_nonzero(true_mask & mask) / max(np.count_nonzero(union), 1)),
    )


@dataclass
class AlbedoScores:
    mae: float  # mean absolute error of sRGB values in [0, 1]
    psnr: float
    scale: float  # the least-squares factor applied to the prediction (linear light)
    pixels: int


def albedo_error(
    predicted: list[np.ndarray], coverage: list[np.ndarray], truth_rgba: list[np.ndarray], min_alpha: float = 0.99
) -> AlbedoScores:
    """Albedo error over all views at once, after one global least-squares scale.

    ``predicted``: straight (unpremultiplied) sRGB albedo renders (H, W, 3) in [0, 1];
    ``coverage``: their coverage (H, W); ``truth_rgba``: diffuse-colour passes, uint8
    RGBA. Only pixels that both fully cover count (no silhouette-edge mixing).
    """
    pred, true = [], []
    for p, c, t in zip(predicted, coverage, truth_rgba):
        keep = (np.asarray(c) >= min_alpha) & (np.asarray(t)[..., 3] >= min_alpha * 255)
        pred.append(np.asarray(p, np.float64)[keep])
        true.append(np.asarray(t)[..., :3][keep].astype(np.float64) / 255.0)
    pred, true = np.concatenate(pred), np.concatenate(true)
    if len(pred) == 0:
        return AlbedoScores(float("nan"), float("nan"), float("nan"), 0)
    p_lin, t_lin = srgb_to_linear(pred), srgb_to_linear(true)
    scale = float((p_lin * t_lin).sum() / max((p_lin * p_lin).sum(), 1e-12))
    fitted = linear_to_srgb(scale * p_lin)
    return AlbedoScores(float(np.abs(fitted - true).mean()), psnr(fitted, true), scale, len(pred))
