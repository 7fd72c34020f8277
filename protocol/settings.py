"""Every generation and mesh setting's default and bounds, defined once.

The protocol's validation, the command line and the Blender add-on's properties all read
them from here, so a value one of them accepts is never refused by another. A default of
``None`` means "the model's own default" (each model advertises it in ``hello``), and that
is what runs.

Only the standard library: this module runs inside Blender's own Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from .errors import BAD_REQUEST, ProtocolError

Number = Union[int, float]


@dataclass(frozen=True)
class Setting:
    """One setting: its default, inclusive bounds, and what it means."""

    name: str
    default: Number | str | None
    low: Number | None = None
    high: Number | None = None
    help: str = ""
    integer: bool = False

    def check(self, value: Number | None, name: str = "") -> None:
        """Raise :class:`ProtocolError` when ``value`` is not finite or out of bounds (None passes)."""
        if value is None:
            return
        label = name or self.name
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(BAD_REQUEST, f"{label}={value!r} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(BAD_REQUEST, f"{label}={value!r} is not a finite number")
        if self.integer and not isinstance(value, int):
            raise ProtocolError(BAD_REQUEST, f"{label}={value!r} must be a whole number")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ProtocolError(BAD_REQUEST, f"{label}={value!r} is out of range [{self.low}, {self.high}]", self.help)

    def argparse_type(self):
        """An argparse ``type=`` that refuses values outside these bounds at parse time,
        for every command line (``blend123``, Blender's ``--command blend123``)."""
        import argparse

        kind = int if self.integer else float

        def parse(text: str):
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if self.integer else ''}number") from None
            try:
                self.check(value)
            except ProtocolError as exc:
                raise argparse.ArgumentTypeError(exc.message) from None
            return value

        parse.__name__ = self.name  # argparse names the type in its messages
        return parse


# Generous bounds, but a typo must not ask for a week of GPU time.
MODEL = Setting("model", "default", help="view-synthesis model; `hello` lists this backend's")
RESOLUTION = Setting("resolution", 256, 32, 2048, "longer side of the returned views, pixels", integer=True)
STEPS = Setting("steps", None, 1, 500, "denoising steps; unset: the model's own default", integer=True)
GUIDANCE = Setting("guidance", None, 0.0, 50.0, "classifier-free guidance scale; unset: the model's own default")
SEED = Setting("seed", 0, 0, 2**63 - 1, "random seed of the diffusion noise", integer=True)
#: The lens the reference photo was taken with (horizontal FOV, across the image's width).
REFERENCE_FOV = Setting("reference_fov_deg", 33.8, 1.0, 170.0, "horizontal field of view of the reference photo, degrees")
#: The asking camera's FOV when a client gives only one (the command line's ``--fov``).
FOV = Setting("fov_deg", 33.8, 1.0, 170.0, "horizontal field of view of the returned views, degrees")
#: Distance of the reference camera (and of views that name none) to the subject centre.
RADIUS = Setting("radius", 2.0, 1e-3, 1e4, "camera distance to the subject centre, world units")
ELEVATION = Setting("elevation", 0.0, -90.0, 90.0, "degrees above the subject's horizontal plane")
AZIMUTH = Setting("azimuth", 0.0, -1e4, 1e4, "degrees relative to the reference camera")
VIEWS = Setting("views", 21, 1, 64, "views in one request (an orbit: SV3D's 21)", integer=True)
TEXTURE_SIZE = Setting("texture_size", 1024, 16, 4096, "side of the albedo texture, texels", integer=True)
MAX_FACES = Setting("max_faces", 50_000, 100, 2_000_000, "face budget of the reconstructed mesh", integer=True)
#: Lens shift, in units of the frame's larger side (Blender allows +-10 in the UI too).
SHIFT = Setting("shift", 0.0, -10.0, 10.0, "lens shift, units of the frame's larger side")
#: Field of view of any camera's axis, degrees.
CAMERA_FOV = Setting("fov", 33.8, 0.1, 175.0, "field of view along one axis, degrees")
#: Pixels along a side of any image that travels (a request's input or a camera's frame).
IMAGE_SIDE = Setting("image side", 256, 8, 4096, "pixels along one side", integer=True)
#: A camera's render size may be larger than what travels: it only sets the aspect.
RENDER_SIDE = Setting("render side", 1920, 1, 65536, "render resolution along one side, pixels", integer=True)

ALL: dict[str, Setting] = {
    s.name: s
    for s in (
        MODEL, RESOLUTION, STEPS, GUIDANCE, SEED, REFERENCE_FOV, FOV, RADIUS, ELEVATION, AZIMUTH, VIEWS,
        TEXTURE_SIZE, MAX_FACES, SHIFT, CAMERA_FOV, IMAGE_SIDE, RENDER_SIDE,
    )
}


def is_quick_proxy(model: str) -> bool:
    """Whether ``model`` (empty: the default) names the built-in quick proxy, not diffusion."""
    return (model or MODEL.default) == MODEL.default
