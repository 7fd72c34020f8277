"""What this machine's stages take, remembered across jobs and restarts.

``STAGE_SECONDS`` were measured on one machine, and another spends its time otherwise:
measured on two hosts of the same 2-core virtual machine type, the light fit and the
bake took 1.4-1.6x longer on the second while the proxy's views took as long, so a
first estimate made from the proxy's views fell 30% short. The worker therefore learns,
from every job that ran alone, the job's pace and each stage's seconds per benchmark
second on this machine, and keeps them in a small JSON file beside the jobs: the first
job after a restart starts from them; a backend no job has timed starts from a short
speed probe's pace (``speed_probe.py``). A stage run as in the benchmark teaches its ratio
only on an unloaded machine (other processes slow the stages unevenly); a stage run one of
the ways other processes force on a job (``progress.BUSY_WAYS``: on one worker, the unwrap
after the fit) teaches its own in a job that started beside them: what that way costs here
beyond its plan and the load's share (``benchmarks/bench_busy.py`` on the 2-core CPU: the
one-worker bake's ratio came out 1.3-1.4x the two-worker bake's, photo carving's on one
worker 1.2-1.3x). A mesh job whose orbit showed what its object costs
(``StageClock.object_cost_shown``) teaches with that cost taken out; the orbit itself,
whose views took what the object made them take, teaches only a tenth of the way.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import (
    BENCHMARK_FACES, BUSY_WAYS, JOB_STAGES, ONE_WORKER_SECONDS, RATIO_KEYS, STAGE_SECONDS, StageClock, Way, ratio_key, unwrap_seconds, way_scale,
)

log = logging.getLogger("blend123.worker")

#: The file's name in the jobs folder (the job store ignores what is not a job).
FILE_NAME = "stage_seconds.json"
#: 4: ratios counted in the typical object's stage seconds (``STAGE_SECONDS`` from nine
#: objects), without the object's own cost where its orbit showed it.
_VERSION = 4
#: How far one mesh job moves a stage's ratio, or a measured pace, toward what it measured
#: (in log space, by at most ``_MOST_STEP``): the object's cost its orbit showed is taken
#: out, but its stages still part from the typical object's (tiles' photo carving took 3x
#: its share, a chair's mesh job half what its views foretold). Replayed on 60 recorded
#: runs of twelve objects one after another (``replay_eta.py``: three reports), half way
#: without a cap left the bar above 30% in 40 of them, a fifth of the way with one in 31;
#: a machine's own timings (a fit 1.6x slower than the probe says) are learned all the same.
_LEARN_RATE = 0.2
#: The most one job's seconds can say against a ratio (or the pace), in log space.
_MOST_STEP = math.log(1.5)
#: How far a job that showed its object's cost moves them (a quick-proxy orbit: its views
#: took what the object made them take, ``StageClock.object_cost_shown``); the mesh job
#: made from it counts that cost already, and would count it twice.
_LEARN_RATE_SHOWN = 0.1
#: Ratios (and the pace) stay within these bounds (a stage that stalled on a swapped-out
#: page says little about the machine).
_BOUNDS = (0.05, 50.0)


@dataclass
class StageMemory:
    """Seconds per benchmark second on this machine, unloaded: each way of running a
    stage's, and the pace (the jobs', each moving it part of the way from the speed probe's
    or the first job's), for the stages not timed yet and the job as a whole."""

    ratios: dict[str, float] = field(default_factory=dict)
    pace: float = 1.0
    path: Path | None = None  # where it is kept; None: in memory only
    timed: bool = False  # a job on this machine set or moved the pace (here, or kept from before)
    probed: bool = False  # the speed probe set the pace before any job

    def start_from(self, pace: float | None) -> None:
        """Start from ``pace`` (``speed_probe``'s reading of this machine) rather than the
        benchmark machine's, unless a job has timed this machine already."""
        if pace is not None and not self.timed:
            self.pace, self.probed = _bounded(pace), True

    def forget_probe(self) -> None:
        """Back to the benchmark machine's pace, where only a probe of the CPU set it and
        the jobs will run elsewhere (a GPU)."""
        if self.probed and not self.timed:
            self.pace, self.probed = 1.0, False

    def scales(self) -> dict[str, float]:
        """Each timed stage's ratio relative to the pace: its weight per benchmark second."""
        ratios, pace = self.ratios, self.pace  # replaced whole by ``learn``, never changed in place
        return {stage: ratio / pace for stage, ratio in ratios.items()}

    def weights(self) -> dict[str, float]:
        """``STAGE_SECONDS`` re-weighed for this machine (at :attr:`pace`, as a clock's prior)."""
        scales = self.scales()
        return {stage: seconds * scales.get(stage, 1.0) for stage, seconds in STAGE_SECONDS.items()}

    def clock(self, kind: str, load: float = 1.0, quiet: bool = True, object_cost: float = 1.0) -> StageClock:
        """A clock for a job of ``kind`` that starts from this machine's timings, slowed by
        ``load`` (``load_pace``: what other processes' work costs it now); ``quiet``: they
        left the CPUs free (``quiet_machine``); ``object_cost``: the object's, where its
        orbit showed it (``StageClock.object_cost_shown``)."""
        return StageClock(kind, self.weights(), prior_pace=self.pace * load, load=load, scales=self.scales(), quiet=quiet, object_cost=object_cost)

    def proxy_orbit_share(self, second_cpu: bool = True, photo_on_cpu: bool = True) -> float:
        """The quick proxy's orbit's share of Make Mesh (its orbit, then a reconstruction
        without a model to load) on this machine, for the client's one progress bar;
        ``second_cpu``: other processes leave the job a second CPU (``second_cpu_free``),
        else photo carving (on the CPU), the unwrap and the bake run on one (beside two
        busy processes the orbit took 0.09 of the whole against 0.13 quiet)."""
        weights, scales = self.weights(), self.scales()
        if not second_cpu:
            one = {(stage, Way.ONE_WORKER): seconds for stage, seconds in ONE_WORKER_SECONDS.items()}
            one[("uv", Way.AFTER_THE_FIT)] = unwrap_seconds(BENCHMARK_FACES, beside=False)
            if not photo_on_cpu:
                del one[("photo", Way.ONE_WORKER)]
            weights.update({stage: seconds * way_scale(scales, stage, way) for (stage, way), seconds in one.items()})
        orbit = sum(weights[stage] for stage in JOB_STAGES["orbit"])
        mesh = sum(weights[stage] for stage in JOB_STAGES["reconstruct"] if stage != "load model")
        return orbit / (orbit + mesh)

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
            pace = float(data["pace"])
            ratios = {str(key): float(ratio) for key, ratio in data["ratios"].items() if key in RATIO_KEYS}
            if _within(pace) and all(_within(ratio) for ratio in ratios.values()):
                memory.pace, memory.ratios, memory.timed = pace, ratios, True
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the stage timings in %s (%s): starting from the benchmark's", path, exc)
        return memory

    def learn(self, clock: StageClock) -> None:
        """Take in a finished job that ran alone (call :meth:`StageClock.finish` first)."""
        # A planned stage was weighed in benchmark seconds by its plan; the object's cost,
        # where the job knew it, is the object's, not the machine's.
        bench = {
            stage: clock.planned.get(stage, STAGE_SECONDS.get(stage, 1.0)) * clock.object_share(stage)
            for stage in clock.stage_seconds
        }
        if sum(bench.values()) <= 0 or clock.load <= 0:
            return
        seen_pace = _bounded(sum(clock.stage_seconds.values()) / sum(bench.values()) / clock.load)
        # A job's pace is part machine, part object (the mug's proxy views and photo carving
        # take twice the duck's): a pace already measured (by a job or the probe) moves part
        # of the way, as a stage's ratio does, so that one object does not set it alone.
        measured = self.timed or self.probed
        rate = _LEARN_RATE if clock.object_cost_shown() is None else _LEARN_RATE_SHOWN
        assumed_scales, assumed_pace = self.scales(), self.pace  # what this job's clock took them for
        self.pace = _toward(self.pace, seen_pace, rate) if measured else seen_pace
        self.timed = True
        # A new dict, swapped in whole: the server thread reads it for hello meanwhile.
        ratios = dict(self.ratios)
        for stage, seconds in clock.stage_seconds.items():
            way = clock.ways.get(stage, Way.BENCHMARK)
            key = ratio_key(stage, way)
            # The job's load, read as it started, is what a way's seconds are divided by.
            if key not in RATIO_KEYS or bench[stage] <= 0 or (way in BUSY_WAYS) == clock.quiet:
                continue
            seen = _bounded(seconds / bench[stage] / clock.load)
            # A ratio not learned yet moves from what the clock took it for, as a learned one
            # does: the first object (a chair's orbit, its views a third of a mug's) does not
            # set it alone. A machine with nothing measured takes the first job's whole.
            known = ratios.get(key)
            if known is None and measured:
                known = way_scale(assumed_scales, stage, way) * assumed_pace
            ratios[key] = seen if known is None else _toward(known, seen, rate)
        self.ratios = ratios

    def save(self) -> None:
        """Write it beside the jobs; a disk that refuses costs the next restart its estimate only."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": _VERSION, "pace": self.pace, "ratios": self.ratios}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not keep the stage timings in %s: %s", self.path, exc)


def _toward(known: float, seen: float, rate: float) -> float:
    """``known`` moved ``rate`` of the way (in log space) toward ``seen``, by at most
    ``_MOST_STEP``'s share: one object far from the typical one (tiles' photo carving, 3x
    its share) moves a ratio as far as one 1.5x off, and a machine's own still shows."""
    step = min(max(math.log(seen / known), -_MOST_STEP), _MOST_STEP)
    return _bounded(known * math.exp(rate * step))


def _within(value: float) -> bool:
    return math.isfinite(value) and _BOUNDS[0] <= value <= _BOUNDS[1]


def _bounded(value: float) -> float:
    return min(max(value, _BOUNDS[0]), _BOUNDS[1])
