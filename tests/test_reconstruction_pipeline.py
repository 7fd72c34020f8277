"""End to end: synthetic orbit views -> textured mesh, scored against ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from .recon_fixtures import FAST_OPTIONS, face_centroid_colours, reconstruction, scene

from blend123.backend.progress import ONE_WORKER_SECONDS, STAGE_SECONDS, STILL_WORKING, JobCancelled, Way, unwrap_seconds
from benchmarks.quality import synthetic
from benchmarks.quality.surface_metrics import bbox_diagonal, f_score, sample_surface
from blend123.backend.reconstruction import pipeline
from blend123.backend.reconstruction.pipeline import STAGES, ReconstructionOptions, reconstruct


def test_geometry_matches_the_ground_truth():
    result, _ = reconstruction()
    truth = scene().surface_points(40_000)
    predicted = sample_surface(result.vertices, result.faces, 40_000)
    score = f_score(predicted, truth, 0.02 * bbox_diagonal(truth))
    assert score.f >= 0.9, score
    # Same place and size as the truth, in the cameras' world frame.
    np.testing.assert_allclose(result.vertices.min(0), truth.min(0), atol=0.04)
    np.testing.assert_allclose(result.vertices.max(0), truth.max(0), atol=0.04)


def test_output_arrays_follow_the_contract():
    result, _ = reconstruction()
    assert result.vertices.dtype == np.float32 and result.vertices.shape[1] == 3
    assert result.faces.dtype == np.int32 and result.faces.shape[1] == 3
    assert 0 < len(result.faces) <= FAST_OPTIONS.max_faces
    assert len(result.faces) > 0.9 * FAST_OPTIONS.max_faces  # decimated to the budget, not far below
    assert result.faces.min() >= 0 and result.faces.max() < len(result.vertices)
    assert result.uvs.shape == (len(result.vertices), 2) and result.uvs.dtype == np.float32
    assert result.uvs.min() >= 0.0 and result.uvs.max() <= 1.0
    assert result.texture.shape == (FAST_OPTIONS.texture_size,) * 2 + (4,) and result.texture.dtype == np.uint8
    assert (result.texture[..., 3] == 255).all()
    assert result.light is None and result.environment is None  # FAST_OPTIONS: light model off
    assert set(result.stage_seconds) == set(STAGES)


def test_faces_are_counter_clockwise_from_outside():
    result, _ = reconstruction()
    v, f = result.vertices.astype(np.float64), result.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    centroids = v[f].mean(1)
    # Top faces (highest centroids) must point up.
    top = centroids[:, 2] > centroids[:, 2].max() - 0.01
    assert (normals[top, 2] > 0).all()
    signed = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert signed > 0


def _faces_where(result, normal_axis: np.ndarray, region) -> np.ndarray:
    v, f = result.vertices.astype(np.float64), result.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    c = v[f].mean(1)
    ids = np.flatnonzero((normals @ normal_axis > 0.9) & region(c))
    assert ids.size >= 20
    return ids


def test_baked_colours_match_the_known_faces():
    result, _ = reconstruction()
    # Front (-Y) side of the box, away from the sphere and the edges: red.
    front = _faces_where(
        result,
        np.array([0.0, -1.0, 0.0]),
        lambda c: (c[:, 0] > -0.3) & (c[:, 0] < -0.12) & (c[:, 2] > -0.2) & (c[:, 2] < 0.05),
    )
    colours = face_centroid_colours(result, front)
    np.testing.assert_allclose(np.median(colours, 0), synthetic.BOX_COLOURS[2], atol=12)
    assert (np.abs(colours - synthetic.BOX_COLOURS[2]).max(1) < 40).mean() > 0.9
    # Top of the sphere: white.
    top = _faces_where(result, np.array([0.0, 0.0, 1.0]), lambda c: c[:, 2] > 0.27)
    np.testing.assert_allclose(np.median(face_centroid_colours(result, top), 0), synthetic.SPHERE_TOP_COLOUR, atol=12)


def test_background_never_leaks_into_the_texture():
    result, _ = reconstruction()
    colours = face_centroid_colours(result, np.arange(len(result.faces)))
    magenta = (colours[:, 0] > 200) & (colours[:, 1] < 80) & (colours[:, 2] > 200)
    assert magenta.mean() < 0.002


def test_progress_names_every_stage_in_order():
    _, calls = reconstruction()
    stages = [s for s, _ in calls]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == list(STAGES)
    for name in STAGES:
        # A wait on another process's work (the unwrap's helper) says only that it goes on.
        fractions = [f for s, f in calls if s == name and f != STILL_WORKING]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert fractions == sorted(fractions)
    n_views = len(scene().images)
    assert stages.count("carve") >= n_views and stages.count("texture") >= n_views


def test_cancel_in_the_middle_of_carving_stops_the_job():
    s = scene()
    calls = []

    def progress(stage: str, fraction: float) -> None:
        calls.append((stage, fraction))
        if len(calls) == 6:
            raise JobCancelled

    with pytest.raises(JobCancelled):
        reconstruct(s.images, s.c2w, s.camera_angle_x, FAST_OPTIONS, progress)
    assert len(calls) == 6 and calls[-1][0] == "carve" and 0.0 < calls[-1][1] < 1.0


def test_cancel_at_a_later_stage_stops_before_the_next(monkeypatch):
    s = scene()
    seen = []

    def progress(stage: str, fraction: float) -> None:
        seen.append(stage)
        if stage == "mesh" and fraction > 0:
            raise JobCancelled

    # On two CPUs the unwrap's helper starts with the mesh stage: a cancel there stops it.
    helpers = []
    start_helper = pipeline.start_helper
    monkeypatch.setattr(pipeline, "start_helper", lambda: helpers.append(start_helper()) or helpers[-1])
    options = dataclasses.replace(FAST_OPTIONS, grid_resolution=48, threads=2)
    with pytest.raises(JobCancelled):
        reconstruct(s.images, s.c2w, s.camera_angle_x, options, progress)
    assert seen[-1] == "mesh" and "uv" not in seen
    assert len(helpers) == 1 and helpers[0].poll() is not None  # stopped and reaped


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda im, c2w, a: (im[..., :3], c2w, a), "RGBA"),
        (lambda im, c2w, a: (im, c2w[:-1], a), "c2w"),
        (lambda im, c2w, a: (im, c2w, 40.0), "radians"),
        (lambda im, c2w, a: (im[:1], c2w[:1], a), "at least 2"),
    ],
)
def test_bad_inputs_are_refused_clearly(change, message):
    s = scene()
    images, c2w, angle = change(s.images, s.c2w, s.camera_angle_x)
    with pytest.raises(ValueError, match=message):
        reconstruct(images, c2w, angle)


def test_bad_options_are_refused_clearly():
    s = scene()
    with pytest.raises(ValueError, match="texture_size"):
        reconstruct(s.images, s.c2w, s.camera_angle_x, ReconstructionOptions(texture_size=3))


def test_stages_that_run_otherwise_than_in_the_benchmark_say_so():
    """On one CPU, photo carving walks one view at a time, the bake does one chunk at a
    time and the unwrap waits for the fit: the progress clock hears each, in benchmark
    seconds, from the first stage on (an estimate that jumps when photo carving starts
    misleads), and nothing of the kind on two."""
    s = scene()
    heard: list[tuple] = []  # ("plan", stage, seconds, way) | ("progress", stage, fraction)
    options = dataclasses.replace(FAST_OPTIONS, grid_resolution=48, threads=1, device="cpu")
    result = reconstruct(
        s.images, s.c2w, s.camera_angle_x, options,
        progress=lambda stage, fraction: heard.append(("progress", stage, fraction)),
        plan=lambda stage, seconds, way, of_object=False: heard.append(("plan", stage, seconds, way) + (("of the object",) if of_object else ())),
    )
    planned = [event[1:] for event in heard if event[0] == "plan"]
    assert ("photo", ONE_WORKER_SECONDS["photo"], Way.ONE_WORKER) in planned
    # Then, as it starts, from the work it sampled: still one view at a time.
    sampled = [event for event in planned if event[0] == "photo" and event[-1] == "of the object"]
    assert len(sampled) == 1 and sampled[0][2] is Way.ONE_WORKER and sampled[0][1] > 0
    assert ("texture", ONE_WORKER_SECONDS["texture"], Way.ONE_WORKER) in planned  # the bake one chunk at a time
    uv = [(seconds, way) for stage, seconds, way, *_ in planned if stage == "uv"]
    assert uv[-1][0] == pytest.approx(unwrap_seconds(len(result.faces), beside=False), rel=0.2)  # in proportion to the faces
    assert uv[-1][1] is Way.AFTER_THE_FIT
    first = heard.index(("progress", "carve", 0.0))
    assert {event[1] for event in heard[:first] if event[0] == "plan"} == {"photo", "uv", "texture"}
    two = []
    reconstruct(s.images, s.c2w, s.camera_angle_x, dataclasses.replace(options, threads=2), plan=lambda *planned: two.append(planned))
    assert not [plan for plan in two if plan[2] is Way.ONE_WORKER]
    assert [plan[:3] for plan in two if plan[0] == "photo" and plan[3]] == [("photo", pytest.approx(sampled[0][1] * STAGE_SECONDS["photo"] / ONE_WORKER_SECONDS["photo"], rel=0.01), Way.BENCHMARK)]


def test_the_unwrap_is_planned_from_the_faces_the_hull_foretells():
    """The unwrap's time follows the mesh's faces: the clock hears them foretold by the
    hull as soon as it is carved, before photo carving, not only once the mesh is made
    (a chair's 23k faces are unwrapped before the fit ends; until the mesh stage the bar
    said a 50k mesh's wait, a fifth of a chair's job)."""
    s = scene()
    heard: list[tuple] = []
    options = dataclasses.replace(FAST_OPTIONS, grid_resolution=48, threads=1, device="cpu", max_faces=200_000)
    result = reconstruct(
        s.images, s.c2w, s.camera_angle_x, options,
        progress=lambda stage, fraction: heard.append(("progress", stage, fraction)),
        plan=lambda stage, seconds, way, of_object=False: heard.append(("plan", stage, seconds, way)),
    )
    before_photo = heard[: heard.index(("progress", "photo", 0.0))]
    carved = max(i for i, event in enumerate(before_photo) if event[:2] == ("progress", "carve"))
    foretold = [event[2:] for event in before_photo[carved:] if event[:2] == ("plan", "uv")]
    assert len(foretold) == 1 and foretold[0][1] is Way.AFTER_THE_FIT  # one CPU: after the fit
    made = unwrap_seconds(len(result.faces), beside=False)
    assert foretold[0][0] == pytest.approx(made, rel=0.03) and foretold[0][0] < 0.5 * unwrap_seconds(options.max_faces, beside=False)
