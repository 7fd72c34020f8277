"""The one error type of the protocol, and the error codes both ends agree on."""

from __future__ import annotations


class ProtocolError(Exception):
    """Anything wrong with a message or a request, as seen by either end.

    ``code`` is machine-readable (one of the constants below), ``message`` says what went
    wrong and ``hint`` what the user can do about it. The server turns every
    ``ProtocolError`` into an ``error`` reply; the client raises it for ``error`` replies.
    """

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# Malformed wire data: undecodable msgpack, wrong frame count, bad array descriptor...
BAD_MESSAGE = "bad_message"
# Well-formed message whose fields have wrong types or values.
BAD_REQUEST = "bad_request"
# Unknown message type.
UNKNOWN_TYPE = "unknown_type"
# The two ends speak different protocol versions.
VERSION_MISMATCH = "version_mismatch"
# A size limit was exceeded (frames, bytes, array dimensions, queue length).
TOO_LARGE = "too_large"
QUEUE_FULL = "queue_full"
UNKNOWN_JOB = "unknown_job"
UNKNOWN_MODEL = "unknown_model"
MODEL_UNAVAILABLE = "model_unavailable"
# The image cannot be used (no subject found, unreadable); the hint says what to change.
BAD_IMAGE = "bad_image"
# The job failed while running (bad image, out of memory, ...).
JOB_FAILED = "job_failed"
CANCELLED = "cancelled"
# The backend did not answer in time (raised by the client).
TIMEOUT = "timeout"
