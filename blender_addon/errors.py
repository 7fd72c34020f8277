"""The add-on's own error: a job that could not start or did not finish."""

from __future__ import annotations

from .protocol.errors import Blend123Error


class JobFailed(Blend123Error):
    """A job could not be submitted, or ended in an error; ``hint`` says what to do.

    ``code`` is the protocol's error code when the backend gave one (``job_lost``...).
    """

    def __init__(self, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


def as_job_failed(exc: Exception) -> JobFailed:
    """Any hinted error (settings, reference image, scene set-up...) as a JobFailed."""
    if isinstance(exc, JobFailed):
        return exc
    return JobFailed(getattr(exc, "message", str(exc)), getattr(exc, "hint", ""), str(getattr(exc, "code", "")))
