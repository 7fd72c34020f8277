"""What every image of a batch is converted with, checked once before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blend123.protocol import settings as S
from blend123.protocol.errors import Blend123Error
from blend123.protocol.messages import GenerationSettings, Orbit, Reconstruct


class BatchError(Blend123Error):
    """A batch that cannot start: an input, an output folder, the cluster; the hint says what to do."""


@dataclass(frozen=True)
class BatchOptions:
    """The ``convert`` settings of a batch, shipped to every worker (plain data, picklable)."""

    settings: GenerationSettings = field(default_factory=GenerationSettings)
    elevations: tuple[float, ...] = (10.0,)
    texture_size: int = S.TEXTURE_SIZE.default
    max_faces: int = S.MAX_FACES.default
    sds_model: str = ""
    log_level: str = "warning"  # of the workers' own per-image stage lines

    def orbit(self, image: np.ndarray) -> Orbit:
        return Orbit(image, list(self.elevations), settings=self.settings)

    def reconstruct(self, source_job: str) -> Reconstruct:
        # With an sds_model the task conditions on the orbit's own photo and camera.
        return Reconstruct(source_job=source_job, texture_size=self.texture_size, max_faces=self.max_faces, sds_model=self.sds_model)

    def validate(self) -> None:
        """Refuse a wrong setting once, before thousands of images fail of it one by one."""
        probe = np.zeros((8, 8, 4), np.uint8)
        self.orbit(probe).validate()
        self.reconstruct("0" * 32).validate()
