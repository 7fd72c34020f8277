"""The installable extension: per-platform zips that Blender validates, and a real install.

Building needs the bundled wheels in the cache (`python packaging/wheels.py`, run by
`make test` before the suite); the tests themselves never reach the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "packaging"))
import build_extension  # noqa: E402
from wheels import DEFAULT_CACHE, PLATFORMS, wheels_for  # noqa: E402

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    try:
        wheels_for(DEFAULT_CACHE)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (make test does this before running the suite)")
    out = tmp_path_factory.mktemp("dist")
    built = build_extension.build(out, [p.blender for p in PLATFORMS])  # validates each zip too
    return {p.blender: next(z for z in built if p.blender.replace("-", "_") in z.name) for p in PLATFORMS}


def test_one_validated_zip_per_platform_with_its_own_wheels(zips):
    assert set(zips) == {"linux-x64", "windows-x64", "macos-arm64", "macos-x64"}
    pyproject_version = build_extension.version()
    for platform, archive in zips.items():
        with zipfile.ZipFile(archive) as zf:
            manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
            names = zf.namelist()
        # Blender's split build writes each zip's own values in [build.generated].
        manifest.update(manifest.get("build", {}).get("generated", {}))
        assert manifest["version"] == pyproject_version and manifest["platforms"] == [platform]
        wheels = [w.removeprefix("./wheels/") for w in manifest["wheels"]]
        # pyzmq and msgpack, for Python 3.11 (Blender 4.2-5.0) and 3.13 (5.1+: abi3 or cp313).
        for package in ("pyzmq", "msgpack"):
            mine = [w for w in wheels if w.startswith(package)]
            assert any("cp311-cp311" in w for w in mine), (platform, mine)
            assert any("cp313" in w or "abi3" in w for w in mine), (platform, mine)
        assert all(f"wheels/{w}" in names for w in wheels)
        assert "protocol/codec.py" in names and "protocol/client.py" in names
        assert not any("__pycache__" in n for n in names)


INSTALL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    args = json.loads(sys.argv[-1])
    try:
        import zmq  # must not be importable before the extension brings it
        raise SystemExit("zmq was importable before installing the extension")
    except ImportError:
        pass
    import bpy
    repos = bpy.context.preferences.extensions.repos
    repos.new(name="fresh", module="fresh", custom_directory=args["repo_dir"], source="USER")
    bpy.ops.extensions.package_install_files(filepath=args["zip"], repo="fresh", enable_on_install=True)
    import zmq, msgpack
    addon = sys.modules["bl_ext.fresh.blend123"]
    from bl_ext.fresh.blend123.protocol.client import Client
    with Client(args["address"], timeout_s=20) as client:
        reply = client.hello("install test")
    print("RESULT " + json.dumps({
        "zmq": zmq.__file__, "msgpack": msgpack.__file__, "addon": addon.__file__,
        "server_version": reply.server_version, "models": [m.name for m in reply.models],
    }))
    """
)


def test_linux_zip_installs_into_real_blender_and_says_hello(zips, serve_process, tmp_path):
    import importlib.util

    # A folder holding only bpy and numpy, so nothing else leaks in from the test environment.
    isolated = tmp_path / "isolated"
    isolated.mkdir()
    for name in ("bpy", "numpy"):
        location = Path(importlib.util.find_spec(name).submodule_search_locations[0])
        (isolated / name).symlink_to(location, target_is_directory=True)
    numpy_libs = location.parent / "numpy.libs"
    if numpy_libs.exists():
        (isolated / "numpy.libs").symlink_to(numpy_libs, target_is_directory=True)
    backend = serve_process()
    args = {"zip": str(zips["linux-x64"]), "repo_dir": str(tmp_path / "repo"), "address": backend.address}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "blender-user")
    # -S: no site-packages at all; only bpy and numpy are put on the path.
    code = f"import sys; sys.path.insert(0, {str(isolated)!r}); exec({INSTALL_SCRIPT!r})"
    result = subprocess.run([sys.executable, "-S", "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=300, env=env)
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(lines[-1][len("RESULT "):])
    user = str(tmp_path / "blender-user")
    assert found["zmq"].startswith(user) and found["msgpack"].startswith(user), found  # the extension's own wheels
    assert found["addon"].startswith(str(tmp_path / "repo"))
    assert found["server_version"] == build_extension.version() and "default" in found["models"]
