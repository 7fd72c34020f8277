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
request whose values are out of range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .camera import DEFAULT_FOV_DEG, DEFAULT_RADIUS, ORBIT_VIEWS
from .errors import BAD_REQUEST, ProtocolError
from .version import PROTOCOL_VERSION

#: Every message class, by its wire name.
MESSAGE_TYPES: dict[str, type] = {}

# Ranges accepted by the backend. Generous, but keep a typo from asking for a week of GPU.
MAX_IMAGE_SIDE = 4096
MAX_VIEWS_PER_REQUEST = 64
MAX_STEPS = 500
MAX_TEXTURE_SIZE = 4096
MAX_FACES = 2_000_000


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
    """Settings shared by the view-synthesis requests."""

    model: str = "default"
    reference_elevation: float = 0.0
    radius: float = DEFAULT_RADIUS
    fov_deg: float = DEFAULT_FOV_DEG
    resolution: int = 256
    steps: int = 50
    guidance: float = 3.0
    seed: int = 0

    def validate(self) -> None:
        if not self.model:
            _fail("model name is empty", "ask `hello` for the models this backend has")
        _check_range("reference_elevation", self.reference_elevation, -90.0, 90.0)
        _check_range("radius", self.radius, 1e-3, 1e6)
        _check_range("fov_deg", self.fov_deg, 1.0, 170.0)
        _check_range("resolution", self.resolution, 32, 2048)
        _check_range("steps", self.steps, 1, MAX_STEPS)
        _check_range("guidance", self.guidance, 0.0, 50.0)
        _check_range("seed", self.seed, 0, 2**63 - 1)


# --- requests -------------------------------------------------------------------------


@message("hello")
@dataclass
class Hello(Message):
    client: str = ""
    protocol_version: int = PROTOCOL_VERSION


@message("ping")
@dataclass
class Ping(Message):
    pass


@message("novel_view")
@dataclass
class NovelView(Message):
    """One or more novel views of the reference image.

    ``poses`` is (N, 3) float: elevation (deg, absolute), azimuth (deg, relative to the
    reference camera), radius (world units, <= 0 means the settings' radius).
    """

    image: np.ndarray
    poses: np.ndarray
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self) -> None:
        _check_image("image", self.image)
        p = self.poses
        if p.ndim != 2 or p.shape[1] != 3 or p.dtype.kind != "f" or not (1 <= len(p) <= MAX_VIEWS_PER_REQUEST):
            _fail(f"poses must be float (N, 3) [elevation, azimuth, radius] with 1 <= N <= {MAX_VIEWS_PER_REQUEST}, got {p.dtype} {p.shape}")
        if not np.isfinite(p).all() or (np.abs(p[:, 0]) > 90).any():
            _fail("pose elevations must be finite and within [-90, 90] degrees")
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
    views: int = ORBIT_VIEWS
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self) -> None:
        _check_image("image", self.image)
        _check_range("views", self.views, 1, MAX_VIEWS_PER_REQUEST)
        if len(self.elevations) not in (1, self.views):
            _fail(f"give 1 elevation or one per view ({self.views}), got {len(self.elevations)}")
        if self.azimuths and len(self.azimuths) != self.views:
            _fail(f"give no azimuths or one per view ({self.views}), got {len(self.azimuths)}")
        for e in self.elevations:
            _check_range("elevation", e, -90.0, 90.0)
        for a in self.azimuths:
            _check_range("azimuth", a, -1e4, 1e4)
        self.settings.validate()


@message("reconstruct")
@dataclass
class Reconstruct(Message):
    """Views with known cameras to a textured mesh.

    Either ``images`` + ``c2w`` (camera-to-world, NeRF "Blender" convention), or
    ``source_job``: the id of a finished orbit job whose views the server already holds.

    ``sds_model`` (optional): a Zero123-class model that paints the surfaces no view saw
    by masked score distillation, conditioned on ``sds_image`` (the reference photo, RGBA)
    as seen by the camera ``sds_c2w``. With ``source_job`` both may be left out: the
    server then takes the orbit's own input image and reference camera.
    """

    images: np.ndarray | None = None
    c2w: np.ndarray | None = None
    camera_angle_x: float = math.radians(DEFAULT_FOV_DEG)
    source_job: str = ""
    texture_size: int = 1024
    max_faces: int = 50_000
    sds_model: str = ""
    sds_image: np.ndarray | None = None
    sds_c2w: np.ndarray | None = None

    def validate(self) -> None:
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
        _check_range("camera_angle_x", self.camera_angle_x, 0.01, 3.0)
        _check_range("texture_size", self.texture_size, 16, MAX_TEXTURE_SIZE)
        _check_range("max_faces", self.max_faces, 100, MAX_FACES)
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


@message("pong")
@dataclass
class Pong(Message):
    """Reply to ``ping``, and the server's heartbeat to clients with running jobs."""

    server_time: float
    running_job: str = ""
    queue_length: int = 0
    # Seconds since the running job last reported a step: a hung worker shows here.
    seconds_since_step: float = 0.0


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
    fraction: float
    eta_s: float = -1.0  # < 0: unknown
    elapsed_s: float = 0.0
    seq: int = 0


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
    camera_angle_x: float
    image: np.ndarray  # (H, W, 4) uint8 RGBA, first row at the top
    model: str = ""
    seq: int = 0


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
