"""Add-on preferences: where the backend is, how to reach it, and a local one to start."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, StringProperty

from .protocol.client import DEFAULT_ADDRESS

ADDON_ID = __package__  # bl_ext.<repository>.blend123


class Blend123Preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    address: StringProperty(
        name="Backend address",
        description="ZeroMQ address of the blend123 backend, e.g. tcp://127.0.0.1:5123",
        default=DEFAULT_ADDRESS,
    )
    client_secret_key: StringProperty(
        name="Client secret key",
        description="This client's CURVE secret key file (made with `blend123 keys client`), for a remote backend",
        subtype="FILE_PATH",
    )
    server_public_key: StringProperty(
        name="Server public key",
        description="The remote backend's CURVE public key file (server.key)",
        subtype="FILE_PATH",
    )
    start_local: BoolProperty(
        name="Start a local backend",
        description="Start `blend123 serve` on the address above when connecting; it stops when Blender quits",
        default=False,
    )
    python_executable: StringProperty(
        name="Backend Python",
        description="Python with the blend123 backend installed; empty: the `blend123` command on PATH",
        subtype="FILE_PATH",
    )
    default_model: StringProperty(
        name="Default model",
        description="View-synthesis model used when the scene does not name one",
        default="default",
    )
    standard_view: BoolProperty(
        name="Switch to Standard view",
        description="Set a scene's view transform to Standard when results arrive, so generated pictures show their true colours (you are told once either way)",
        default=False,
    )
    jobs_folder: StringProperty(
        name="Jobs folder",
        description="Where meshes (GLB) and backend logs are written; empty: the extension's user folder",
        subtype="DIR_PATH",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "address")
        box = layout.box()
        box.label(text="Remote backend (CURVE authentication)")
        box.prop(self, "client_secret_key")
        box.prop(self, "server_public_key")
        box = layout.box()
        box.prop(self, "start_local")
        row = box.row()
        row.active = self.start_local
        row.prop(self, "python_executable")
        layout.prop(self, "default_model")
        layout.prop(self, "standard_view")
        layout.prop(self, "jobs_folder")


def get(context: bpy.types.Context | None = None) -> Blend123Preferences:
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def jobs_folder(context: bpy.types.Context | None = None):
    """The jobs folder as a Path, created on demand."""
    from pathlib import Path

    prefs = get(context)
    if prefs.jobs_folder:
        path = Path(bpy.path.abspath(prefs.jobs_folder))
    else:
        path = Path(bpy.utils.extension_path_user(ADDON_ID, path="jobs", create=True))
    path.mkdir(parents=True, exist_ok=True)
    return path


CLASSES = (Blend123Preferences,)
