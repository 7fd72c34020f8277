"""The project's one error base class, the protocol's error, and the codes both ends agree on.

Every error a user can meet derives from :class:`Blend123Error`: it carries a ``message``
(what went wrong) and a ``hint`` (what to do about it), so the command line, the server
and the add-on report all of them the same way. :class:`ProtocolError` adds a
machine-readable ``code`` (an :class:`ErrorCode`) and travels over the wire as an
``error`` message.
"""

from __future__ import annotations

import enum


class Blend123Error(Exception):
    """Something the user can fix: ``message`` says what went wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ErrorCode(str, enum.Enum):
    """Machine-readable error codes; the values are what travels on the wire."""

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
    # The job does not exist on this backend, or belongs to another client.
    UNKNOWN_JOB = "unknown_job"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_UNAVAILABLE = "model_unavailable"
    # The image cannot be used (no subject found, unreadable); the hint says what to change.
    BAD_IMAGE = "bad_image"
    # The job failed while running (bad image, out of memory, ...).
    JOB_FAILED = "job_failed"
    # The backend's disk is full: the job ended, earlier results are intact.
    DISK_FULL = "disk_full"
    # The job is no longer running on the backend (restart, worker failure).
    JOB_LOST = "job_lost"
    CANCELLED = "cancelled"
    # A CURVE key file is missing or malformed, or the backend refused our key.
    BAD_KEYS = "bad_keys"
    # The reply had an unexpected type.
    BAD_REPLY = "bad_reply"
    # The backend did not answer in time (raised by the client).
    TIMEOUT = "timeout"
    # A bug on the backend; its log has the traceback.
    INTERNAL = "internal"

    def __str__(self) -> str:
        return self.value


class ProtocolError(Blend123Error):
    """Anything wrong with a message or a request, as seen by either end.

    ``code`` is machine-readable (an :class:`ErrorCode`; compares equal to its string
    value), ``message`` says what went wrong and ``hint`` what the user can do about it.
    The server turns every ``ProtocolError`` into an ``error`` reply; the client raises it
    for ``error`` replies. ``request_id`` is set when the error answers a known request.
    """

    def __init__(self, code: str, message: str, hint: str = "", request_id: str = "") -> None:
        super().__init__(message, hint)
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.request_id = request_id


# Module-level names, kept so that ``from .errors import BAD_REQUEST`` reads naturally.
BAD_MESSAGE = ErrorCode.BAD_MESSAGE
BAD_REQUEST = ErrorCode.BAD_REQUEST
UNKNOWN_TYPE = ErrorCode.UNKNOWN_TYPE
VERSION_MISMATCH = ErrorCode.VERSION_MISMATCH
TOO_LARGE = ErrorCode.TOO_LARGE
QUEUE_FULL = ErrorCode.QUEUE_FULL
UNKNOWN_JOB = ErrorCode.UNKNOWN_JOB
UNKNOWN_MODEL = ErrorCode.UNKNOWN_MODEL
MODEL_UNAVAILABLE = ErrorCode.MODEL_UNAVAILABLE
BAD_IMAGE = ErrorCode.BAD_IMAGE
JOB_FAILED = ErrorCode.JOB_FAILED
DISK_FULL = ErrorCode.DISK_FULL
JOB_LOST = ErrorCode.JOB_LOST
CANCELLED = ErrorCode.CANCELLED
BAD_KEYS = ErrorCode.BAD_KEYS
BAD_REPLY = ErrorCode.BAD_REPLY
TIMEOUT = ErrorCode.TIMEOUT
INTERNAL = ErrorCode.INTERNAL
