"""Reading NeRF-Blender transforms.json datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from .recon_fixtures import scene, write_transforms

from blend123.backend.reconstruction.pipeline import load_transforms


@pytest.mark.parametrize("suffix", [True, False])
def test_round_trip(tmp_path, suffix):
    s = scene()
    path = write_transforms(tmp_path, s.images[:4], s.c2w[:4], s.camera_angle_x, suffix=suffix)
    images, c2w, angle = load_transforms(path)
    np.testing.assert_array_equal(images, s.images[:4])
    np.testing.assert_allclose(c2w, s.c2w[:4])
    assert angle == pytest.approx(s.camera_angle_x)


def test_rgb_images_get_an_opaque_alpha(tmp_path):
    s = scene()
    path = write_transforms(tmp_path, s.images[:2], s.c2w[:2], s.camera_angle_x)
    Image.fromarray(s.images[0, ..., :3]).save(tmp_path / "train" / "r_0.png")
    images, _, _ = load_transforms(path)
    assert images.shape[-1] == 4 and (images[0, ..., 3] == 255).all()


def _write(tmp_path, content) -> object:
    path = tmp_path / "transforms.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"frames": []}, "camera_angle_x"),
        ({"camera_angle_x": 40, "frames": []}, "camera_angle_x"),
        ({"camera_angle_x": 0.6, "frames": []}, "'frames'"),
        ({"camera_angle_x": 0.6, "frames": [{"file_path": "a"}]}, "frame 0 needs"),
        ({"camera_angle_x": 0.6, "frames": [{"file_path": "a", "transform_matrix": [[1, 0], [0, 1]]}]}, "4x4"),
        ({"camera_angle_x": 0.6, "frames": [{"file_path": "a", "transform_matrix": "eye"}]}, "4x4"),
    ],
)
def test_bad_json_gives_a_clear_error(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_transforms(_write(tmp_path, content))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no transforms file"):
        load_transforms(tmp_path / "nope.json")
    frame = {"file_path": "./train/missing", "transform_matrix": np.eye(4).tolist()}
    with pytest.raises(FileNotFoundError, match="missing"):
        load_transforms(_write(tmp_path, {"camera_angle_x": 0.6, "frames": [frame]}))


def test_images_of_different_sizes_are_refused(tmp_path):
    s = scene()
    path = write_transforms(tmp_path, s.images[:2], s.c2w[:2], s.camera_angle_x)
    Image.fromarray(s.images[1, :64]).save(tmp_path / "train" / "r_1.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_transforms(path)
