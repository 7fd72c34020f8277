"""Geometry scores against ground truth: surface sampling and the F-score at a distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from blend123.backend.reconstruction.mesh import surface_points


@dataclass
class FScore:
    f: float
    precision: float  # share of reconstructed points within the threshold of the truth
    recall: float  # share of true points within the threshold of the reconstruction
    threshold: float


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Area-uniform random points on a triangle mesh: (count, 3)."""
    return surface_points(vertices, faces, count, seed)[0]


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
