"""CURVE key files: `blend123 keys` never replaces a pair silently, and bad key files get a
hinted error instead of a traceback or a socket failing later."""

from __future__ import annotations

import stat

import pytest
import zmq

from blend123.backend.cli import main
from blend123.backend.server.security import (
    ConfigurationError,
    check_client_key_files,
    generate_keys,
    load_server_keys,
    read_key_file,
)
from blend123.protocol.errors import Blend123Error


def test_generated_pair_loads_matches_and_hides_the_secret(tmp_path):
    public_path, secret_path = generate_keys(tmp_path / "k", "server")
    public, secret = read_key_file(secret_path, secret=True)
    assert zmq.curve_public(secret) == public
    assert read_key_file(public_path, secret=False) == (public, None)
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert not list((tmp_path / "k").glob(".*tmp"))  # no temporary file left behind


def test_generate_refuses_to_replace_an_existing_pair_without_force(tmp_path):
    public_path, secret_path = generate_keys(tmp_path, "server")
    before = secret_path.read_bytes(), public_path.read_bytes()
    with pytest.raises(ConfigurationError) as info:
        generate_keys(tmp_path, "server")
    assert isinstance(info.value, Blend123Error)
    assert "already exists" in info.value.message and "--force" in info.value.hint
    assert (secret_path.read_bytes(), public_path.read_bytes()) == before
    # A lone public key (the secret moved elsewhere) counts as a pair too.
    secret_path.unlink()
    with pytest.raises(ConfigurationError):
        generate_keys(tmp_path, "server")
    generate_keys(tmp_path, "server", force=True)
    assert read_key_file(secret_path, secret=True)[0] != before[1]


def test_keys_command_refuses_then_replaces_with_force(tmp_path, capsys):
    assert main(["keys", "server", str(tmp_path)]) == 0
    first = (tmp_path / "server.key_secret").read_bytes()
    capsys.readouterr()
    assert main(["keys", "server", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and "Traceback" not in err
    assert (tmp_path / "server.key_secret").read_bytes() == first
    assert main(["keys", "server", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "server.key_secret").read_bytes() != first


def test_keys_command_into_a_file_says_so(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["keys", "client", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"hello world\n", "not a CURVE key file"),
        (b"\x00\xff\xfe garbage \x89PNG", "not a CURVE key file"),
        (b'curve\n    public-key = "short"\n', "malformed public key"),
        (b'curve\n    public-key = "' + b"~" * 40 + b'"\n', "malformed public key"),
    ],
)
def test_garbage_key_files_get_a_hinted_error(tmp_path, content, expected):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        read_key_file(path, secret=False)
    assert expected in info.value.message and "blend123 keys" in info.value.hint


def test_secret_key_file_checks(tmp_path):
    public_path, secret_path = generate_keys(tmp_path, "c")
    with pytest.raises(ConfigurationError, match="no secret key"):
        read_key_file(public_path, secret=True)
    with pytest.raises(ConfigurationError, match="not found"):
        read_key_file(tmp_path / "missing.key_secret", secret=True)
    with pytest.raises(ConfigurationError, match="is a folder"):
        read_key_file(tmp_path, secret=True)
    # A secret that does not belong to the public key beside it.
    other_public, _ = zmq.curve_keypair()
    text = secret_path.read_text().replace(read_key_file(public_path, secret=False)[0].decode(), other_public.decode())
    mismatched = tmp_path / "mismatched.key_secret"
    mismatched.write_text(text)
    with pytest.raises(ConfigurationError, match="mismatched"):
        read_key_file(mismatched, secret=True)


def test_server_keys_refuse_garbage_secret_and_client_files(tmp_path):
    _, server_secret = generate_keys(tmp_path / "server", "server")
    clients = tmp_path / "clients"
    client_public, client_secret = generate_keys(clients, "alice")
    client_secret.unlink()  # only public keys belong there
    keys = load_server_keys(server_secret, clients)
    assert keys is not None and zmq.curve_public(keys.secret) == keys.public

    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigurationError) as info:
        load_server_keys(garbage, clients)
    assert "server secret key" in info.value.message and "blend123 keys server" in info.value.hint

    (clients / "mallory.key").write_text('public-key = "nonsense"\n')
    with pytest.raises(ConfigurationError, match="allowed client key .*mallory.key"):
        load_server_keys(server_secret, clients)


def test_client_key_files_are_checked_before_connecting(tmp_path):
    server_public, server_secret = generate_keys(tmp_path, "server")
    client_public, client_secret = generate_keys(tmp_path, "client")
    check_client_key_files(client_secret, server_public)  # the right pair passes
    with pytest.raises(ConfigurationError, match="--client-key"):
        check_client_key_files(client_public, server_public)  # public key given as the secret
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(ConfigurationError, match="--server-key"):
        check_client_key_files(client_secret, tmp_path / "junk")
