"""``OUT_DIR/batch.jsonl`` and the outputs it accounts for.

A GLB is the mark of a finished image: it is written last, atomically (temporary file,
then rename), after its light JSON, so a GLB that is there and parses is a done image,
and an interrupted run never leaves one that looks done. The ledger gets one line per
image as its result arrives (appended and flushed: a crash loses nothing recorded), and
is rewritten at the end of a run with one line per image, the newest.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .inputs import BatchItem
from .options import BatchError

LEDGER_NAME = "batch.jsonl"
CONVERTED, SKIPPED, FAILED = "converted", "skipped", "failed"

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_TRIANGLES = 4


@dataclass
class Record:
    """One image's line in ``batch.jsonl``."""

    image: str
    output: str
    status: str  # converted | skipped | failed
    seconds: float = 0.0
    faces: int = 0
    error: str = ""
    hint: str = ""
    code: str = ""  # the protocol's error code (bad_image, model_unavailable, ...)
    worker: str = ""  # host:pid of the process that converted it
    finished: str = ""  # UTC, ISO 8601

    def line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def glb_faces(path: Path | str) -> int | None:
    """Triangles in the GLB at ``path``, or None when it is missing, truncated or not a GLB."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20:
                return None
            magic, version, length, chunk_length, chunk_type = struct.unpack("<4sIIII", header)
            if magic != _GLB_MAGIC or version != 2 or chunk_type != _CHUNK_JSON or length != os.fstat(f.fileno()).st_size:
                return None
            doc = json.loads(f.read(chunk_length).decode("utf-8"))
    except (OSError, ValueError, struct.error):
        return None
    accessors = doc.get("accessors", [])
    faces = 0
    try:
        for mesh in doc.get("meshes", []):
            for primitive in mesh.get("primitives", []):
                if primitive.get("mode", _TRIANGLES) != _TRIANGLES:
                    continue
                index = primitive.get("indices")
                accessor = accessors[index] if index is not None else accessors[primitive["attributes"]["POSITION"]]
                faces += int(accessor["count"]) // 3
    except (LookupError, TypeError, ValueError):
        return None
    return faces if faces > 0 else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent, its old content, or all of ``data``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_result(item: BatchItem, out_dir: Path, glb: bytes, light_json: str) -> None:
    """An image's outputs: the light first, the GLB (the mark of a done image) last."""
    light = item.light(out_dir)
    if light_json:
        write_atomically(light, light_json.encode("utf-8"))
    else:
        with contextlib.suppress(FileNotFoundError):
            light.unlink()  # a light from an earlier run is not this mesh's
    write_atomically(item.glb(out_dir), glb)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Ledger:
    """The ``batch.jsonl`` of an output folder: earlier runs' records, and this run's."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LEDGER_NAME
        self.records: dict[str, Record] = {}  # by image path; the newest wins
        for record in read_records(self.path):
            self.records.pop(record.image, None)
            self.records[record.image] = record
        self.this_run: dict[str, Record] = {}
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise BatchError(f"cannot write {self.path}: {exc.strerror or exc}", "choose an output folder you can write to") from None

    def previous(self, image: Path) -> Record | None:
        return self.records.get(str(image))

    def add(self, record: Record) -> None:
        """Record one image's outcome now (appended and flushed to disk)."""
        record.finished = record.finished or now_utc()
        self._file.write(record.line() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.pop(record.image, None)
        self.records[record.image] = record
        self.this_run[record.image] = record

    def close(self, order: list[str] | None = None) -> None:
        """Rewrite the ledger with one line per image (the newest record of each): images
        of earlier runs only first, then ``order``'s (this run's inputs, in their order)."""
        self._file.close()
        order = [image for image in (order or []) if image in self.records]
        ranked = set(order)
        records = [r for image, r in self.records.items() if image not in ranked] + [self.records[image] for image in order]
        text = "".join(r.line() + "\n" for r in records)
        write_atomically(self.path, text.encode("utf-8"))


def read_records(path: Path) -> list[Record]:
    """The records of a ``batch.jsonl``; a torn last line (a crash mid-write) is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read {path}: {exc}", "move the damaged ledger aside; the GLBs tell what is done") from None
    fields = set(Record.__dataclass_fields__)
    out = []
    for line in lines:
        try:
            data = json.loads(line)
            out.append(Record(**{k: v for k, v in data.items() if k in fields}))
        except (ValueError, TypeError):
            continue
    return out
