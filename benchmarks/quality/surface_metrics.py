"""Geometry scores against ground truth: surface sampling and the F-score at a distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class FScore:
    f: float
    precision: float  # share of reconstructed points within the threshold of the truth
    recall: float  # share of true points within the threshold of the reconstruction
    threshold: float


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Area-uniform random points on a triangle mesh: (count, 3)."""
    rng = np.random.default_rng(seed)
    a, b, c = (np.asarray(vertices, dtype=np.float64)[faces[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    tri = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[tri] + u[:, None] * (b[tri] - a[tri]) + v[:, None] * (c[tri] - a[tri])


def f_score(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> FScore:
    """F-score of two point samples at ``threshold`` (world units)."""
    d_pred, _ = cKDTree(truth).query(predicted)
    d_true, _ = cKDTree(predicted).query(truth)
    precision = float((d_pred <= threshold).mean())
    recall = float((d_true <= threshold).mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return FScore(f, precision, recall, threshold)


def bbox_diagonal(points: np.ndarray) -> float:
    return float(np.linalg.norm(points.max(0) - points.min(0)))
