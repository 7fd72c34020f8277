"""Who may talk to the server: loopback by default, CURVE keys for anything else."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from blend123.protocol.errors import Blend123Error

#: A CURVE key is 32 bytes, written Z85-encoded: 40 characters.
Z85_KEY_LENGTH = 40


class ConfigurationError(Blend123Error):
    """The server was asked to start in a way that is unsafe or impossible, or a key file
    cannot be used; ``hint`` says what to do about it."""


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
    public, secret = read_key_file(secret_key_file, secret=True, what="server secret key", make="blend123 keys server DIR")
    if not clients_dir.is_dir() or not any(clients_dir.glob("*.key")):
        raise ConfigurationError(
            f"no allowed client keys (*.key) in {clients_dir}",
            "copy each client's public key file there (`blend123 keys client DIR` makes one)",
        )
    for client_key in sorted(clients_dir.glob("*.key")):
        # A garbage file there would otherwise fail inside the authenticator thread, silently.
        read_key_file(client_key, secret=False, what="allowed client key", make="blend123 keys client DIR")
    return CurveServerKeys(public, secret, clients_dir)


def read_key_file(path: Path | str, *, secret: bool, what: str = "key", make: str = "blend123 keys") -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys from a CURVE certificate file, checked, or a hinted error.

    ``secret=True`` requires the secret key too, and that it matches the public one.
    pyzmq's own loader accepts any text and lets the socket fail later with EINVAL.
    """
    path = Path(path).expanduser()
    fix = f"create one with `{make}`" + (", and pass its *.key_secret file" if secret else ", and pass its public *.key file")
    if path.is_dir():
        raise ConfigurationError(f"{what} {path} is a folder, not a key file", fix)
    if not path.is_file():
        raise ConfigurationError(f"{what} {path} not found", fix)
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{what} {path} is not a CURVE key file ({exc})", fix) from None
    if not _valid_z85_key(public):
        raise ConfigurationError(f"{what} {path} holds a malformed public key", fix)
    if secret:
        if not secret_key:
            raise ConfigurationError(f"{what} {path} holds no secret key", "pass the *.key_secret file, not the public *.key")
        if not _valid_z85_key(secret_key) or zmq.curve_public(secret_key) != public:
            raise ConfigurationError(f"{what} {path} holds a malformed or mismatched secret key", fix)
    return public, secret_key


def check_client_key_files(client_secret_file: Path | str, server_public_file: Path | str) -> None:
    """Check the client side's two key files before a connection (``--client-key``, ``--server-key``)."""
    read_key_file(client_secret_file, secret=True, what="client secret key (--client-key)", make="blend123 keys client DIR")
    read_key_file(server_public_file, secret=False, what="server public key (--server-key)", make="blend123 keys server DIR")


def _valid_z85_key(key: bytes | None) -> bool:
    if not key or len(key) != Z85_KEY_LENGTH:
        return False
    try:
        return len(zmq.utils.z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):  # KeyError: a byte outside the Z85 alphabet
        return False


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


def generate_keys(folder: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write a CURVE key pair as ``name.key`` (public) and ``name.key_secret`` (mode 0600).

    An existing pair is replaced only with ``force``: everyone who trusts it would be
    locked out. Each file is written beside its target and renamed into place, so a
    failure never leaves half a key pair, and the secret is never readable by others.
    """
    folder = Path(folder).expanduser()
    public_path, secret_path = folder / f"{name}.key", folder / f"{name}.key_secret"
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"{folder} is a file, not a folder", "give a folder for the key pair")
    existing = [p for p in (public_path, secret_path) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ConfigurationError(
            f"{existing[0]} already exists: refusing to replace a key pair that servers or clients may trust",
            "pass --force to replace it, or choose another folder or --name",
        )
    for path in existing:
        if path.is_dir():
            raise ConfigurationError(f"{path} is a folder", "remove it or choose another --name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.curve_keypair()
        _write_key_file(secret_path, public, secret)
        _write_key_file(public_path, public, None)
    except OSError as exc:
        raise ConfigurationError(f"cannot write keys to {folder}: {exc.strerror or exc}", "choose a writable folder") from None
    return public_path, secret_path


def _write_key_file(path: Path, public: bytes, secret: bytes | None) -> None:
    """The certificate format pyzmq's ``load_certificate`` and the authenticator read."""
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by blend123  ****",
        f"#   ZeroMQ CURVE {kind} Certificate",
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret else
        "#   Exchange securely, or use a secure mechanism to verify the contents of this file after exchange.",
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
