"""Who may talk to the server: loopback by default, CURVE keys for anything else."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class ConfigurationError(Exception):
    """The server was asked to start in a way that is unsafe or impossible."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message} ({hint})" if hint else message)
        self.message = message
        self.hint = hint


def is_local_endpoint(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: loopback TCP, ipc, inproc."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: not provably local
        return False


@dataclass
class CurveServerKeys:
    public: bytes
    secret: bytes
    clients_dir: Path


def load_server_keys(secret_key_file: Path | None, clients_dir: Path | None) -> CurveServerKeys | None:
    if secret_key_file is None and clients_dir is None:
        return None
    if secret_key_file is None or clients_dir is None:
        raise ConfigurationError(
            "CURVE authentication needs both the server's secret key and the allowed clients' folder",
            "pass --curve-secret server.key_secret and --curve-clients DIR (create them with `blend123 keys`)",
        )
    secret_key_file, clients_dir = Path(secret_key_file), Path(clients_dir)
    if not secret_key_file.is_file():
        raise ConfigurationError(f"server secret key {secret_key_file} not found", "create it with `blend123 keys server DIR`")
    public, secret = zmq.auth.load_certificate(secret_key_file)
    if not secret:
        raise ConfigurationError(f"{secret_key_file} holds no secret key", "pass the *.key_secret file, not the public *.key")
    if not clients_dir.is_dir() or not any(clients_dir.glob("*.key")):
        raise ConfigurationError(
            f"no allowed client keys (*.key) in {clients_dir}",
            "copy each client's public key file there (`blend123 keys client DIR` makes one)",
        )
    return CurveServerKeys(public, secret, clients_dir)


def secure_socket(socket: zmq.Socket, context: zmq.Context, bind: str, keys: CurveServerKeys | None) -> ThreadAuthenticator | None:
    """Apply CURVE to ``socket`` before it binds; refuse a non-local bind without keys."""
    if keys is None:
        if not is_local_endpoint(bind):
            raise ConfigurationError(
                f"refusing to listen on {bind} without authentication",
                "bind to tcp://127.0.0.1:PORT, or give --curve-secret and --curve-clients (see `blend123 keys`)",
            )
        return None
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.clients_dir))
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    return auth


def generate_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write a CURVE key pair as ``name.key`` (public) and ``name.key_secret``."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)
