"""Reading NeRF-Blender transforms.json datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from .recon_fixtures import scene, write_transforms

from blend123.backend.reconstruction.masks import MaskNotFound
from blend123.backend.reconstruction.pipeline import load_transforms


@pytest.mark.parametrize("suffix", [True, False])
def test_round_trip(tmp_path, suffix):
    s = scene()
    path = write_transforms(tmp_path, s.images[:4], s.c2w[:4], s.camera_angle_x, suffix=suffix)
    images, c2w, angle = load_transforms(path)
    np.testing.assert_array_equal(images, s.images[:4])
    np.testing.assert_allclose(c2w, s.c2w[:4])
    assert angle == pytest.approx(s.camera_angle_x)
    # The folder that holds it, as `blend123 orbit -o FOLDER` names it, reads the same.
    assert path.name == "transforms.json"
    np.testing.assert_array_equal(load_transforms(path.parent)[0], images)


def test_rgb_images_on_white_are_keyed_not_made_opaque(tmp_path):
    s = scene()
    path = write_transforms(tmp_path, s.images[:2], s.c2w[:2], s.camera_angle_x)
    a = s.images[0, ..., 3:4].astype(np.float64) / 255.0
    on_white = np.rint(s.images[0, ..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    Image.fromarray(on_white).save(tmp_path / "train" / "r_0.png")
    images, _, _ = load_transforms(path)
    keyed, truth = images[0, ..., 3] > 127, s.images[0, ..., 3] > 127
    assert (keyed & truth).sum() / (keyed | truth).sum() > 0.97


def test_rgb_frames_without_a_plain_background_are_dropped_or_refused(tmp_path):
    s = scene()
    path = write_transforms(tmp_path, s.images[:3], s.c2w[:3], s.camera_angle_x)
    busy = np.random.default_rng(0).integers(0, 256, s.images.shape[1:3] + (3,), dtype=np.uint8)
    Image.fromarray(busy).save(tmp_path / "train" / "r_1.png")
    images, c2w, _ = load_transforms(path)
    assert len(images) == 2  # the busy frame is dropped, with its camera
    np.testing.assert_allclose(c2w, s.c2w[[0, 2]])
    Image.fromarray(busy).save(tmp_path / "train" / "r_2.png")
    with pytest.raises(MaskNotFound, match="only 1 of 3"):
        load_transforms(path)


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
    with pytest.raises(FileNotFoundError, match="no transforms file"):
        load_transforms(tmp_path)  # a folder without one
    frame = {"file_path": "./train/missing", "transform_matrix": np.eye(4).tolist()}
    with pytest.raises(FileNotFoundError, match="missing"):
        load_transforms(_write(tmp_path, {"camera_angle_x": 0.6, "frames": [frame]}))


def test_images_of_different_sizes_are_refused(tmp_path):
    s = scene()
    path = write_transforms(tmp_path, s.images[:2], s.c2w[:2], s.camera_angle_x)
    Image.fromarray(s.images[1, :64]).save(tmp_path / "train" / "r_1.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_transforms(path)
