"""The wire codec: exact round trips, zero-copy frames, and strict rejection of bad input."""

import random

import msgpack
import numpy as np
import pytest

from blend123.protocol import codec
from blend123.protocol.codec import EXT_ARRAY, Limits, decode, encode
from blend123.protocol.errors import BAD_MESSAGE, BAD_REQUEST, TOO_LARGE, UNKNOWN_TYPE, VERSION_MISMATCH, ProtocolError
from blend123.protocol.messages import (
    MESSAGE_TYPES,
    GenerationSettings,
    HelloReply,
    Mesh,
    ModelInfo,
    NovelView,
    Orbit,
    Reconstruct,
    View,
)


def rgba(h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


def wire(frames):
    """What the other end receives: plain bytes per frame."""
    return [bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in frames]


def test_every_request_and_reply_type_is_registered():
    expected = {"hello", "novel_view", "orbit", "reconstruct", "cancel", "job_status", "fetch_result", "ping",
                "accepted", "progress", "view", "mesh", "done", "error"}
    assert expected <= set(MESSAGE_TYPES)


def test_round_trip_keeps_arrays_bit_exact_and_nested_types():
    msg = NovelView(rgba(), np.array([[10.0, 90.0, 0.0], [-5.0, 180.0, 2.5]]), GenerationSettings(model="default", steps=7, seed=3))
    env = decode(wire(encode(msg, "req-1")))
    out = env.message
    assert env.request_id == "req-1" and isinstance(out, NovelView)
    np.testing.assert_array_equal(out.image, msg.image)
    np.testing.assert_array_equal(out.poses, msg.poses)
    assert out.settings == msg.settings


def test_arrays_travel_as_their_own_frames_without_copies():
    image = rgba(256, 256)
    frames = encode(View("j", 0, 21, 0.0, 90.0, 2.0, np.eye(4, dtype=np.float32), 0.59, image))
    assert len(frames) == 3  # header, c2w, image
    assert len(frames[0]) < 300  # pixels never pass through msgpack
    image_frame = frames[2]
    assert np.shares_memory(image_frame, image)  # the send buffer is the array itself
    decoded = decode(frames).message
    assert np.shares_memory(decoded.image, image)  # and decoding views the frame


def test_big_endian_and_non_contiguous_arrays_arrive_correctly():
    verts = np.arange(30, dtype=">f4").reshape(10, 3)
    faces = np.arange(60, dtype=np.int32).reshape(20, 3)[::2]  # non-contiguous view
    mesh = Mesh("j", verts, faces, np.zeros((10, 2), np.float32), rgba(16, 16), glb=b"glTF" * 2000)
    out = decode(wire(encode(mesh))).message
    np.testing.assert_array_equal(out.vertices, verts.astype("<f4"))
    np.testing.assert_array_equal(out.faces, faces)
    assert out.glb == mesh.glb


def test_hello_reply_with_nested_dataclasses():
    reply = HelloReply("0.1.0", 1, "cpu", [ModelInfo("default", "views+orbit", True, "quick proxy")], limits={"max_queue": 4})
    assert decode(wire(encode(reply))).message == reply


def _header(body, t="novel_view", v=codec.PROTOCOL_VERSION):
    return msgpack.packb({"v": v, "t": t, "id": "", "b": body}, use_bin_type=True)


def _array_ext(dtype, shape, index):
    return msgpack.ExtType(EXT_ARRAY, msgpack.packb([dtype, shape, index]))


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], BAD_MESSAGE),
        ([b"\xc1"], BAD_MESSAGE),  # never-used msgpack byte
        ([b"\xdd\xff\xff\xff\xff"], BAD_MESSAGE),  # array32 claiming 4 billion items
        ([msgpack.packb([1, 2, 3])], BAD_MESSAGE),
        ([_header({}, t="no_such_type")], UNKNOWN_TYPE),
        ([_header({}, v=999)], VERSION_MISMATCH),
        ([_header({"poses": 1})], BAD_REQUEST),  # wrong type and missing image
        ([_header({"image": _array_ext("|u1", [4, 4, 4], 1), "poses": _array_ext("<f8", [1, 3], 2)}), b"x" * 64], BAD_MESSAGE),
        ([_header({"image": _array_ext("|u1", [4, 4, 4], 1)}), b"x" * 63], BAD_MESSAGE),  # frame too short
        ([_header({"image": _array_ext("|O", [1], 1)}), b"x" * 8], BAD_MESSAGE),  # object dtype
        ([_header({"image": _array_ext("|u1", [1, 1, 1, 1, 1], 1)}), b"x"], TOO_LARGE),
        ([_header({"image": _array_ext("|u1", [1], 1), "poses": _array_ext("|u1", [1], 1)}), b"x"], BAD_MESSAGE),  # frame reused
        ([_header({"image": msgpack.ExtType(9, b"")})], BAD_MESSAGE),
        ([_header({"image": _array_ext("|u1", [4, 4, 4], 1)}), b"x" * 64, b"extra"], BAD_MESSAGE),  # unreferenced frame
    ],
)
def test_malformed_messages_raise_protocol_error_only(frames, code):
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == code


def test_field_values_are_validated_after_decoding():
    bad = NovelView(rgba(), np.array([[120.0, 0.0, 0.0]]))  # elevation beyond the pole
    with pytest.raises(ProtocolError, match="elevation"):
        decode(wire(encode(bad)))
    with pytest.raises(ProtocolError, match="RGBA"):
        decode(wire(encode(NovelView(np.zeros((32, 32, 3), np.uint8), np.zeros((1, 3))))))
    with pytest.raises(ProtocolError, match="steps"):
        decode(wire(encode(Orbit(rgba(), settings=GenerationSettings(steps=0)))))
    with pytest.raises(ProtocolError, match="source_job"):
        decode(wire(encode(Reconstruct())))


def test_limits_are_enforced_before_allocation():
    big = Reconstruct(images=np.zeros((2, 512, 512, 4), np.uint8), c2w=np.zeros((2, 4, 4)))
    frames = wire(encode(big))
    with pytest.raises(ProtocolError) as err:
        decode(frames, Limits(max_total_bytes=1 << 20))
    assert err.value.code == TOO_LARGE
    with pytest.raises(ProtocolError) as err:
        decode([frames[0]] + [b""] * 100, Limits(max_frames=8))
    assert err.value.code == TOO_LARGE


def test_random_garbage_never_escapes_as_another_exception():
    rng = random.Random(1234)
    valid = wire(encode(NovelView(rgba(8, 8), np.zeros((1, 3)))))
    for _ in range(3000):
        kind = rng.randrange(4)
        if kind == 0:
            frames = [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 4))]
        elif kind == 1:  # flip bytes of a valid header
            header = bytearray(valid[0])
            for _ in range(rng.randrange(1, 6)):
                header[rng.randrange(len(header))] = rng.randrange(256)
            frames = [bytes(header), *valid[1:]]
        elif kind == 2:  # truncate
            frames = [valid[0][: rng.randrange(len(valid[0]))], *valid[1:]]
        else:  # drop or duplicate frames
            frames = valid[: rng.randrange(1, len(valid) + 1)] + valid[1:] * rng.randrange(2)
        try:
            decode(frames)
        except ProtocolError:
            pass


def test_bytes_threshold_keeps_small_blobs_inline():
    small = encode(Mesh("j", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 2), np.float32), rgba(8, 8), glb=b"tiny"))
    # vertices, faces, uvs, texture: four array frames, the tiny GLB stays in the header
    assert len(small) == 5 and codec.BYTES_FRAME_THRESHOLD > 4
