"""Wire codec: a msgpack header plus raw binary frames for arrays.

A message travels as ZeroMQ multipart frames ``[header, buf1, buf2, ...]``. The header
is a msgpack map ``{"v": protocol version, "t": type name, "id": request id, "c": client
token, "b": body}``; the client token (optional) names the client across reconnects on a
loopback backend, where there are no CURVE keys to tell clients apart.
Inside the body every numpy array (and every ``bytes`` value above a small threshold)
is replaced by a msgpack extension that names a following frame:

* ext 1, array: msgpack ``[dtype, shape, frame_index]``, the frame holds the C-ordered,
  little-endian bytes;
* ext 2, bytes: msgpack ``frame_index``.

Arrays are handed to ZeroMQ as buffers (no copy on send) and decoded with
``np.frombuffer`` over the received frame (no copy on receive: decoded arrays are
read-only views). No pickle, no base64.

Decoding is strict: every malformed input (bad msgpack, wrong types, a frame too many or
too few, an array whose bytes do not match its descriptor, limits exceeded) raises
:class:`~.errors.ProtocolError` and nothing else.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np

from .errors import BAD_MESSAGE, BAD_REQUEST, TOO_LARGE, UNKNOWN_TYPE, VERSION_MISMATCH, ProtocolError
from .messages import MESSAGE_TYPES, Message
from .version import PROTOCOL_VERSION

EXT_ARRAY = 1
EXT_BYTES = 2
#: ``bytes`` values at least this long travel as their own frame.
BYTES_FRAME_THRESHOLD = 4096
#: dtypes accepted on the wire (little-endian; booleans and bytes are one byte wide).
ALLOWED_DTYPES = frozenset(["|u1", "|i1", "|b1", "<u2", "<i2", "<f2", "<u4", "<i4", "<f4", "<u8", "<i8", "<f8"])


@dataclass(frozen=True)
class Limits:
    """Upper bounds applied while decoding, before anything is allocated."""

    max_frames: int = 64
    max_header_bytes: int = 1 << 20
    max_total_bytes: int = 512 << 20
    max_array_dims: int = 4


DEFAULT_LIMITS = Limits()


@dataclass
class Envelope:
    """A decoded message and the request id it carried (echoed back in replies)."""

    message: Message
    request_id: str = ""
    client: str = ""


#: Longest accepted request id and client token.
MAX_ID_CHARS = 128


# --- encoding -------------------------------------------------------------------------------


def encode(msg: Message, request_id: str = "", client: str = "") -> list[Any]:
    """Encode ``msg`` as multipart frames; array frames are the arrays' own buffers."""
    frames: list[Any] = [b""]
    body = _to_wire(_fields(msg), frames)
    header = {"v": PROTOCOL_VERSION, "t": msg.TYPE, "id": request_id, "b": body}
    if client:
        header["c"] = client
    frames[0] = msgpack.packb(header, use_bin_type=True)
    return frames


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _to_wire(value: Any, frames: list[Any]) -> Any:
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        frames.append(arr.reshape(-1).view(np.uint8) if arr.size else b"")
        descriptor = msgpack.packb([arr.dtype.str, list(arr.shape), len(frames) - 1])
        return msgpack.ExtType(EXT_ARRAY, descriptor)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) >= BYTES_FRAME_THRESHOLD:
            frames.append(value)
            return msgpack.ExtType(EXT_BYTES, msgpack.packb(len(frames) - 1))
        return bytes(value)
    if dataclasses.is_dataclass(value):
        return {k: _to_wire(v, frames) for k, v in _fields(value).items()}
    if isinstance(value, dict):
        return {k: _to_wire(v, frames) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v, frames) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- decoding -------------------------------------------------------------------------------


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode multipart frames into a validated message.

    Raises :class:`ProtocolError` for anything malformed, with code ``bad_message``,
    ``too_large``, ``unknown_type``, ``version_mismatch`` or ``bad_request``. Once the
    header could be read, the error carries its ``request_id``, so the sender learns at
    once which of its requests was refused.
    """
    # Count first: a message of a million frames must cost nothing per frame.
    if len(frames) > limits.max_frames + 1:
        raise ProtocolError(TOO_LARGE, f"{len(frames)} frames; at most {limits.max_frames + 1} are accepted")
    buffers = [_as_buffer(f) for f in frames]
    if not buffers:
        raise ProtocolError(BAD_MESSAGE, "empty message")
    total = sum(b.nbytes for b in buffers)
    if total > limits.max_total_bytes:
        raise ProtocolError(
            TOO_LARGE,
            f"message of {total} bytes exceeds the limit of {limits.max_total_bytes}",
            "send fewer or smaller images",
        )
    if buffers[0].nbytes > limits.max_header_bytes:
        raise ProtocolError(TOO_LARGE, f"header of {buffers[0].nbytes} bytes exceeds {limits.max_header_bytes}")

    used: set[int] = set()

    def ext_hook(code: int, data: bytes) -> Any:
        if code == EXT_ARRAY:
            return _decode_array(data, buffers, used, limits)
        if code == EXT_BYTES:
            index = _unpack_small(data)
            _claim_frame(index, buffers, used)
            return buffers[index].tobytes()
        raise ProtocolError(BAD_MESSAGE, f"unknown msgpack extension type {code}")

    try:
        envelope = msgpack.unpackb(buffers[0], ext_hook=ext_hook, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises many types for corrupt data
        raise ProtocolError(BAD_MESSAGE, f"header is not valid msgpack: {type(exc).__name__}") from None

    if not isinstance(envelope, dict):
        raise ProtocolError(BAD_MESSAGE, "header must be a map")
    request_id, client = envelope.get("id", ""), envelope.get("c", "")
    if not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS:
        raise ProtocolError(BAD_MESSAGE, f"request id 'id' must be a string of at most {MAX_ID_CHARS} characters")
    if not isinstance(client, str) or len(client) > MAX_ID_CHARS:
        raise ProtocolError(BAD_MESSAGE, f"client token 'c' must be a string of at most {MAX_ID_CHARS} characters", request_id=request_id)
    try:
        return _decode_body(envelope, buffers, used, request_id, client)
    except ProtocolError as exc:
        exc.request_id = request_id
        raise


def _decode_body(envelope: dict, buffers: list[memoryview], used: set[int], request_id: str, client: str) -> Envelope:
    if not isinstance(envelope.get("b"), dict):
        raise ProtocolError(BAD_MESSAGE, "header must hold a body map 'b'")
    version, name = envelope.get("v"), envelope.get("t")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION_MISMATCH,
            f"protocol version {version!r} received, this end speaks {PROTOCOL_VERSION}",
            "install the same blend123 version on the backend and in Blender",
        )
    cls = MESSAGE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {str(name)[:64]!r}", f"known types: {', '.join(sorted(MESSAGE_TYPES))}")
    if len(used) != len(buffers) - 1:
        raise ProtocolError(BAD_MESSAGE, f"{len(buffers) - 1 - len(used)} frame(s) not referenced by the header")

    msg = _build(cls, envelope["b"], name)
    msg.validate()
    return Envelope(msg, request_id, client)


def _as_buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", frame)  # zmq.Frame exposes .buffer
    try:
        view = memoryview(buf)
    except TypeError:
        raise ProtocolError(BAD_MESSAGE, f"frame of type {type(frame).__name__} is not a buffer") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _unpack_small(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception:
        raise ProtocolError(BAD_MESSAGE, "corrupt extension payload") from None


def _claim_frame(index: Any, buffers: list[memoryview], used: set[int]) -> None:
    if type(index) is not int or not (1 <= index < len(buffers)):
        raise ProtocolError(BAD_MESSAGE, f"frame index {index!r} out of range (message has {len(buffers)} frames)")
    if index in used:
        raise ProtocolError(BAD_MESSAGE, f"frame {index} referenced twice")
    used.add(index)


def _decode_array(data: bytes, buffers: list[memoryview], used: set[int], limits: Limits) -> np.ndarray:
    descriptor = _unpack_small(data)
    if not (isinstance(descriptor, list) and len(descriptor) == 3):
        raise ProtocolError(BAD_MESSAGE, "array descriptor must be [dtype, shape, frame]")
    dtype, shape, index = descriptor
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(BAD_MESSAGE, f"array dtype {str(dtype)[:32]!r} is not accepted")
    if not isinstance(shape, list) or len(shape) > limits.max_array_dims:
        raise ProtocolError(TOO_LARGE if isinstance(shape, list) else BAD_MESSAGE, f"array shape must be a list of at most {limits.max_array_dims} sizes")
    if not all(type(s) is int and 0 <= s < 2**40 for s in shape):
        raise ProtocolError(BAD_MESSAGE, "array sizes must be non-negative integers")
    _claim_frame(index, buffers, used)
    dt = np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize if shape else dt.itemsize
    frame = buffers[index]
    if frame.nbytes != expected:
        raise ProtocolError(BAD_MESSAGE, f"array frame {index} has {frame.nbytes} bytes, its descriptor says {expected}")
    return np.frombuffer(frame, dtype=dt).reshape(shape)


# --- typed construction ----------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(cls: type, body: dict, path: str) -> Any:
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in body if k not in known]
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"{path}: unknown field(s) {', '.join(map(str, unknown))[:200]}")
    kwargs = {}
    for name, f in known.items():
        if name in body:
            kwargs[name] = _coerce(body[name], hints[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(BAD_REQUEST, f"{path}: missing field {name!r}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                return _coerce(value, option, path)
    if hint is float:
        if type(value) in (int, float):
            return float(value)
    elif hint is int:
        if type(value) is int:
            return value
    elif hint in (str, bool, bytes):
        if type(value) is hint:
            return value
    elif hint is np.ndarray:
        if isinstance(value, np.ndarray):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(hint)
            return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            key_type, item = typing.get_args(hint)
            return {_coerce(k, key_type, path): _coerce(v, item, f"{path}[{k!r}]") for k, v in value.items()}
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _build(hint, value, path)
    name = getattr(hint, "__name__", str(hint))
    raise ProtocolError(BAD_REQUEST, f"{path}: expected {name}, got {type(value).__name__}")
