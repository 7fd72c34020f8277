"""One image, converted by the code the server's worker runs: an orbit, then a reconstruction.

:class:`ImageConverter` is what a batch worker holds: it keeps its model resident across
images (a :class:`ResidentModel`, as the server's worker does) and turns one image path
into a result row. It never raises for one image's failure: the row says what went wrong
and what to do, in the server's own words.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from blend123.protocol.errors import Blend123Error, UNKNOWN_JOB, ProtocolError
from blend123.protocol.messages import Mesh, Message

from ..images import load_rgba
from ..progress import STILL_WORKING
from ..server.worker import _outcome_of
from ..synthesis.registry import ResidentModel, free_accelerator_memory
from ..tasks import TaskContext, run_task
from .ledger import CONVERTED, FAILED
from .options import BatchOptions

log = logging.getLogger("blend123.batch")

#: The columns of a result row (and of a Ray Data output batch).
RESULT_COLUMNS = ("index", "status", "seconds", "faces", "glb", "light_json", "error", "hint", "code", "worker")


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ImageConverter:
    """Converts images one after another with one resident model."""

    def __init__(self, options: BatchOptions) -> None:
        self.options = options
        self.models = ResidentModel()
        self.worker = worker_label()
        self.load_error: Blend123Error | None = None
        try:  # load now: the model stays resident for every image this worker gets
            self.models.get(options.settings.model)
        except Blend123Error as exc:  # e.g. weights missing on this node: every image says so
            self.load_error = exc
            log.error("%s: cannot load model %r: %s", self.worker, options.settings.model, exc)

    def convert(self, index: int, image: str, name: str) -> dict:
        """A result row (see :data:`RESULT_COLUMNS`) for the image at ``image``."""
        start = time.perf_counter()
        row = dict(index=int(index), status=FAILED, seconds=0.0, faces=0, glb=b"", light_json="", error="", hint="", code="", worker=self.worker)
        try:
            if self.load_error is not None:
                raise self.load_error
            mesh = self._convert(Path(image), name)
            row.update(status=CONVERTED, faces=int(len(mesh.faces)), glb=bytes(mesh.glb), light_json=mesh.light_json)
        except Exception as exc:  # noqa: BLE001 - one image's failure is its row, not the batch's
            outcome = _outcome_of(exc)
            if outcome.code in ("job_failed", "internal"):
                log.exception("%s: failed", name)
            row.update(error=outcome.message, hint=outcome.hint, code=str(outcome.code))
        finally:
            free_accelerator_memory()
        row["seconds"] = round(time.perf_counter() - start, 3)
        log.info("%s: %s in %.1f s%s", name, row["status"], row["seconds"], f" ({row['error']})" if row["error"] else "")
        return row

    def _convert(self, image_path: Path, name: str) -> Mesh:
        image = load_rgba(image_path)
        orbit = self.options.orbit(image)
        orbit.validate()
        events: dict[str, list[Message]] = {}
        requests: dict[str, Message] = {}
        with tempfile.TemporaryDirectory(prefix="blend123-batch-") as tmp:
            orbit_id = self._run(orbit, Path(tmp), name, events, requests)
            request = self.options.reconstruct(orbit_id)
            request.validate()
            recon_id = self._run(request, Path(tmp), name, events, requests)
        meshes = [e for e in events[recon_id] if isinstance(e, Mesh)]
        if not meshes or not meshes[-1].glb:
            raise ProtocolError("job_failed", "the reconstruction finished without a mesh", "see the worker's log")
        return meshes[-1]

    def _run(self, request: Message, tmp: Path, name: str, events: dict, requests: dict) -> str:
        """Run one job of this image through :func:`run_task`, as the server's worker does."""
        job_id = uuid.uuid4().hex
        folder = tmp / job_id
        folder.mkdir()
        events[job_id], requests[job_id] = [], request

        def source(store: dict):
            def get(source_id: str):
                if source_id not in store:
                    raise ProtocolError(UNKNOWN_JOB, f"no job {source_id[:40]!r} in this conversion")
                return store[source_id]

            return get

        ctx = TaskContext(
            job_id=job_id, folder=folder, progress=_stage_logger(name), emit=events[job_id].append, models=self.models,
            source_events=source(events), source_request=source(requests),
        )
        run_task(request, ctx)
        return job_id


def _stage_logger(name: str):
    """A task ``progress`` that logs a line per stage and per quarter of it (``--log-level info``)."""
    last = {"stage": "", "step": -1}

    def progress(stage: str, fraction: float) -> None:
        if fraction == STILL_WORKING:
            return
        step = int(min(1.0, max(0.0, fraction)) * 4)
        if (stage, step) != (last["stage"], last["step"]):
            last["stage"], last["step"] = stage, step
            log.info("%s: %s %.0f%%", name, stage, fraction * 100)

    return progress
