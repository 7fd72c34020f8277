"""Fixtures for the Blender tests: the extension enabled from an assembled repository
directory (module ``bl_ext.<repo>.blend123``) in real Blender (the ``bpy`` module), and a
real ``blend123 serve`` process running the built-in default model.

``bpy`` is imported lazily so the bpy-free tests in this folder run without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ..conftest import REPO, ServeProcess, blob_image

sys.path.insert(0, str(REPO / "packaging"))
from assemble_extension import assemble  # noqa: E402

REPO_MODULE = "blend123_tests"
ADDON_MODULE = f"bl_ext.{REPO_MODULE}.blend123"
#: Small settings so the whole Blender suite stays quick on 2 CPU cores.
FAST = dict(resolution=128, texture_size=256, max_faces=3000)  # steps: the model's own (the proxy has none)


def ext(sub: str):
    """A submodule of the enabled extension, e.g. ``ext("session")``."""
    return importlib.import_module(f"{ADDON_MODULE}.{sub}")


@pytest.fixture(scope="session")
def extension_dir(tmp_path_factory) -> Path:
    """An extension repository directory holding the assembled extension."""
    return assemble(tmp_path_factory.mktemp("extension_repo")).parent


@pytest.fixture(scope="session")
def core(extension_dir):
    """The assembled package imported under another name, without bpy (bpy-free modules)."""
    name = "blend123_addon_under_test"
    if name not in sys.modules:
        init = extension_dir / "blend123" / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)

    class Core:
        def __getattr__(self, sub):
            return importlib.import_module(f"{name}.{sub.replace('__', '.')}")

    return Core()


# Keep Blender's user folders (preferences, extension user data) out of the home folder:
# set before any test module imports bpy, which reads it once.
if "bpy" not in sys.modules:
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="blend123-blender-user-"))


def _import_bpy():
    return pytest.importorskip("bpy")


@pytest.fixture(scope="session")
def addon(extension_dir):
    """The enabled extension module (registered once per test session)."""
    bpy = _import_bpy()
    import addon_utils

    repos = bpy.context.preferences.extensions.repos
    repo = next((r for r in repos if r.module == REPO_MODULE), None)
    if repo is None:
        repo = repos.new(name="blend123 tests", module=REPO_MODULE, custom_directory=str(extension_dir), source="USER")

    def fail(exc):
        raise exc

    module = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=fail)
    assert module is not None, f"{ADDON_MODULE} did not enable"
    yield module
    addon_utils.disable(ADDON_MODULE, default_set=True)
    assert not hasattr(bpy.types.Scene, "blend123"), "unregister left the scene settings behind"
    repos.remove(repo)  # (Blender then reports the add-on of the removed repository as not enabled)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A real `blend123 serve` process (default model), shared by a test module."""
    proc = ServeProcess([], tmp_path_factory.mktemp("served"))
    yield proc
    proc.stop()


def add_reference_image(bpy, name: str = "reference", size: int = 128):
    rgba = blob_image(size)
    image = bpy.data.images.new(name, size, size, alpha=True)
    image.pixels.foreach_set((rgba[::-1].astype(np.float32) / 255.0).ravel())
    image.pack()
    return image


@pytest.fixture
def scene(addon, tmp_path):
    """An empty scene set up for the extension: reference image, small settings, square render."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 256
    settings = scene.blend123
    settings.reference_image = add_reference_image(bpy)
    for key, value in FAST.items():
        setattr(settings, key, value)
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.jobs_folder = str(tmp_path / "jobs")
    yield scene


@pytest.fixture
def connected(addon, backend, scene):
    """The extension's session connected to the backend process."""
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.address = backend.address
    session = ext("session").session()
    assert session.connect(bpy.context), session.status
    yield session
    session.tracker.jobs.clear()
    session.disconnect()
