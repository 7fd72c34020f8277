"""Shared fixtures: real servers (in-process threads or `blend123 serve` processes) on loopback."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from blend123.backend.server import Server, ServerConfig
from blend123.protocol.client import Client

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# The tests never touch the user's cache folder (the default jobs folder, the machine's
# stage timings): theirs is a fresh one, for this process and the commands it starts.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="blend123-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blob_image(size: int = 128) -> np.ndarray:
    """An RGBA test subject: an opaque ellipse, red on its left half and blue on its right."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    inside = ((xx - c) / (0.35 * size)) ** 2 + ((yy - c) / (0.28 * size)) ** 2 <= 1.0
    img = np.zeros((size, size, 4), np.uint8)
    img[..., 0] = np.where(xx < c, 220, 30)
    img[..., 2] = np.where(xx < c, 30, 220)
    img[..., 1] = 40
    img[..., 3] = np.where(inside, 255, 0)
    return img


@pytest.fixture
def reference_image() -> np.ndarray:
    return blob_image()


@pytest.fixture
def server_factory(tmp_path):
    """Start in-process servers on free loopback ports; all are stopped after the test."""
    servers: list[Server] = []

    def start(**overrides) -> Server:
        config = ServerConfig(bind="tcp://127.0.0.1:0", jobs_dir=tmp_path / f"jobs{len(servers)}", **overrides)
        server = Server(config)
        server.start_in_thread()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


@pytest.fixture
def client_factory():
    clients: list[Client] = []

    def make(address: str, **kwargs) -> Client:
        kwargs.setdefault("timeout_s", 10.0)
        client = Client(address, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class ServeProcess:
    """A real `blend123 serve` process."""

    def __init__(self, args: list[str], jobs_dir: Path, port: int = 0) -> None:
        self.port = port or free_port()
        self.jobs_dir = jobs_dir
        self.address = f"tcp://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "blend123.backend.cli", "serve", "--bind", self.address, "--jobs-dir", str(jobs_dir), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._lines: list[str] = []
        started = threading.Event()
        # Read the server's output all along: a pipe nobody reads fills up and blocks the
        # server in its next log call, which would read as a hung backend.
        threading.Thread(target=self._read_output, args=(started,), daemon=True).start()
        if not started.wait(120) or "serving on" not in self.output():
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"server did not start: {self.output()}")
        time.sleep(0.05)

    def _read_output(self, started: threading.Event) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)
            if "serving on" in line:
                started.set()
        started.set()  # the process ended

    def output(self) -> str:
        """Everything the server has printed so far."""
        return "".join(self._lines)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        time.sleep(0.1)  # let the reader take the last lines


@pytest.fixture
def serve_process(tmp_path):
    procs: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        proc = ServeProcess(list(args), tmp_path / f"served{len(procs)}")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
