"""The reconstruction: visual hull -> photo-consistency carving -> mesh -> light fit ->
UV unwrap -> de-lit texture -> GLB.

Stages, reported through ``progress`` under these names: ``carve``, ``photo``, ``mesh``,
``refine``, ``uv``, ``texture``, ``export``. ``photo`` (``photo.py``) carves out of the
visual hull the concavities the views' colours reveal; with ``photo_carving`` off the
geometry is the visual hull.

With ``light_model`` (the default) the ``refine`` stage fits a 24-SG light jointly with a
per-vertex albedo by differentiable rendering (``refine.py``); the texture is then the
views' colour divided by the fitted shading at each texel (in linear light), so it holds
the albedo, and ``ReconstructionResult.light`` / ``environment`` describe the light.
Without it the texture is the views' own colour (light baked in) and ``light`` is None.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..cpu_share import CpuShare
from ..progress import ONE_WORKER_SECONDS, STAGE_SECONDS, STILL_WORKING, PlanFn, ProgressFn, Way, no_plan, no_progress, photo_seconds, sub_progress, unwrap_seconds
from .carve import HullGrid, Silhouettes, carve
from .export import export_glb
from .light import SGLight, benchmark_view
from .mesh import HullParts, decimate, drop_coincident_faces, extract_surface, largest_component, surface_faces, taubin_smooth, vertex_normals
from .photo import PhotoOptions, PhotoWork, photo_carve, photo_work
from .refine import RefineOptions, linear_to_srgb, refine, resolve_device, srgb_to_linear
from .sds import SDSGuide
from .texels import texel_surface
from .texture import bake, fill_texture, register_views
from .transforms import load_transforms, load_transforms_camera
from .uv import UnwrapBeside, start_helper, stop_helper

log = logging.getLogger(__name__)

__all__ = ["ReconstructionOptions", "ReconstructionResult", "load_transforms", "load_transforms_camera", "reconstruct"]

STAGES = ("carve", "photo", "mesh", "refine", "uv", "texture", "export")
#: Shading below this share of the median is treated as this share when de-lighting:
#: texels the light barely reaches would otherwise take a huge, noisy albedo.
_MIN_SHADING = 0.15
#: Parts of the mesh with at least this share of the largest part's faces are kept (a
#: leg the carving cut loose), and smaller ones that the visual hull has apart from its
#: body (a stretcher carved as pieces: ``mesh.HullParts``) or thin (a stretcher the hull
#: held whole, cut in pieces by photo carving); the rest are floaters (of
#: photo carving, cut off the body: keeping every part cost tiles 0.002 F@1% and the
#: kettle 0.002, where the hull's own parts gave the thin-legged table 0.993 -> 0.994,
#: degraded 0.980 -> 0.985, and changed no other object). Those smaller parts are not
#: smoothed either: smoothing shrank the table's stretcher pieces, 0.9954 -> 0.9944.
_KEEP_PART_FRACTION = 0.002
#: Registration: the rough hull's face budget, and the shift (px) or gain deviation
#: below which the views are taken as consistent already.
_REGISTER_FACES = 5_000
_REGISTERED_SHIFT_PX = 0.3
_REGISTERED_GAIN = 0.02
#: The albedo texture is normalised so this percentile of its brightest channel is 1
#: (the light takes the inverse factor: albedo and light trade a global scale).
_ALBEDO_PERCENTILE = 99.5
#: The texture stage's parts as shares of its time when it lays out the texels itself:
#: texels, bake, de-lighting, fill, on two threads and on one (2-core CPU: the texels,
#: bake and de-lighting ended at 0.19-0.24, 0.84-0.88 and 0.91-0.93 of the stage's time on
#: two threads for the duck and the mug in-process, 0.29, 0.80 and 0.90 through
#: ``blend123 serve``; on one thread 0.16-0.19, 0.87-0.91 and 0.93-0.95 in-process, 0.27,
#: 0.9 and 0.95 through serve beside two busy processes). The bar moves at an even pace
#: through all.
_TEXTURE_PARTS = {2: (0.25, 0.58, 0.08, 0.09), 1: (0.2, 0.7, 0.05, 0.05)}
#: Where the carve stage's parts end: the masks' distance fields (11-22% of it), then the
#: carving; with registration: the distance fields, the first carving, the registration,
#: the second distance fields (the second carving ends the stage).
_CARVE_SHARES = (0.17, 1.0)
_REGISTERED_CARVE_SHARES = (0.1, 0.4, 0.55, 0.6)
#: Photo carving's surface weight for views that needed levelling or registering: their
#: noise and leftover drift pass for empty space more often, and the default (0.5) carved
#: pits into a checkered box seen in RGB-on-white views with drift. 0.75 against 1.0 on the
#: quality set's degraded views: mean F@1% 0.847 -> 0.851, none lower but the kettle
#: (0.972 either way), the mug and the bowl no longer below the hull of their masks.
_DRIFTED_SURFACE_WEIGHT = 0.75


@dataclass
class ReconstructionOptions:
    texture_size: int = 1024
    max_faces: int = 50_000
    grid_resolution: int = 128  # voxels along the longest side of the carving volume
    alpha_threshold: int = 127  # mask = alpha above this
    photo_carving: bool = True  # carve concavities the views' colours reveal out of the hull
    field_smoothing: float = 0.5  # Gaussian sigma (voxels) on the hull field before marching cubes
    smoothing_iterations: int = 10  # Taubin iterations on the marching-cubes mesh
    uv_padding: int = 4  # texels between charts in the atlas
    max_chart_area_fraction: float = 0.01  # cap on one chart's share of the surface (xatlas speed: 0.02 took 1.6x as long)
    light_model: bool = True  # fit the 24-SG light and de-light the texture
    register_views: bool = True  # level and register the views (before carving again, and in the bake)
    refine_steps: int = 400  # most optimisation steps of the refine stage (it stops once converged)
    refine_samples: int = 8_192  # pixels per step
    refine_faces: int = 5_000  # the light is fitted on the mesh decimated to this many faces
    refine_offsets: float = 0.0  # learning rate of vertex offsets (0: geometry is the hull's)
    sds_steps: int = 100  # last refine steps with masked SDS, when ``reconstruct`` gets a guide
    illum_weight: float = 0.5  # weight of L_illum = |V(I) - shading|^2
    albedo_tv_weight: float = 0.02  # total variation of the per-vertex albedo
    environment_width: int = 512  # of the equirectangular light image (height = width / 2)
    device: str = "auto"  # torch device of the refine stage: "auto" = CUDA when available
    threads: int = 0  # torch CPU threads; 0: the CPUs other processes leave free, re-measured per stage

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
            (self.refine_steps >= 0, "refine_steps must be >= 0"),
            (self.refine_samples >= 1, "refine_samples must be >= 1"),
            (self.refine_faces >= 0, "refine_faces must be >= 0 (0: fit on the full mesh)"),
            (self.refine_offsets >= 0, "refine_offsets must be >= 0"),
            (0 <= self.sds_steps <= self.refine_steps, "sds_steps must be in [0, refine_steps]"),
            (self.illum_weight >= 0 and self.albedo_tv_weight >= 0, "loss weights must be >= 0"),
            (8 <= self.environment_width <= 8192, "environment_width must be in [8, 8192]"),
            (self.threads >= 0, "threads must be >= 0 (0: from the free CPUs)"),
            (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "unknown device"),
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
    #: The fitted light (``light.py``'s JSON: ``ambient`` and 24 ``lobes`` of world
    #: radiance, linear RGB, Z up) plus ``space``/``axes``/``sharpness``/``amplitudes``
    #: for the quality benchmark's renderer; None without the light model.
    light: dict | None = None
    #: (H, W, 3) float32 equirectangular radiance of the light in Blender's layout (see
    #: ``SGLight.environment_image``); None without the light model.
    environment: np.ndarray | None = None


def reconstruct(
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    options: ReconstructionOptions = ReconstructionOptions(),
    progress: ProgressFn = no_progress,
    guide: SDSGuide | None = None,
    plan: PlanFn = no_plan,
) -> ReconstructionResult:
    """images (N, H, W, 4) uint8 RGBA (alpha = subject mask), c2w (N, 4, 4).

    ``guide`` (a loaded Zero123-class model and the reference view) turns on masked SDS in
    the refine stage: surfaces no view saw get their albedo from the model instead of the
    texture's fill from the nearest charts. ``plan`` hears how long, and which way, the
    stages that run otherwise than in the benchmark (photo carving and the bake on one
    worker, the unwrap after the fit, the bake laying out its own texels) will take once
    that is decided, and again when one goes back to the benchmark's way.
    """
    images, c2w = _check_inputs(images, c2w, camera_angle_x)
    options.validate()
    images, c2w = views_with_a_subject(images, c2w, options.alpha_threshold)
    cpu = CpuShare(options.threads)
    try:
        return _reconstruct(images, c2w, camera_angle_x, options, _Stages(progress, cpu, plan), guide)
    finally:
        cpu.restore()


class _Stages:
    """Reports each stage's start and end, times it, and re-sizes the CPU pool at its start."""

    def __init__(self, progress: ProgressFn, cpu: CpuShare, plan: PlanFn = no_plan) -> None:
        self.progress = progress
        self.cpu = cpu
        self._plan = plan
        self.planned: dict[str, tuple[float, Way]] = {}  # what the clock has heard, by stage
        self.seconds: dict[str, float] = {}

    def plan(self, name: str, seconds: float, way: Way = Way.BENCHMARK, of_object: bool = False) -> None:
        """Tell the progress clock that stage ``name`` will take ``seconds`` at the benchmark's
        pace, run ``way`` (``of_object``: measured from this object's own work)."""
        self.planned[name] = (seconds, way)
        self._plan(name, seconds, way, of_object)

    def runs_otherwise(self, name: str) -> bool:
        """Whether stage ``name`` was last planned to run otherwise than in the benchmark."""
        return name in self.planned and self.planned[name][1] is not Way.BENCHMARK

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress(name, 0.0)
        self.cpu.adjust()  # what other processes leave free may have changed
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.progress(name, 1.0)


def _reconstruct(
    images: np.ndarray, c2w: np.ndarray, camera_angle_x: float, options: ReconstructionOptions, stage: _Stages, guide: SDSGuide | None
) -> ReconstructionResult:
    progress = stage.progress

    device = resolve_device(options.device)
    _plan_workers(stage, options, device, options.max_faces)  # the clock's first estimate knows how the job will run
    with stage("carve"):
        grid, images, drift = _visual_hull(images, c2w, camera_angle_x, options, stage)
    # The unwrap's time follows the mesh's faces, which the hull foretells: a chair's or a
    # lamp's 23-25k are unwrapped before the fit ends, a 50k mesh's outlast it.
    faces_foreseen = _faces_foreseen(grid, options)
    _plan_unwrap(stage, options, faces_foreseen)
    hull = grid  # which parts the masks keep apart from the body, for the mesh stage

    # Photo carving and the light fit run many small torch operations: on the CPU a second
    # thread's wake-up costs more than its share saves (duck, 2-core CPU: photo 1.5-2.0 s on
    # one thread, 2.2-2.6 s on two; refine 1.3-1.5 s against 1.8-2.0 s). Photo carving
    # uses the free CPUs by walking that many views at once instead.
    with stage("photo"), stage.cpu.at_most(1):
        workers = stage.cpu.threads  # the free CPUs, measured as the stage started
        _plan_workers(stage, options, device, faces_foreseen)  # again: other programs may have started or stopped
        if options.photo_carving:
            grid = photo_carve(
                grid,
                images,
                c2w,
                camera_angle_x,
                _photo_options(options, drift.drifted),
                device=device,
                on_progress=lambda f: progress("photo", f),
                workers=workers,
                on_work=lambda work: _plan_photo(stage, work),
            ).grid
            _plan_unwrap(stage, options, _faces_foreseen(grid, options))  # carving may have opened the inside

    # Every unwrap runs in a helper process: xatlas holds the GIL (the server's thread would
    # answer no ping meanwhile) and crashes the process on some meshes, which must not be
    # the backend's. The light fit moves no vertex unless it fits offsets: then the UVs,
    # and the texels they lay out, can be made beside it, on the core the one-thread fit
    # leaves free (not the texels of a painted albedo: they need the fit's colours). With a
    # second core the helper starts with the mesh stage, beside it.
    helper = start_helper() if stage.cpu.threads >= 2 else None
    beside = None
    try:
        if helper is not None:  # its core is this job's, not taken by another program
            stage.cpu.count_as_own(helper.pid)
        with stage("mesh"):
            vertices, faces = extract_surface(grid, options.field_smoothing)
            progress("mesh", 0.2)
            apart = HullParts.of(hull)
            vertices, faces = largest_component(vertices, faces, _KEEP_PART_FRACTION, apart)
            vertices = taubin_smooth(vertices, faces, options.smoothing_iterations, max_shift=0.5 * grid.spacing, min_part_fraction=_KEEP_PART_FRACTION)
            progress("mesh", 0.8)
            vertices, faces = decimate(vertices, faces, options.max_faces)
            vertices, faces = largest_component(*drop_coincident_faces(vertices, faces), _KEEP_PART_FRACTION, apart)

        unwrap_args = (options.texture_size, options.uv_padding, options.max_chart_area_fraction)
        if _unwrap_beside_the_fit(stage, options):
            normals = vertex_normals(vertices, faces) if guide is None else None
            beside, helper = UnwrapBeside(vertices, faces, *unwrap_args, normals=normals, helper=helper), None
            if beside.pid is not None:  # the one started ahead, or another if that one died
                stage.cpu.count_as_own(beside.pid)
        stage.plan("uv", unwrap_seconds(len(faces), beside=beside is not None), Way.BENCHMARK if beside is not None else Way.AFTER_THE_FIT)
        return _refine_and_finish(images, c2w, camera_angle_x, options, stage, guide, vertices, faces, beside, unwrap_args, helper, drift.shifted)
    finally:
        stop_helper(helper)
        if beside is not None:
            beside.close()


@dataclass(frozen=True)
class _Drift:
    """What registering the views found them to need."""

    levelled: bool = False  # exposure or white balance drifting between them
    shifted: bool = False  # images disagreeing by a pixel or two

    @property
    def drifted(self) -> bool:
        return self.levelled or self.shifted


def _visual_hull(
    images: np.ndarray, c2w: np.ndarray, camera_angle_x: float, options: ReconstructionOptions, stage: _Stages
) -> tuple[HullGrid, np.ndarray, _Drift]:
    """The carve stage: the views' visual hull, the views (registered where they needed
    it) and what they needed."""
    progress = stage.progress
    ends = _REGISTERED_CARVE_SHARES if options.register_views else _CARVE_SHARES
    silhouettes = Silhouettes.from_alpha(images[..., 3], options.alpha_threshold, c2w, camera_angle_x)
    progress("carve", ends[0])
    grid = carve(silhouettes, options.grid_resolution, sub_progress(progress, "carve", ends[0], ends[1]))
    if not options.register_views:
        return grid, images, _Drift()
    # Generated views drift in exposure and disagree by a pixel or two: level and
    # register them on the hull's rough surface, then carve again from the
    # registered silhouettes. Views that already agree come back unchanged.
    rough_v, rough_f = decimate(*extract_surface(grid, options.field_smoothing), _REGISTER_FACES)
    with stage.cpu.at_most(1):  # threads of its own, one view each: the free CPUs
        registered, gains, shifts = register_views(rough_v, rough_f, images, c2w, camera_angle_x, workers=stage.cpu.threads)
    drift = _Drift(levelled=np.abs(gains - 1.0).max() > _REGISTERED_GAIN, shifted=np.abs(shifts).max() > _REGISTERED_SHIFT_PX)
    if not drift.drifted:
        return grid, images, drift
    log.info("views registered: gains %.3f-%.3f, shifts up to %.2f px", gains.min(), gains.max(), np.abs(shifts).max())
    progress("carve", ends[2])
    silhouettes = Silhouettes.from_alpha(registered[..., 3], options.alpha_threshold, c2w, camera_angle_x)
    progress("carve", ends[3])
    return carve(silhouettes, options.grid_resolution, sub_progress(progress, "carve", ends[3], 1.0)), registered, drift


def _photo_options(options: ReconstructionOptions, drifted: bool) -> PhotoOptions:
    return PhotoOptions(alpha_threshold=options.alpha_threshold, **({"surface_weight": _DRIFTED_SURFACE_WEIGHT} if drifted else {}))


def planned_photo_work(images: np.ndarray, c2w: np.ndarray, camera_angle_x: float, options: ReconstructionOptions = ReconstructionOptions()) -> PhotoWork:
    """What a Make Mesh of these views will sample of its photo carving to plan the stage
    (the ETA benchmarks keep it with each run, so the progress clock can be replayed)."""
    images, c2w = _check_inputs(images, c2w, camera_angle_x)
    images, c2w = views_with_a_subject(images, c2w, options.alpha_threshold)
    cpu = CpuShare(options.threads)
    try:
        grid, images, drift = _visual_hull(images, c2w, camera_angle_x, options, _Stages(no_progress, cpu))
    finally:
        cpu.restore()
    return photo_work(grid, images, c2w, camera_angle_x, _photo_options(options, drift.drifted), resolve_device(options.device))


def _plan_photo(stage: _Stages, work: PhotoWork) -> None:
    """Plan photo carving from the work it sampled: its time follows the hull's depth along
    the rays whose entry does not match, which nothing before the stage foretells (tiles'
    took 3x the typical object's, from views that cost as much)."""
    seconds = photo_seconds(work.rays, work.compared)
    if stage.runs_otherwise("photo"):  # one view at a time
        stage.plan("photo", seconds * ONE_WORKER_SECONDS["photo"] / STAGE_SECONDS["photo"], Way.ONE_WORKER, of_object=True)
    else:
        stage.plan("photo", seconds, of_object=True)


def _unwrap_beside_the_fit(stage: _Stages, options: ReconstructionOptions) -> bool:
    """Whether the unwrap is made beside the light fit: a second CPU is free and the fit
    moves no vertex (else it is made after the fit, of the fitted mesh)."""
    return options.refine_offsets == 0 and stage.cpu.threads >= 2


def _faces_foreseen(grid: HullGrid, options: ReconstructionOptions) -> int:
    """The faces the mesh stage will make of ``grid``: its surface's, within the budget."""
    return min(options.max_faces, surface_faces(grid))


def _plan_unwrap(stage: _Stages, options: ReconstructionOptions, faces: int) -> None:
    """Tell the clock the uv stage's time for a mesh of ``faces``: the wait for the unwrap
    made beside the fit, else the whole unwrap after it (the mesh stage plans it again once
    the mesh is made)."""
    beside = _unwrap_beside_the_fit(stage, options)
    stage.plan("uv", unwrap_seconds(faces, beside=beside), Way.BENCHMARK if beside else Way.AFTER_THE_FIT)


def _plan_workers(stage: _Stages, options: ReconstructionOptions, device, faces: int) -> None:
    """Tell the clock how photo carving, the unwrap and the bake will run on the CPUs free
    now: on one worker, one view (chunk) at a time and the unwrap after the fit, when there
    is no second one. Planned from the first stage, so that the estimate does not jump when
    photo carving starts (beside two busy processes: +34%); the uv and texture stages decide
    again when they know."""
    if stage.cpu.threads < 2:
        if device.type == "cpu":  # on a GPU photo carving does not walk the views on threads
            stage.plan("photo", ONE_WORKER_SECONDS["photo"], Way.ONE_WORKER)
        _plan_unwrap(stage, options, faces)
        stage.plan("texture", ONE_WORKER_SECONDS["texture"], Way.ONE_WORKER)
        return
    for name in ("photo", "texture"):  # planned on one worker before: a CPU came free since
        if stage.runs_otherwise(name):
            stage.plan(name, STAGE_SECONDS[name])


def _refine_and_finish(
    images: np.ndarray,
    c2w: np.ndarray,
    camera_angle_x: float,
    options: ReconstructionOptions,
    stage: _Stages,
    guide: SDSGuide | None,
    vertices: np.ndarray,
    faces: np.ndarray,
    beside: UnwrapBeside | None,
    unwrap_args: tuple,
    ahead: subprocess.Popen | None = None,
    shifted: bool = False,
) -> ReconstructionResult:
    """The stages after the mesh; ``beside``: its unwrap, made beside the fit, else made
    after it, in ``ahead`` (a helper started ahead) or one started then. ``shifted``: the
    carve stage registered the views' images (the bake refines that)."""
    progress = stage.progress
    light: SGLight | None = None
    fit = None
    with stage("refine"), stage.cpu.at_most(1):
        if options.light_model or options.refine_offsets > 0:
            refine_options = RefineOptions(
                steps=options.refine_steps,
                samples=options.refine_samples,
                lr_offsets=options.refine_offsets,
                w_illum=options.illum_weight,
                w_albedo_tv=options.albedo_tv_weight,
                alpha_threshold=options.alpha_threshold,
                sds_steps=options.sds_steps if guide is not None else 0,
                coarse_faces=options.refine_faces,
                stop_tolerance=0.0 if guide is not None else 1e-3,  # SDS runs in the last steps: run them all
            )
            try:
                fit = refine(
                    vertices,
                    faces,
                    images,
                    c2w,
                    camera_angle_x,
                    refine_options,
                    device=options.device,
                    on_progress=lambda f: progress("refine", f),
                    guide=guide,
                )
            except FloatingPointError:
                fit = None  # diverged: keep the hull's mesh and the views' own colour
            if fit is not None:
                vertices = fit.vertices
                light = fit.light if options.light_model else None

    with stage("uv"):
        if beside is None:  # no second CPU, or the fit moved the vertices: made now
            beside = UnwrapBeside(vertices, faces, *unwrap_args, helper=ahead)
            if beside.pid is not None:
                stage.cpu.count_as_own(beside.pid)
        try:
            uv_mesh = beside.result(waiting=lambda: progress("uv", STILL_WORKING))  # a cancel stops it at once
        finally:
            beside.close()

    # The bake's threads take a view or a chunk of texels each, torch's one thread apiece.
    with stage("texture"), stage.cpu.at_most(1):
        surface = beside.texels if beside is not None else None  # laid out by the helper
        ends = _texture_ends(texels_here=surface is None, workers=stage.cpu.threads)
        if stage.cpu.threads < 2:
            stage.plan("texture", ONE_WORKER_SECONDS["texture"], Way.ONE_WORKER)
        elif surface is None:
            stage.plan("texture", STAGE_SECONDS["texture"] / (1.0 - _TEXTURE_PARTS[2][0]), Way.TEXELS_HERE)
        elif stage.runs_otherwise("texture"):  # planned on one worker before; the CPU came free since
            stage.plan("texture", STAGE_SECONDS["texture"])
        painted = guide is not None and fit is not None and light is not None
        if surface is None:
            surface = texel_surface(
                uv_mesh.vertices,
                uv_mesh.faces,
                uv_mesh.uvs,
                vertex_normals(vertices, faces)[uv_mesh.source],
                options.texture_size,
                on_progress=sub_progress(progress, "texture", 0.0, ends[0]),
                vertex_values=fit.albedo[uv_mesh.source] if painted else None,
            )
        rgb, weight = bake(
            surface,
            vertices,
            faces,
            images,
            c2w,
            camera_angle_x,
            on_progress=sub_progress(progress, "texture", ends[0], ends[1]),
            align=options.register_views,  # views known to agree need no gain or shift fit
            workers=stage.cpu.threads,
            registered=shifted,
        )
        if painted:
            # Texels no view saw: the SDS-painted albedo, lit as the views would show it,
            # so that de-lighting below turns it back into albedo like every other texel.
            unseen = weight <= 1e-3
            shading = light.shading_at(surface.normals[unseen])
            rgb[unseen] = linear_to_srgb(surface.values[unseen] * shading[:, None])
            weight = np.where(unseen, 1.0, weight)
        if light is not None:
            rgb = _delight(rgb, surface.normals, light)
        progress("texture", ends[2])
        texture = fill_texture(surface, rgb, weight > 1e-3, options.texture_size)

    with stage("export"):
        glb = export_glb(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uvs, texture)

    return ReconstructionResult(
        vertices=uv_mesh.vertices.astype(np.float32),
        faces=uv_mesh.faces.astype(np.int32),
        uvs=uv_mesh.uvs.astype(np.float32),
        texture=texture,
        glb=glb,
        stage_seconds=stage.seconds,
        light=None if light is None else light.to_json() | benchmark_view(light.to_json()),
        environment=None
        if light is None
        else light.environment_image(options.environment_width, options.environment_width // 2),
    )


def _texture_ends(texels_here: bool, workers: int = 2) -> tuple[float, float, float]:
    """Where the texels, the bake and the de-lighting end, as fractions of the texture
    stage on ``workers`` threads, with the texels laid out in it or (by the unwrap's
    helper) before it."""
    parts = _TEXTURE_PARTS[min(max(workers, 1), 2)]
    parts = parts if texels_here else (0.0,) + parts[1:]
    ends = np.cumsum(parts) / sum(parts)
    return float(ends[0]), float(ends[1]), float(ends[2])


def _delight(rgb: np.ndarray, normals: np.ndarray, light: SGLight) -> np.ndarray:
    """Texel albedo (sRGB values) = views' colour / shading, in linear light.

    Normalises the albedo so its bright end is 1 and scales ``light`` by the inverse, so
    the product (what the views show) is unchanged.
    """
    shading = light.shading_at(normals)
    shading = np.maximum(shading, _MIN_SHADING * max(float(np.median(shading)), 1e-12))
    albedo = srgb_to_linear(rgb.astype(np.float64)) / shading[:, None]
    scale = float(np.percentile(albedo.max(1), _ALBEDO_PERCENTILE)) if len(albedo) else 1.0
    if scale > 0:
        albedo /= scale
        light.scale_(scale)
    return linear_to_srgb(albedo).astype(np.float32)


def views_with_a_subject(images: np.ndarray, c2w: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop views whose mask is empty (a generated view that could not be keyed), saying so."""
    shows = (images[..., 3] > threshold).any(axis=(1, 2))
    if shows.all():
        return images, c2w
    log.warning("views %s show no subject (empty mask): reconstructing from the other %d", np.flatnonzero(~shows).tolist(), int(shows.sum()))
    if shows.sum() < 2:
        raise ValueError("fewer than 2 views show the subject: the masks are empty (check the views' alpha or background)")
    return images[shows], c2w[shows]


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
