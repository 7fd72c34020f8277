"""Round trip of a 21-view 576x576 RGBA orbit over loopback: blend123's protocol vs base64 JSON over HTTP.

The protocol side is the real thing: ``codec.encode`` -> DEALER -> ROUTER in another
process -> ``codec.decode`` -> re-encode the same views -> back -> ``codec.decode``.
The baseline is what peer add-ons do: the pixels base64-encoded inside a JSON body,
POSTed to an HTTP server in another process that decodes and sends them back the same way.

    python benchmarks/bench_transport.py [--repeats 20] [--out benchmarks/results/transport.json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import multiprocessing as mp
import platform
import socket
import statistics
import time
from pathlib import Path

import numpy as np
import zmq

from blend123.protocol import codec
from blend123.protocol.messages import Reconstruct

VIEWS, SIDE = 21, 576


def payload() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (VIEWS, SIDE, SIDE, 4), dtype=np.uint8), np.tile(np.eye(4), (VIEWS, 1, 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- blend123 protocol ----------------------------------------------------------------------------


def _zmq_echo(address: str, ready) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)
    ready.set()
    while True:
        frames = sock.recv_multipart(copy=False)
        envelope = codec.decode(frames[1:])
        if envelope.request_id == "stop":
            break
        sock.send_multipart([frames[0], *codec.encode(envelope.message, envelope.request_id)], copy=False)
    sock.close(0)
    ctx.term()


def bench_protocol(repeats: int) -> list[float]:
    address = f"tcp://127.0.0.1:{_free_port()}"
    ready = mp.Event()
    proc = mp.Process(target=_zmq_echo, args=(address, ready), daemon=True)
    proc.start()
    ready.wait(30)
    images, c2w = payload()
    msg = Reconstruct(images=images, c2w=c2w)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        sock.send_multipart(codec.encode(msg, "rt"), copy=False)
        back = codec.decode(sock.recv_multipart(copy=False)).message
        elapsed = time.perf_counter() - start
        assert back.images.shape == images.shape and back.images[-1, -1, -1, -1] == images[-1, -1, -1, -1]
        if i >= 2:  # the first round trips pay for connection set-up
            times.append(elapsed)
    sock.send_multipart(codec.encode(Reconstruct(source_job="x"), "stop"))
    proc.join(10)
    sock.close(0)
    ctx.term()
    return times


# --- base64 JSON over HTTP (the baseline) --------------------------------------------------------


def _to_json(images: np.ndarray, c2w: np.ndarray) -> bytes:
    return json.dumps({
        "images": [base64.b64encode(img.tobytes()).decode() for img in images],
        "shape": list(images.shape[1:]),
        "c2w": c2w.tolist(),
    }).encode()


def _from_json(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    data = json.loads(body)
    shape = data["shape"]
    images = np.stack([np.frombuffer(base64.b64decode(s), np.uint8).reshape(shape) for s in data["images"]])
    return images, np.array(data["c2w"])


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = _to_json(*_from_json(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def _http_echo(port: int, ready) -> None:
    server = http.server.HTTPServer(("127.0.0.1", port), _EchoHandler)
    ready.set()
    server.serve_forever()


def bench_http(repeats: int) -> list[float]:
    port = _free_port()
    ready = mp.Event()
    proc = mp.Process(target=_http_echo, args=(port, ready), daemon=True)
    proc.start()
    ready.wait(30)
    images, c2w = payload()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        conn.request("POST", "/", body=_to_json(images, c2w), headers={"Content-Type": "application/json"})
        back, _ = _from_json(conn.getresponse().read())
        elapsed = time.perf_counter() - start
        assert back.shape == images.shape
        if i >= 1:
            times.append(elapsed)
    conn.close()
    proc.terminate()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transport.json"))
    args = parser.parse_args()
    mb = VIEWS * SIDE * SIDE * 4 / 1e6
    proto = bench_protocol(args.repeats)
    http_times = bench_http(max(3, args.repeats // 4))
    result = {
        "payload_mb": round(mb, 1),
        "protocol_median_ms": round(1000 * statistics.median(proto), 1),
        "http_base64_json_median_ms": round(1000 * statistics.median(http_times), 1),
        "machine": f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}",
    }
    result["speedup"] = round(result["http_base64_json_median_ms"] / result["protocol_median_ms"], 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"| 21x576x576 RGBA orbit round trip ({mb:.0f} MB), loopback | blend123 protocol | {result['protocol_median_ms']} ms |")
    print(f"| same payload, base64 in JSON over HTTP | baseline | {result['http_base64_json_median_ms']} ms ({result['speedup']}x slower) |")


if __name__ == "__main__":
    main()
