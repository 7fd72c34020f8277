"""A real `blend123 serve` process against 10,000 malformed or hostile messages."""

from __future__ import annotations

import random
import time

import msgpack
import numpy as np
import psutil
import zmq

from blend123.protocol import codec
from blend123.protocol.codec import EXT_ARRAY
from blend123.protocol.messages import Hello, NovelView

TOTAL = 10_000
BATCH = 250


def _hostile_messages(rng: random.Random):
    valid = [bytes(memoryview(f).cast("B")) for f in codec.encode(NovelView(np.zeros((16, 16, 4), np.uint8), np.zeros((1, 3))))]
    header = msgpack.unpackb(valid[0], raw=False, ext_hook=lambda c, d: msgpack.ExtType(c, d))

    def with_body(**body):
        h = dict(header, b={**header["b"], **body})
        return [msgpack.packb(h, use_bin_type=True), *valid[1:]]

    makers = [
        lambda: [rng.randbytes(rng.randrange(1, 200))],
        lambda: [rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(2, 6))],
        lambda: [b""],
        lambda: [valid[0][: rng.randrange(1, len(valid[0]))], *valid[1:]],  # truncated header
        lambda: valid[:1],  # frames missing
        lambda: [*valid, rng.randbytes(10)],  # a frame too many
        lambda: [b"\xdd\xff\xff\xff\xff"],  # array32 of 4 billion items
        lambda: [b"\xdf\xff\xff\xff\xff"],  # map32 likewise
        lambda: [b"\xc6\xff\xff\xff\xf0" + b"x" * 16],  # bin32 claiming 4 GB
        lambda: [b"\x91" * 5000 + b"\xc0"],  # deep nesting
        lambda: [msgpack.packb({"v": 1, "t": rng.choice(["bogus", "view", "mesh", "done", ""]), "id": "", "b": {}})],
        lambda: with_body(image=msgpack.ExtType(EXT_ARRAY, msgpack.packb(["|u1", [65536, 65536, 4], 1]))),  # 16 GB claim
        lambda: with_body(image=msgpack.ExtType(EXT_ARRAY, msgpack.packb(["|u1", [16, 16, 4], 99]))),
        lambda: with_body(image="not an array"),
        lambda: with_body(settings={"steps": "many"}),
        lambda: with_body(settings={"model": "x" * 100_000}),
        lambda: with_body(poses=msgpack.ExtType(EXT_ARRAY, msgpack.packb(["<f8", [1, 3], 2])), unknown_field=1),
        lambda: [msgpack.packb({"v": 1, "t": "hello", "id": 12, "b": {}})],  # request id of the wrong type
        lambda: [b"x"] * 100,  # too many frames
    ]
    for i in range(TOTAL):
        yield makers[i % len(makers)]()


def test_ten_thousand_hostile_messages_leave_the_server_healthy(serve_process):
    backend = serve_process("--max-message-mb", "4")
    proc = psutil.Process(backend.proc.pid)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(backend.address)
    rng = random.Random(7)
    errors = other = 0
    sent = 0
    rss_after_warmup = 0
    try:
        messages = _hostile_messages(rng)
        while sent < TOTAL:
            batch = 0
            for frames in messages:
                sock.send_multipart(frames)
                sent += 1
                batch += 1
                if batch == BATCH:
                    break
            deadline = time.monotonic() + 10
            got = 0
            while got < batch and time.monotonic() < deadline:
                if sock.poll(200):
                    reply = codec.decode(sock.recv_multipart()).message
                    got += 1
                    if type(reply).__name__ == "Error":
                        errors += 1
                    else:
                        other += 1
            if sent == 1000:
                rss_after_warmup = proc.memory_info().rss
        assert errors == TOTAL and other == 0  # every single one answered with an error

        # A message over the size limit: ZeroMQ drops the connection rather than reading it.
        sock.send_multipart([b"\x80", b"x" * (5 << 20)])
        assert proc.is_running()

        hello = ctx.socket(zmq.DEALER)
        hello.linger = 0
        hello.connect(backend.address)
        hello.send_multipart(codec.encode(Hello("after the storm"), "h1"))
        assert hello.poll(10_000), "no hello reply after the hostile messages"
        envelope = codec.decode(hello.recv_multipart())
        assert envelope.request_id == "h1" and envelope.message.TYPE == "hello_reply"
        hello.close()
        growth = proc.memory_info().rss - rss_after_warmup
        assert growth < 40 << 20, f"server memory grew by {growth / 2**20:.1f} MiB"
    finally:
        sock.close()
        ctx.term()
