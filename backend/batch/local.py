"""The batch in this process: one converter, one image after another."""

from __future__ import annotations

from typing import Callable

from .converter import ImageConverter
from .inputs import BatchItem
from .options import BatchOptions


def run_local(todo: list[tuple[int, BatchItem]], options: BatchOptions, on_row: Callable[[dict], None]) -> str:
    """Convert ``todo`` (index, item) here; each result row goes to ``on_row`` as it is made.
    Returns "" (an in-process run has no workers that could be lost)."""
    converter = ImageConverter(options)
    try:
        for index, item in todo:
            on_row(converter.convert(index, str(item.image), item.name))
    finally:
        converter.models.release()
    return ""
