"""The baseline reconstruction: visual hull -> mesh -> UV unwrap -> baked texture -> GLB.

Stages, reported through ``progress`` under these names: ``carve``, ``mesh``, ``uv``,
``texture``, ``export``. The colour is the input views' own (light baked in); ``light``
stays ``None`` until a light model exists.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..progress import ProgressFn, no_progress
from .carve import Silhouettes, carve
from .export import export_glb
from .mesh import decimate, extract_surface, largest_component, taubin_smooth, vertex_normals
from .texture import bake, fill_texture, texel_surface
from .transforms import load_transforms
from .uv import unwrap

__all__ = ["ReconstructionOptions", "ReconstructionResult", "load_transforms", "reconstruct"]

STAGES = ("carve", "mesh", "uv", "texture", "export")


@dataclass
class ReconstructionOptions:
    texture_size: int = 1024
    max_faces: int = 50_000
    grid_resolution: int = 128  # voxels along the longest side of the carving volume
    alpha_threshold: int = 127  # mask = alpha above this
    field_smoothing: float = 0.5  # Gaussian sigma (voxels) on the hull field before marching cubes
    smoothing_iterations: int = 10  # Taubin iterations on the marching-cubes mesh
    uv_padding: int = 4  # texels between charts in the atlas
    max_chart_area_fraction: float = 0.02  # cap on one chart's share of the surface (xatlas speed)

    def validate(self) -> None:
        checks = [
            (16 <= self.texture_size <= 4096, "texture_size must be in [16, 4096]"),
            (self.max_faces >= 100, "max_faces must be at least 100"),
            (16 <= self.grid_resolution <= 512, "grid_resolution must be in [16, 512]"),
            (0 <= self.alpha_threshold < 255, "alpha_threshold must be in [0, 254]"),
            (self.field_smoothing >= 0, "field_smoothing must be >= 0"),
            (self.smoothing_iterations >= 0, "smoothing_iterations must be >= 0"),
            (self.uv_padding >= 0, "uv_padding must be >= 0"),
            (0 <= self.max_chart_area_fraction <= 1, "max_chart_area_fraction must be in [0, 1]"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class ReconstructionResult:
    vertices: np.ndarray  # (V, 3) float32, world frame of the input cameras, Z up (Blender)
    faces: np.ndarray  # (F, 3) int32, counter-clockwise seen from outside
    uvs: np.ndarray  # (V, 2) float32, origin bottom-left of the texture
    texture: np.ndarray  # (T, T, 4) uint8 RGBA, first row = top of the image
    glb: bytes  # the same mesh as binary glTF (Y up, see export.py)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    light: dict | None = None  # None in the baseline (no light model yet)


def reconstruct(
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    options: ReconstructionOptions = ReconstructionOptions(),
    progress: ProgressFn = no_progress,
) -> ReconstructionResult:
    """images (N, H, W, 4) uint8 RGBA (alpha = subject mask), c2w (N, 4, 4)."""
    images, c2w = _check_inputs(images, c2w, camera_angle_x)
    options.validate()
    seconds: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        progress(name, 0.0)
        start = time.perf_counter()
        yield
        seconds[name] = time.perf_counter() - start
        progress(name, 1.0)

    with stage("carve"):
        silhouettes = Silhouettes.from_masks(images[..., 3] > options.alpha_threshold, c2w, camera_angle_x)
        grid = carve(silhouettes, options.grid_resolution, lambda f: progress("carve", f))

    with stage("mesh"):
        vertices, faces = extract_surface(grid, options.field_smoothing)
        progress("mesh", 0.3)
        vertices, faces = largest_component(vertices, faces)
        vertices = taubin_smooth(vertices, faces, options.smoothing_iterations)
        progress("mesh", 0.6)
        vertices, faces = decimate(vertices, faces, options.max_faces)

    with stage("uv"):
        # One blocking xatlas call: cancellation takes effect when it returns.
        uv_mesh = unwrap(vertices, faces, options.texture_size, options.uv_padding, options.max_chart_area_fraction)

    with stage("texture"):
        normals = vertex_normals(vertices, faces)[uv_mesh.source]
        surface = texel_surface(
            uv_mesh.vertices,
            uv_mesh.faces,
            uv_mesh.uvs,
            normals,
            options.texture_size,
            on_progress=lambda fraction: progress("texture", 0.1 * fraction),
        )
        rgb, weight = bake(
            surface,
            vertices,
            faces,
            images,
            c2w,
            camera_angle_x,
            on_progress=lambda fraction: progress("texture", 0.1 + 0.85 * fraction),
        )
        texture = fill_texture(surface, rgb, weight > 1e-3, options.texture_size)

    with stage("export"):
        glb = export_glb(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uvs, texture)

    return ReconstructionResult(
        vertices=uv_mesh.vertices.astype(np.float32),
        faces=uv_mesh.faces.astype(np.int32),
        uvs=uv_mesh.uvs.astype(np.float32),
        texture=texture,
        glb=glb,
        stage_seconds=seconds,
    )


def _check_inputs(images, c2w, camera_angle_x: float) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    c2w = np.asarray(c2w, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 4) uint8 RGBA, got {images.shape} {images.dtype}")
    if c2w.shape != (len(images), 4, 4) or not np.isfinite(c2w).all():
        raise ValueError(f"c2w must be finite (N, 4, 4) with N = {len(images)} images, got {c2w.shape}")
    if len(images) < 2:
        raise ValueError("a visual hull needs at least 2 views")
    if not 0.0 < camera_angle_x < math.pi:
        raise ValueError(f"camera_angle_x must be in (0, pi) radians, got {camera_angle_x}")
    return images, c2w
