"""Typed messages, one dataclass per message type, for both directions.

Requests go from a client (the Blender add-on, the command line) to the backend; replies
and job events come back. Job events (``progress``, ``view``, ``mesh``, ``done``, and
``error`` with a ``job_id``) carry a per-job sequence number ``seq`` so that a client that
reconnects can ask for everything after the last event it saw (``fetch_result``).

Conventions (see :mod:`.camera`): elevations are absolute degrees above the subject's
horizontal plane; azimuths are degrees relative to the reference camera, counter-clockwise
seen from above (+90 moves the camera from -Y to +X); radii are world units about the
subject centre, which is the world origin of the backend's outputs.

Field values are checked by :meth:`validate` after decoding, so the server never runs a
request whose values are out of range. Defaults and bounds come from :mod:`.settings`.

Two cameras travel with a view-synthesis request (:class:`GenerationSettings`), and they
are different things:

* the **reference camera** took the photo: ``reference_elevation``, ``radius`` (its
  distance to the subject centre) and ``reference_fov_deg`` (its horizontal field of view
  across the photo's width). With the subject's extent in the photo they fix the
  subject's true world size;
* the **asking camera** is the one whose view is wanted: its pose is in the request's
  poses, its lens in ``camera`` (a :class:`~.camera.CameraIntrinsics`; ``None`` asks for a
  square view with the default field of view). Every returned :class:`View` is in *that*
  lens, at ``resolution`` pixels along its longer side, and records its intrinsics.

Filling the asking camera from a Blender camera (numbers only, no bpy needed here)::

    cam, render = camera_object.data, scene.render
    camera = CameraIntrinsics.from_blender(
        lens_mm=cam.lens, sensor_width_mm=cam.sensor_width, sensor_height_mm=cam.sensor_height,
        sensor_fit=cam.sensor_fit,            # "AUTO", "HORIZONTAL" or "VERTICAL"
        shift_x=cam.shift_x, shift_y=cam.shift_y,
        res_x=render.resolution_x * render.resolution_percentage // 100,
        res_y=render.resolution_y * render.resolution_percentage // 100,
    )
    settings = GenerationSettings(model=..., reference_elevation=..., radius=|R - C|,
                                  reference_fov_deg=<R's horizontal FOV>, camera=camera)

The returned view then fills that camera's frame exactly (an image plane of the frame's
size and shift at any distance). ``steps`` and ``guidance`` left ``None`` run the model's
own defaults (``hello``'s :class:`ModelInfo` says which settings a model takes; the
default model takes neither and refuses them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import settings as S
from .camera import DEFAULT_FOV_DEG, CameraIntrinsics, NativeCamera
from .errors import BAD_REQUEST, ProtocolError
from .version import PROTOCOL_VERSION

#: Every message class, by its wire name.
MESSAGE_TYPES: dict[str, type] = {}

# Ranges accepted by the backend, as :mod:`.settings` defines them.
MAX_IMAGE_SIDE = int(S.IMAGE_SIDE.high)
MAX_VIEWS_PER_REQUEST = int(S.VIEWS.high)
MAX_STEPS = int(S.STEPS.high)
MAX_TEXTURE_SIZE = int(S.TEXTURE_SIZE.high)
MAX_FACES = int(S.MAX_FACES.high)


def message(name: str):
    """Class decorator: register a dataclass as the message type ``name``."""

    def register(cls):
        cls.TYPE = name
        MESSAGE_TYPES[name] = cls
        return cls

    return register


def _fail(message_: str, hint: str = "") -> None:
    raise ProtocolError(BAD_REQUEST, message_, hint)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high) or (isinstance(value, float) and not math.isfinite(value)):
        _fail(f"{name}={value!r} is out of range [{low}, {high}]")


def check_camera(name: str, camera: CameraIntrinsics) -> None:
    """An asking or recorded camera: finite angles, a frame of sane size, a bounded shift."""
    S.CAMERA_FOV.check(camera.fov_x_deg, f"{name}.fov_x_deg")
    S.CAMERA_FOV.check(camera.fov_y_deg, f"{name}.fov_y_deg")
    S.RENDER_SIDE.check(camera.width, f"{name}.width")
    S.RENDER_SIDE.check(camera.height, f"{name}.height")
    S.SHIFT.check(camera.shift_x, f"{name}.shift_x")
    S.SHIFT.check(camera.shift_y, f"{name}.shift_y")
    if not 1e-3 <= camera.aspect <= 1e3:
        _fail(f"{name} is {camera.width}x{camera.height}; that aspect is not a camera frame")


def _check_image(name: str, image: np.ndarray, *, batched: bool = False) -> None:
    ndim = 4 if batched else 3
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] != 4:
        shape = "(N, H, W, 4)" if batched else "(H, W, 4)"
        _fail(
            f"{name} must be a uint8 RGBA array of shape {shape}, got {image.dtype} {image.shape}",
            "send 8-bit RGBA pixels, first row at the top",
        )
    h, w = image.shape[-3], image.shape[-2]
    if not (8 <= h <= MAX_IMAGE_SIDE and 8 <= w <= MAX_IMAGE_SIDE):
        _fail(f"{name} is {w}x{h}; each side must be between 8 and {MAX_IMAGE_SIDE} pixels", "resize the image")


class Message:
    """Base of all messages; ``TYPE`` is the wire name."""

    TYPE: ClassVar[str] = ""

    def validate(self) -> None:
        """Raise :class:`ProtocolError` if a field value is out of range."""


@dataclass
class GenerationSettings:
    """Settings shared by the view-synthesis requests (see the module docstring for the
    two cameras). ``steps``/``guidance`` ``None``: the model's own defaults."""

    model: str = S.MODEL.default
    reference_elevation: float = S.ELEVATION.default
    radius: float = S.RADIUS.default  # the reference camera's distance to the subject centre
    reference_fov_deg: float = S.REFERENCE_FOV.default
    camera: CameraIntrinsics | None = None  # the asking camera; None: square, default FOV
    resolution: int = S.RESOLUTION.default  # longer side of the returned views
    steps: int | None = S.STEPS.default
    guidance: float | None = S.GUIDANCE.default
    seed: int = S.SEED.default

    def validate(self) -> None:
        if not self.model:
            _fail("model name is empty", "ask `hello` for the models this backend has")
        S.ELEVATION.check(self.reference_elevation, "reference_elevation")
        S.RADIUS.check(self.radius)
        S.REFERENCE_FOV.check(self.reference_fov_deg)
        if self.camera is not None:
            check_camera("camera", self.camera)
        S.RESOLUTION.check(self.resolution)
        S.STEPS.check(self.steps)
        S.GUIDANCE.check(self.guidance)
        S.SEED.check(self.seed)

    def asking_camera(self) -> CameraIntrinsics:
        """The intrinsics of the views to return: the asking camera at ``resolution``."""
        camera = self.camera or CameraIntrinsics.square(S.FOV.default, self.resolution)
        return camera.resized(self.resolution)


# --- requests -------------------------------------------------------------------------


@message("hello")
@dataclass
class Hello(Message):
    client: str = ""
    protocol_version: int = PROTOCOL_VERSION


@message("ping")
@dataclass
class Ping(Message):
    """Are you there? ``jobs``: the ids of this client's jobs it is waiting on; the ``pong``
    says which of them are still alive, so a job lost to a restart is known at once."""

    jobs: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if len(self.jobs) > MAX_VIEWS_PER_REQUEST:
            _fail(f"a ping may ask about at most {MAX_VIEWS_PER_REQUEST} jobs, got {len(self.jobs)}")


@message("novel_view")
@dataclass
class NovelView(Message):
    """One or more novel views of the reference image.

    ``poses`` is (N, 3) float: elevation (deg, absolute), azimuth (deg, relative to the
    reference camera), radius (world units, 0 means the settings' radius).
    """

    image: np.ndarray
    poses: np.ndarray
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self) -> None:
        _check_image("image", self.image)
        p = self.poses
        if p.ndim != 2 or p.shape[1] != 3 or p.dtype.kind != "f" or not (1 <= len(p) <= MAX_VIEWS_PER_REQUEST):
            _fail(f"poses must be float (N, 3) [elevation, azimuth, radius] with 1 <= N <= {MAX_VIEWS_PER_REQUEST}, got {p.dtype} {p.shape}")
        if not np.isfinite(p).all():
            _fail("poses must be finite numbers [elevation, azimuth, radius]")
        if (np.abs(p[:, 0]) > 90).any():
            _fail("pose elevations must be within [-90, 90] degrees")
        for e, a, r in p:
            S.AZIMUTH.check(float(a), "pose azimuth")
            if r != 0.0:  # 0: the settings' radius
                S.RADIUS.check(float(r), "pose radius")
        self.settings.validate()


@message("orbit")
@dataclass
class Orbit(Message):
    """An orbit of views around the subject (SV3D's 21 by default).

    ``elevations`` holds one value (a static orbit) or one per view (a dynamic orbit);
    ``azimuths`` (relative, deg) defaults to SV3D's evenly spaced ring ending at the input.
    """

    image: np.ndarray
    elevations: list[float] = field(default_factory=lambda: [0.0])
    azimuths: list[float] = field(default_factory=list)
    views: int = S.VIEWS.default
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self) -> None:
        _check_image("image", self.image)
        S.VIEWS.check(self.views)
        if len(self.elevations) not in (1, self.views):
            _fail(f"give 1 elevation or one per view ({self.views}), got {len(self.elevations)}")
        if self.azimuths and len(self.azimuths) != self.views:
            _fail(f"give no azimuths or one per view ({self.views}), got {len(self.azimuths)}")
        for e in self.elevations:
            S.ELEVATION.check(e)
        for a in self.azimuths:
            S.AZIMUTH.check(a)
        self.settings.validate()


@message("reconstruct")
@dataclass
class Reconstruct(Message):
    """Views with known cameras to a textured mesh.

    Either ``images`` + ``c2w`` (camera-to-world, NeRF "Blender" convention), or
    ``source_job``: the id of a finished orbit job whose views the server already holds.
    The images' lens is ``camera`` when given (non-square frames, shifted lenses, non-square
    pixels), else ``camera_angle_x`` across the width with square pixels, centred.

    ``sds_model`` (optional): a Zero123-class model that paints the surfaces no view saw
    by masked score distillation, conditioned on ``sds_image`` (the reference photo, RGBA)
    as seen by the camera ``sds_c2w``. With ``source_job`` both may be left out: the
    server then takes the orbit's own input image and reference camera.
    """

    images: np.ndarray | None = None
    c2w: np.ndarray | None = None
    camera_angle_x: float = math.radians(DEFAULT_FOV_DEG)
    source_job: str = ""
    texture_size: int = S.TEXTURE_SIZE.default
    max_faces: int = S.MAX_FACES.default
    sds_model: str = ""
    sds_image: np.ndarray | None = None
    sds_c2w: np.ndarray | None = None
    camera: CameraIntrinsics | None = None  # the images' full intrinsics (supersedes camera_angle_x)

    def validate(self) -> None:
        if self.source_job and self.camera is not None:
            _fail("give camera only with images + c2w; a source_job's views carry their own")
        if self.source_job:
            if self.images is not None or self.c2w is not None:
                _fail("give either source_job or images + c2w, not both")
        else:
            if self.images is None or self.c2w is None:
                _fail("reconstruct needs images + c2w, or the source_job of a finished orbit")
            _check_image("images", self.images, batched=True)
            n = len(self.images)
            if not (2 <= n <= MAX_VIEWS_PER_REQUEST):
                _fail(f"reconstruct needs 2..{MAX_VIEWS_PER_REQUEST} views, got {n}")
            if self.c2w.shape != (n, 4, 4) or self.c2w.dtype.kind != "f" or not np.isfinite(self.c2w).all():
                _fail(f"c2w must be finite float ({n}, 4, 4), got {self.c2w.dtype} {self.c2w.shape}")
            if self.camera is not None:
                check_camera("camera", self.camera)
                h, w = self.images.shape[1:3]
                if (self.camera.width, self.camera.height) != (w, h):
                    _fail(f"camera is {self.camera.width}x{self.camera.height} but the images are {w}x{h}", "give the intrinsics of the images as sent")
        _check_range("camera_angle_x", self.camera_angle_x, 0.01, 3.0)
        S.TEXTURE_SIZE.check(self.texture_size)
        S.MAX_FACES.check(self.max_faces)
        if self.sds_model:
            if (self.sds_image is None) != (self.sds_c2w is None):
                _fail("give sds_image and sds_c2w together (the reference photo and its camera)")
            if self.sds_image is None:
                if not self.source_job:
                    _fail("sds_model needs sds_image and sds_c2w (the reference photo and its camera)", "or reconstruct from an orbit's source_job")
                return
            _check_image("sds_image", self.sds_image)
            c2w = self.sds_c2w
            if c2w.shape != (4, 4) or c2w.dtype.kind != "f" or not np.isfinite(c2w).all():
                _fail(f"sds_c2w must be a finite float (4, 4) matrix, got {c2w.dtype} {c2w.shape}")
        elif self.sds_image is not None or self.sds_c2w is not None:
            _fail("sds_image and sds_c2w only go with an sds_model", "name a Zero123-class model, or leave them out")


@message("cancel")
@dataclass
class Cancel(Message):
    job_id: str


@message("job_status")
@dataclass
class JobStatus(Message):
    job_id: str


@message("fetch_result")
@dataclass
class FetchResult(Message):
    """Replay a job's stored events after ``after_seq`` and keep streaming the rest."""

    job_id: str
    after_seq: int = 0


# --- replies and job events -------------------------------------------------------------


@dataclass
class ModelInfo:
    name: str
    kind: str  # "views", "orbit" or "views+orbit"
    available: bool
    description: str = ""
    hint: str = ""  # what to download and where, when not available
    native: NativeCamera = field(default_factory=NativeCamera)  # its own camera; all None: any
    default_steps: int | None = None  # what runs when a request leaves steps unset
    default_guidance: float | None = None  # likewise guidance (SV3D: the peak of its triangle)
    takes: list[str] = field(default_factory=list)  # the optional settings it honours ("steps", ...)
    # The memory mode it would load in now ("full", "balanced", "low"; "" for models that
    # have none, or from an older backend): from free GPU memory or BLEND123_MEMORY.
    memory_mode: str = ""


@message("hello_reply")
@dataclass
class HelloReply(Message):
    server_version: str
    protocol_version: int
    device: str
    models: list[ModelInfo] = field(default_factory=list)
    gpu_name: str = ""
    gpu_free_bytes: int = 0
    gpu_total_bytes: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    # Background removal for photo references (the optional matting extra): whether the
    # backend has it and, if not, what to install and where the model goes.
    matting: ModelInfo | None = None
    # The memory mode the heaviest diffusion model (SV3D) would load in now: "full",
    # "balanced" or "low" ("" from an older backend); each ModelInfo has its own.
    memory_mode: str = ""
    # The quick proxy's orbit's share of Make Mesh (orbit, then the mesh) on this backend's
    # machine, from the stage timings it has seen; < 0: unknown.
    proxy_orbit_share: float = -1.0


@message("pong")
@dataclass
class Pong(Message):
    """Reply to ``ping``, and the server's heartbeat to clients with running jobs."""

    server_time: float
    running_job: str = ""  # only when it is the asking client's own job
    queue_length: int = 0
    # Seconds since the running job last reported a step: a hung worker shows here.
    seconds_since_step: float = 0.0
    # The state of each job the ping asked about (or, in heartbeats, each job the client
    # follows) that is the client's own: "queued", "running", a final state, or "unknown".
    jobs: dict[str, str] = field(default_factory=dict)
    worker_alive: bool = True
    worker_restarts: int = 0


@message("accepted")
@dataclass
class Accepted(Message):
    job_id: str
    kind: str
    queue_position: int = 0


@message("progress")
@dataclass
class Progress(Message):
    job_id: str
    stage: str
    fraction: float  # of the current stage
    eta_s: float = -1.0  # seconds until the whole job ends; < 0: unknown
    elapsed_s: float = 0.0
    seq: int = 0
    overall: float = -1.0  # fraction of the whole job done; < 0: unknown (an older backend)
    # What the object costs against the benchmark's, as the job's work on it has shown so
    # far (a quick-proxy orbit's views): the jobs made from it take about as much longer;
    # < 0: unknown.
    object_cost: float = -1.0


@message("view")
@dataclass
class View(Message):
    job_id: str
    index: int
    total: int
    elevation: float
    azimuth: float  # relative to the reference camera
    radius: float
    c2w: np.ndarray  # (4, 4) camera-to-world about the subject centre at the origin
    camera_angle_x: float  # horizontal FOV of ``image``, radians (= camera.camera_angle_x)
    image: np.ndarray  # (H, W, 4) uint8 RGBA, first row at the top
    model: str = ""
    seq: int = 0
    camera: CameraIntrinsics | None = None  # the intrinsics of ``image`` as returned

    def intrinsics(self) -> CameraIntrinsics:
        """``camera``, or for a view from an older sender the square frame of ``camera_angle_x``."""
        h, w = self.image.shape[:2]
        return self.camera or CameraIntrinsics.from_fov_x(self.camera_angle_x, w, h)


@message("mesh")
@dataclass
class Mesh(Message):
    """The reconstructed asset, as arrays for fast import and as a GLB for saving."""

    job_id: str
    vertices: np.ndarray  # (V, 3) float32, Blender world (Z up)
    faces: np.ndarray  # (F, 3) int32
    uvs: np.ndarray  # (V, 2) float32, origin at the texture's bottom-left
    texture: np.ndarray  # (T, T, 4) uint8, first row at the top
    glb: bytes = b""
    light_json: str = ""  # the fitted light, empty when none was fitted
    seq: int = 0


@message("done")
@dataclass
class Done(Message):
    job_id: str
    state: str  # "done" or "cancelled"
    elapsed_s: float = 0.0
    peak_memory_bytes: int = 0
    seq: int = 0


@message("error")
@dataclass
class Error(Message):
    code: str
    message: str
    hint: str = ""
    job_id: str = ""  # set when a job failed; then this ends the job's stream
    seq: int = 0

    def to_exception(self) -> ProtocolError:
        return ProtocolError(self.code, self.message, self.hint)


@message("job_state")
@dataclass
class JobState(Message):
    job_id: str
    kind: str
    state: str  # "queued", "running", "done", "failed", "cancelled", "interrupted"
    stage: str = ""
    fraction: float = 0.0
    last_seq: int = 0
    queue_position: int = 0
    error: str = ""


#: Events that belong to a job's stream (carry ``job_id`` and ``seq``).
JOB_EVENTS = (Progress, View, Mesh, Done, Error)
REQUESTS = (Hello, Ping, NovelView, Orbit, Reconstruct, Cancel, JobStatus, FetchResult)
