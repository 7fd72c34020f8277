"""blend123: novel views, orbits and textured meshes from one reference image.

The Blender-facing modules are imported in :func:`register` only, so the bpy-free
``core`` package (and the bundled ``protocol`` copy) import without Blender for tests.
"""

from __future__ import annotations


def register() -> None:
    from . import registration

    registration.register()


def unregister() -> None:
    from . import registration

    registration.unregister()
