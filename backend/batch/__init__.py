"""Batch conversion: many images to textured GLBs, in this process or on a Ray cluster.

``blend123 batch INPUT... -o OUT_DIR`` expands the inputs (:mod:`.inputs`), skips images
whose GLB is already there and valid, converts the rest with the very code the server's
worker runs (:mod:`.converter`, through :func:`blend123.backend.tasks.run_task`), and
records every image in ``OUT_DIR/batch.jsonl`` (:mod:`.ledger`). The work runs in this
process (:mod:`.local`) or, with ``--ray``, as a Ray Data pipeline whose stateful
converter actors keep their model resident (:mod:`.ray_runner`).
"""

from __future__ import annotations

from .options import BatchError, BatchOptions
from .runner import BatchSummary, run_batch

__all__ = ["BatchError", "BatchOptions", "BatchSummary", "run_batch"]
