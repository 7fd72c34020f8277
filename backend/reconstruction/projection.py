"""Pinhole projection in torch, the convention of :func:`blend123.protocol.camera.project_points`.

Camera space is OpenGL's (x right, y up, looking down -z); pixels are x right, y down with
pixel centres at +0.5. Differentiable in the points.
"""

from __future__ import annotations

import torch


def world_to_camera(points: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """Points (..., 3) into the camera(s) ``w2c`` (4, 4), or (..., 4, 4) matching the points' batch."""
    if w2c.dim() == 2:
        return points @ w2c[:3, :3].T + w2c[:3, 3]
    return torch.einsum("...ij,...kj->...ki", w2c[..., :3, :3], points) + w2c[..., None, :3, 3]


def camera_to_pixels(
    cam: torch.Tensor, focal: float, width: int, height: int, min_depth: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-space points (..., 3) to pixel ``x``, ``y`` and ``depth`` (positive in front).

    ``min_depth`` clamps the depth used for the division, for gradients that must stay
    finite at points behind or on the camera plane; the returned depth is the clamped one.
    """
    depth = -cam[..., 2]
    if min_depth is not None:
        depth = depth.clamp_min(min_depth)
    x = 0.5 * width + focal * cam[..., 0] / depth
    y = 0.5 * height - focal * cam[..., 1] / depth
    return x, y, depth
