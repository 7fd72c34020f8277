"""What this machine's stages take, remembered across jobs and restarts.

``STAGE_SECONDS`` were measured on one machine, and another spends its time otherwise:
measured on two hosts of the same 2-core virtual machine type, the light fit and the
bake took 1.4-1.6x longer on the second while the proxy's views took as long, so a
first estimate made from the proxy's views fell 30% short. The worker therefore learns,
from every job that ran the way the benchmark ran (alone, on an unloaded machine, no
stage planned otherwise), each stage's weight on this machine and the machine's pace,
and keeps both in a small JSON file beside the jobs: the first job after a restart
starts from them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import STAGE_SECONDS, StageClock

log = logging.getLogger("blend123.worker")

#: The file's name in the jobs folder (the job store ignores what is not a job).
FILE_NAME = "stage_seconds.json"
_VERSION = 1
#: How far one job moves a stage's weight toward what it measured: objects differ (a mug's
#: photo carving takes twice a duck's), so one job does not set it alone.
_LEARN_RATE = 0.5
#: A learned weight stays within these factors of the benchmark's (a stage that stalled
#: on a swapped-out page says little about the machine).
_BOUNDS = (0.25, 4.0)
_PACE_BOUNDS = (0.05, 50.0)


@dataclass
class StageMemory:
    """Stage weights (benchmark seconds, as ``STAGE_SECONDS``) and the machine's pace."""

    weights: dict[str, float] = field(default_factory=lambda: dict(STAGE_SECONDS))
    pace: float = 1.0  # seconds per benchmark second on this machine, unloaded
    path: Path | None = None  # where it is kept; None: in memory only

    @classmethod
    def load(cls, path: Path | None) -> "StageMemory":
        """The memory kept at ``path``; the benchmark's when there is none or it is damaged."""
        memory = cls(path=path)
        if path is None:
            return memory
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != _VERSION:
                return memory
            for stage, seconds in data["weights"].items():
                if stage in STAGE_SECONDS and _within(float(seconds), STAGE_SECONDS[stage], _BOUNDS):
                    memory.weights[stage] = float(seconds)
            pace = float(data["pace"])
            if _within(pace, 1.0, _PACE_BOUNDS):
                memory.pace = pace
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the stage timings in %s (%s): starting from the benchmark's", path, exc)
        return memory

    def learn(self, clock: StageClock) -> None:
        """Take in a finished job that ran alone (call :meth:`StageClock.finish` first)."""
        # The job's own pace over the stages it timed (the clock's leans on the expected one).
        planned = sum(clock.weights.get(stage, 1.0) for stage in clock.stage_seconds)
        if planned <= 0:
            return
        pace = sum(clock.stage_seconds.values()) / planned
        self.pace = min(max(pace / clock.load, _PACE_BOUNDS[0]), _PACE_BOUNDS[1])
        if clock.load > 1.0 or pace <= 0:
            return  # other processes slow the stages unevenly: their shares say nothing
        for stage, seconds in clock.stage_seconds.items():
            if stage in clock.planned or stage not in STAGE_SECONDS:
                continue
            benchmark = STAGE_SECONDS[stage]
            seen = min(max(seconds / pace, benchmark * _BOUNDS[0]), benchmark * _BOUNDS[1])
            self.weights[stage] += _LEARN_RATE * (seen - self.weights[stage])

    def save(self) -> None:
        """Write it beside the jobs; a disk that refuses costs the next restart its estimate only."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": _VERSION, "pace": self.pace, "weights": self.weights}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not keep the stage timings in %s: %s", self.path, exc)


def _within(value: float, reference: float, bounds: tuple[float, float]) -> bool:
    return math.isfinite(value) and reference * bounds[0] <= value <= reference * bounds[1]
