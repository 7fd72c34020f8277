"""Messages to the artist from code that runs outside an operator (timer callbacks)."""

from __future__ import annotations

import collections

import bpy

#: The latest reports, newest last (what the Info log shows; kept for scripts and tests).
HISTORY: collections.deque[tuple[str, str]] = collections.deque(maxlen=100)


def report(level: str, message: str, hint: str = "") -> None:
    """Show a message in the Info log (and the terminal), from anywhere."""
    text = f"blend123: {message}" + (f" - {hint}" if hint else "")
    print(text)
    HISTORY.append((level, text))
    try:
        bpy.ops.blend123.report(level=level, message=text)
    except (AttributeError, RuntimeError):
        pass
