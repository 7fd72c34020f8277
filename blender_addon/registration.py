"""Register and unregister every class, property and handler of the extension."""

from __future__ import annotations

import bpy

from . import cli_command, operators, panel, preferences, properties, timer
from .session import drop_session

_CLASSES = (*preferences.CLASSES, *properties.CLASSES, *operators.CLASSES, *panel.CLASSES)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    cli_command.register()


def unregister() -> None:
    cli_command.unregister()
    timer.stop_timer()
    drop_session()  # closes the socket and stops a local backend
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
