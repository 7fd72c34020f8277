"""The jobs folder: every job's inputs, results and state, so that nothing is lost.

Layout of one job::

    <jobs_dir>/<job_id>/
        job.json            kind, state, stage, last_seq, error, timestamps
        request.bin         the request exactly as received (encoded frames)
        events/000007.bin   each result event (view, mesh, done, error) as encoded frames
        views/view_000.png  + transforms.json   human-readable results of view jobs
        mesh.glb, light.json                    ... of reconstruction jobs

A client that disconnects and comes back replays ``events/`` with ``fetch_result``;
the human-readable files are there for people and scripts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def _pack_frames(frames: list[Any]) -> bytes:
    return msgpack.packb([bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in frames], use_bin_type=True)


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # never let a client-supplied id name a path
            raise ValueError(f"not a job id: {job_id[:40]!r}")
        return self.root / job_id

    def create(self, job_id: str, kind: str, request_frames: list[Any]) -> Path:
        folder = self.folder(job_id)
        (folder / "events").mkdir(parents=True)
        _atomic_write(folder / "request.bin", _pack_frames(request_frames))
        self.write_state(job_id, {"id": job_id, "kind": kind, "state": "queued", "created": time.time(), "last_seq": 0})
        return folder

    def write_state(self, job_id: str, state: dict) -> None:
        _atomic_write(self.folder(job_id) / "job.json", json.dumps(state, indent=1).encode())

    def read_state(self, job_id: str) -> dict | None:
        try:
            return json.loads((self.folder(job_id) / "job.json").read_text())
        except (OSError, ValueError):
            return None

    def read_request(self, job_id: str) -> list[bytes]:
        return msgpack.unpackb((self.folder(job_id) / "request.bin").read_bytes(), raw=False)

    def append_event(self, job_id: str, seq: int, frames: list[Any]) -> None:
        _atomic_write(self.folder(job_id) / "events" / f"{seq:06d}.bin", _pack_frames(frames))

    def events(self, job_id: str, after_seq: int = 0) -> Iterator[tuple[int, list[bytes]]]:
        """Stored events with a sequence number above ``after_seq``, in order."""
        folder = self.folder(job_id) / "events"
        for path in sorted(folder.glob("*.bin")):
            seq = int(path.stem)
            if seq > after_seq:
                yield seq, msgpack.unpackb(path.read_bytes(), raw=False)

    def prune(self, keep_days: float) -> int:
        """Delete finished jobs older than ``keep_days``; returns how many went."""
        cutoff = time.time() - keep_days * 86400
        removed = 0
        for state_file in self.root.glob("*/job.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            if state.get("state") not in ("queued", "running") and state.get("created", cutoff) < cutoff:
                shutil.rmtree(state_file.parent, ignore_errors=True)
                removed += 1
        return removed

    def mark_interrupted(self) -> int:
        """Jobs left queued or running by a previous server process: mark them interrupted."""
        count = 0
        for state_file in self.root.glob("*/job.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            if state.get("state") in ("queued", "running"):
                state["state"] = "interrupted"
                state["error"] = "the backend stopped before this job finished; submit it again"
                _atomic_write(state_file, json.dumps(state, indent=1).encode())
                count += 1
        return count


def _atomic_write(path: Path, data: bytes) -> None:
    # Write then rename, so a crash never leaves a half-written file a client could fetch.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
