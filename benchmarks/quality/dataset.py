"""Read a rendered object back: views, albedo passes, ground-truth mesh (no bpy)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from blend123.backend.reconstruction.transforms import load_transforms


@dataclass
class ViewSet:
    images: np.ndarray  # (N, H, W, 4) uint8 RGBA renders, straight alpha, sRGB
    albedo: np.ndarray  # (N, H, W, 4) uint8 diffuse-colour passes, same alpha
    c2w: np.ndarray  # (N, 4, 4) NeRF-Blender convention
    camera_angle_x: float

    @classmethod
    def load(cls, folder: Path) -> "ViewSet":
        images, c2w, angle = load_transforms(folder / "transforms.json")
        frames = json.loads((folder / "transforms.json").read_text())["frames"]
        albedo = np.stack([np.asarray(Image.open(folder / f["albedo_path"]).convert("RGBA")) for f in frames])
        return cls(images, albedo, c2w, angle)

    @property
    def size(self) -> int:
        return self.images.shape[2]


@dataclass
class EvalObject:
    name: str
    input: ViewSet
    heldout: ViewSet
    vertices: np.ndarray  # ground truth, world frame (Z up)
    faces: np.ndarray
    meta: dict

    @classmethod
    def load(cls, folder: Path) -> "EvalObject":
        mesh = np.load(folder / "gt_mesh.npz")
        return cls(
            name=folder.name,
            input=ViewSet.load(folder / "input"),
            heldout=ViewSet.load(folder / "heldout"),
            vertices=mesh["vertices"].astype(np.float64),
            faces=mesh["faces"].astype(np.int64),
            meta=json.loads((folder / "meta.json").read_text()),
        )
