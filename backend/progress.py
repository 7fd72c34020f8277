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
