"""The jobs folder: every job's inputs, results and state, so that nothing is lost.

Layout of one job::

    <jobs_dir>/.lock                  held by the one server that uses this folder
    <jobs_dir>/<job_id>/
        job.json            the job's record (:class:`JobRecord`)
        request.bin         the request exactly as received (encoded frames); dropped
                            once the job has failed or was cancelled
        events/000007.bin   each result event (view, mesh, done, error) as encoded frames
        views/view_000.png  + transforms.json   human-readable results of view jobs
        mesh.glb, light.json                    ... of reconstruction jobs

The folder is private to its user (0700, files 0600): job inputs are the artist's
images. Every file is written atomically (write a temporary file, then rename), and
anything malformed found on disk is reported and skipped, never fatal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import msgpack

from blend123.protocol.errors import Blend123Error
from blend123.protocol.job_phase import JobPhase

log = logging.getLogger("blend123.jobstore")

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_EVENT_FILE = re.compile(r"^[0-9]{6,}\.bin$")
# Temporary files older than this are leftovers of a crash, not writes in progress.
STALE_TMP_S = 3600.0


def is_job_id(text: str) -> bool:
    return isinstance(text, str) and bool(_JOB_ID.match(text))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class JobsFolderBusy(Blend123Error):
    """Another server process already uses this jobs folder."""


@dataclass
class JobRecord:
    """What ``job.json`` holds: the schema of a job's state on disk."""

    id: str
    kind: str
    state: JobPhase = JobPhase.QUEUED
    owner: str = ""  # hex digest of the submitting identity; "" for records of old versions
    stage: str = ""
    fraction: float = 0.0
    last_seq: int = 0
    error: str = ""
    created: float = 0.0
    started: float = 0.0
    request_bytes: int = 0
    stored_bytes: int = 0  # the job folder's size when the job ended

    @property
    def disk_bytes(self) -> int:
        """What the job holds on disk, as far as its record knows."""
        return max(self.request_bytes, self.stored_bytes)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, text: bytes | str) -> JobRecord:
        """Parse a record; ValueError (with what is wrong) for anything malformed."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a job record must be a JSON object, got {type(data).__name__}")
        types = {"id": str, "kind": str, "owner": str, "stage": str, "error": str,
                 "fraction": (int, float), "created": (int, float), "started": (int, float),
                 "last_seq": int, "request_bytes": int, "stored_bytes": int}
        for name, expected in types.items():
            if name in data and (not isinstance(data[name], expected) or isinstance(data[name], bool)):
                raise ValueError(f"field {name!r} has the wrong type ({type(data[name]).__name__})")
        if not is_job_id(data.get("id", "")):
            raise ValueError("field 'id' is not a job id")
        for name in ("fraction", "created", "started"):
            if name in data and not math.isfinite(data[name]):
                raise ValueError(f"field {name!r} is not finite")
        try:
            state = JobPhase(data.get("state", JobPhase.QUEUED.value))
        except ValueError:
            raise ValueError(f"unknown state {str(data.get('state'))[:32]!r}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known and k != "state"}
        fields.setdefault("kind", "")
        return cls(state=state, **fields)


def _pack_frames(frames: list[Any]) -> bytes:
    return msgpack.packb([bytes(memoryview(f).cast("B")) if not isinstance(f, bytes) else f for f in frames], use_bin_type=True)


def _unpack_frames(data: bytes) -> list[bytes]:
    frames = msgpack.unpackb(data, raw=False)
    if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
        raise ValueError("not a list of frames")
    return frames


class JobStore:
    """Owns the jobs folder: job records and their schema, inputs, result events."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a folder the user chose may belong to someone else
            os.chmod(self.root, 0o700)
        self._lock_file: Any = None

    # --- one server per folder ----------------------------------------------------------------

    def lock(self) -> None:
        """Take the folder's lock; :class:`JobsFolderBusy` when another server holds it."""
        import fcntl

        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()[:80]
            handle.close()
            raise JobsFolderBusy(
                f"another blend123 server ({holder or 'unknown process'}) already uses the jobs folder {self.root}",
                "stop that server, or give this one its own --jobs-dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # --- one job ------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # never let a client-supplied id name a path
            raise ValueError(f"not a job id: {job_id[:40]!r}")
        return self.root / job_id

    def create(self, record: JobRecord, request_frames: list[Any]) -> Path:
        """The job's folder with its request and record; nothing is left behind on failure."""
        folder = self.folder(record.id)
        try:
            (folder / "events").mkdir(parents=True, mode=0o700)
            os.chmod(folder, 0o700)
            data = _pack_frames(request_frames)
            record.request_bytes = len(data)
            _atomic_write(folder / "request.bin", data)
            self.write(record)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def write(self, record: JobRecord) -> None:
        _atomic_write(self.folder(record.id) / "job.json", record.to_json())

    def read(self, job_id: str) -> JobRecord | None:
        """The job's record; None when there is none or it cannot be read (logged)."""
        path = self.folder(job_id) / "job.json"
        try:
            return JobRecord.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("skipping the unreadable job record %s: %s", path, exc)
            return None

    def read_request(self, job_id: str) -> list[bytes]:
        return _unpack_frames((self.folder(job_id) / "request.bin").read_bytes())

    def drop_request(self, job_id: str) -> None:
        """Delete a job's inputs (failed and cancelled jobs need them no more)."""
        with contextlib.suppress(OSError, ValueError):
            (self.folder(job_id) / "request.bin").unlink()

    def append_event(self, job_id: str, seq: int, frames: list[Any]) -> None:
        _atomic_write(self.folder(job_id) / "events" / f"{seq:06d}.bin", _pack_frames(frames))

    def event_seqs(self, job_id: str, after_seq: int = 0) -> list[int]:
        """Sequence numbers of the stored events above ``after_seq``, in order."""
        try:
            names = os.listdir(self.folder(job_id) / "events")
        except (OSError, ValueError):
            return []
        return sorted(seq for seq in (int(n[:-4]) for n in names if _EVENT_FILE.match(n)) if seq > after_seq)

    def read_event(self, job_id: str, seq: int) -> list[bytes] | None:
        """One stored event's frames; None (logged) when the file is missing or corrupt."""
        path = self.folder(job_id) / "events" / f"{seq:06d}.bin"
        try:
            return _unpack_frames(path.read_bytes())
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            log.warning("skipping the unreadable event %s: %s", path, exc)
            return None

    def events(self, job_id: str, after_seq: int = 0) -> Iterator[tuple[int, list[bytes]]]:
        """Readable stored events with a sequence number above ``after_seq``, in order."""
        for seq in self.event_seqs(job_id, after_seq):
            frames = self.read_event(job_id, seq)
            if frames is not None:
                yield seq, frames

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    # --- the whole folder -------------------------------------------------------------------

    def records(self) -> Iterator[JobRecord]:
        """Every readable job record; unreadable ones are logged and skipped."""
        for entry in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if is_job_id(entry.name) and entry.is_dir():
                record = self.read(entry.name)
                if record is not None and record.id == entry.name:
                    yield record

    def prune(self, keep_days: float) -> int:
        """Delete finished jobs older than ``keep_days``, folders without a readable record
        and stale temporary files; returns how many job folders went."""
        cutoff = time.time() - keep_days * 86400
        removed = 0
        for entry in list(self.root.iterdir()):
            if entry.is_dir() and is_job_id(entry.name):
                record = self.read(entry.name)
                if record is None:
                    if _age_s(entry) > STALE_TMP_S:  # a partial folder: created, never recorded
                        shutil.rmtree(entry, ignore_errors=True)
                        removed += 1
                    continue
                if not record.state.active and record.created < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
                    continue
                for tmp in entry.rglob("*.tmp"):
                    if _age_s(tmp) > STALE_TMP_S:
                        tmp.unlink(missing_ok=True)
        return removed

    def enforce_size_cap(self, max_bytes: int, keep: set[str] = frozenset()) -> int:
        """Delete the oldest finished jobs until the folder holds at most ``max_bytes``."""
        if max_bytes <= 0:
            return 0
        finished = sorted((r for r in self.records() if not r.state.active and r.id not in keep), key=lambda r: r.created)
        total = self.size_bytes()
        removed = 0
        for record in finished:
            if total <= max_bytes:
                break
            size = _tree_bytes(self.folder(record.id))
            self.delete(record.id)
            total -= size
            removed += 1
        return removed

    def size_bytes(self, job_id: str = "") -> int:
        """Bytes in the whole folder, or in one job's folder."""
        return _tree_bytes(self.folder(job_id) if job_id else self.root)

    def owner_bytes(self, owner: str) -> int:
        """What one identity's jobs hold on disk, from their records."""
        return sum(r.disk_bytes for r in self.records() if r.owner == owner)

    def mark_interrupted(self) -> int:
        """Jobs left queued or running by a previous server process: mark them interrupted."""
        count = 0
        for record in self.records():
            if record.state.active:
                record.state = JobPhase.INTERRUPTED
                record.error = "the backend stopped before this job finished; submit it again"
                with contextlib.suppress(OSError):
                    self.write(record)
                    count += 1
        return count


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves a half-written file a client could fetch;
    the temporary file is removed when the write fails (a full disk keeps no debris)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
