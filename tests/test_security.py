"""Loopback by default; anything else only with CURVE keys, and only for allowed clients."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest

from blend123.backend.server import Server, ServerConfig
from blend123.backend.server.security import ConfigurationError, generate_keys, is_local_endpoint
from blend123.protocol.client import Client, CurveClientKeys
from blend123.protocol.errors import BAD_KEYS, ProtocolError

from .conftest import free_port


@pytest.mark.parametrize(
    "endpoint, local",
    [
        ("tcp://127.0.0.1:5123", True),
        ("tcp://127.8.0.1:1", True),
        ("tcp://localhost:5123", True),
        ("tcp://[::1]:5123", True),
        ("ipc:///tmp/blend123.sock", True),
        ("tcp://0.0.0.0:5123", False),
        ("tcp://*:5123", False),
        ("tcp://192.168.1.20:5123", False),
        ("tcp://eth0:5123", False),
    ],
)
def test_which_endpoints_count_as_local(endpoint, local):
    assert is_local_endpoint(endpoint) is local


def test_serve_refuses_all_interfaces_without_keys(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "blend123.backend.cli", "serve", "--bind", f"tcp://0.0.0.0:{free_port()}", "--jobs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen" in result.stderr and "blend123 keys" in result.stderr


@pytest.fixture
def keys(tmp_path):
    server_dir, allowed_dir, other_dir = tmp_path / "server", tmp_path / "allowed", tmp_path / "other"
    server_public, server_secret = generate_keys(server_dir, "server")
    client_public, client_secret = generate_keys(other_dir, "alice")
    allowed_dir.mkdir()
    shutil.copy(client_public, allowed_dir)
    _, stranger_secret = generate_keys(other_dir, "mallory")
    return {
        "server_secret": server_secret,
        "server_public": server_public,
        "allowed": allowed_dir,
        "alice": CurveClientKeys.from_files(client_secret, server_public),
        "mallory": CurveClientKeys.from_files(stranger_secret, server_public),
    }


def test_curve_server_answers_allowed_clients_only(serve_process, keys):
    # A real `serve` process with CURVE on (in its own process, as users run it).
    backend = serve_process("--curve-secret", str(keys["server_secret"]), "--curve-clients", str(keys["allowed"]))
    with Client(backend.address, keys=keys["alice"], timeout_s=10) as alice:
        assert alice.hello().server_version
    for intruder in (Client(backend.address, keys=keys["mallory"], timeout_s=5), Client(backend.address, timeout_s=5)):
        with intruder:
            for attempt in range(3):
                # Once the server has refused the handshake the socket has no connection to
                # queue on; a request must still end, never block for good, and say why:
                # the key was refused, which is not the same as a backend that is not there.
                time.sleep(0.3)
                started = time.monotonic()
                assert _hello_outcome(intruder) == BAD_KEYS, f"attempt {attempt}"
                assert time.monotonic() - started < 4.0
    backend.stop()
    assert "refused a curve handshake" in backend.output().lower()


def _hello_outcome(client: Client, limit_s: float = 15.0) -> str:
    """The error code ``client.hello()`` ends with, run on a thread so that a hang fails fast."""
    outcome: list[str] = []

    def call() -> None:
        try:
            client.hello()
            outcome.append("answered")
        except ProtocolError as err:
            outcome.append(err.code)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit_s)
    return outcome[0] if outcome else "blocked"


def test_half_configured_curve_is_refused(tmp_path, keys):
    with pytest.raises(ConfigurationError, match="both"):
        Server(ServerConfig(bind="tcp://0.0.0.0:1", jobs_dir=tmp_path, curve_secret_key=keys["server_secret"])).bind()
    with pytest.raises(ConfigurationError, match="secret"):
        Server(ServerConfig(bind="tcp://0.0.0.0:1", jobs_dir=tmp_path, curve_secret_key=keys["server_public"], curve_clients_dir=keys["allowed"])).bind()
