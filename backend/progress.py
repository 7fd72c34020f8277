"""How long-running work reports progress and learns it has been cancelled.

Every stage of the pipeline takes a ``progress(stage, fraction)`` callable and calls it
at least once per step (diffusion step, optimisation step, view rendered). The server's
implementation raises :class:`JobCancelled` from inside that call once the job has been
cancelled, so work stops at the next step without any polling code in the stages.
"""

from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[str, float], None]


class JobCancelled(Exception):
    """Raised inside a ``progress`` call when the job was cancelled; unwinds the stage."""


def no_progress(stage: str, fraction: float) -> None:
    """A ``ProgressFn`` for callers that do not care."""


def sub_progress(progress: ProgressFn, stage: str, start: float, end: float) -> Callable[[float], None]:
    """Map a sub-step's own 0..1 fraction onto ``[start, end]`` of a named stage."""

    def report(fraction: float) -> None:
        progress(stage, start + (end - start) * min(1.0, max(0.0, fraction)))

    return report


#: Seconds each stage takes in a run of ``make demo``'s conversion on a quiet 2-core CPU
#: (``python benchmarks/bench_busy.py``, medians of two runs of three through a fresh
#: backend; the proxy's 21 views at 256 px, 50k faces, a 1024 px texture). Only their ratios matter: :class:`StageClock` rescales them by the
#: speed it observes. A stage missing here counts as one second.
STAGE_SECONDS: dict[str, float] = {
    "load model": 0.4,
    "views": 0.9,
    "carve": 0.75,
    "photo": 1.5,
    "mesh": 0.27,
    "refine": 1.6,
    # Made beside the light fit where a core is free (~0.05 s), inline on a busy machine (~1 s).
    "uv": 0.3,
    "texture": 2.5,
    "export": 0.45,
}
#: How much benchmark work (seconds) the benchmark's pace counts for in a job's pace.
_PRIOR_WEIGHT = 2.0
#: The stages of each kind of job, in order ("load model" only when a model is needed).
JOB_STAGES: dict[str, tuple[str, ...]] = {
    "novel_view": ("load model", "views"),
    "orbit": ("load model", "views"),
    "reconstruct": ("load model", "carve", "photo", "mesh", "refine", "uv", "texture", "export"),
}


class StageClock:
    """A whole job's fraction done and time left, from its stages' own fractions.

    Each stage weighs what it took in the benchmark (``STAGE_SECONDS``). The time left is
    the weight still to do times the seconds per unit of weight this job has shown so
    far, so a slower machine, a busy one, or a bigger input corrects the estimate as the
    job runs. A stage that never reports (a model already loaded, none needed) drops out of
    the plan once a later stage starts.
    """

    def __init__(self, kind: str, weights: dict[str, float] = STAGE_SECONDS) -> None:
        self.stages = list(JOB_STAGES.get(kind, ()))
        self.weights = weights
        self._current = -1

    def _weight(self, stage: str) -> float:
        return self.weights.get(stage, 1.0)

    def update(self, stage: str, fraction: float, elapsed_s: float) -> tuple[float, float]:
        """(fraction of the whole job done, seconds left; < 0 while unknown)."""
        if stage not in self.stages:  # a stage the plan did not know: it runs now
            self.stages.insert(self._current + 1, stage)
        at = self.stages.index(stage)
        if at > self._current + 1:  # the stages in between never ran (no model to load)
            del self.stages[self._current + 1 : at]
            at = self._current + 1
        self._current = max(self._current, at)
        before = sum(self._weight(s) for s in self.stages[: self._current])
        done = before + self._weight(stage) * min(1.0, max(0.0, fraction))
        total = sum(self._weight(s) for s in self.stages)
        overall = done / total if total > 0 else 0.0
        if elapsed_s <= 0:
            return overall, -1.0
        # Seconds per unit of weight: what this job has shown, starting from the
        # benchmark's own pace (1) until some of the work is done, so the first moments
        # (reading inputs, a stage's first step) do not throw the estimate off.
        pace = (elapsed_s + _PRIOR_WEIGHT) / (done + _PRIOR_WEIGHT)
        return overall, (total - done) * pace
