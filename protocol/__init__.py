"""blend123 wire protocol: message types, codec and camera conventions.

Pure Python + numpy + msgpack, so it imports inside Blender's own Python. The ZeroMQ
client (:mod:`.client`) is the only module that needs pyzmq and is imported on demand.
This package is the single source of truth for both ends: the backend installs it as
``blend123.protocol`` and the packaging step copies it into the Blender extension.
"""

from .codec import DEFAULT_LIMITS, Envelope, Limits, decode, encode
from .errors import ProtocolError
from .messages import MESSAGE_TYPES
from .version import PROTOCOL_VERSION, __version__

__all__ = [
    "DEFAULT_LIMITS",
    "Envelope",
    "Limits",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "__version__",
    "decode",
    "encode",
]
