"""A whole batch: inputs, skip what is done, convert the rest (here or on Ray), account for all."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .bar import BatchBar
from .inputs import BatchItem, expand_inputs, plan
from .ledger import CONVERTED, FAILED, SKIPPED, Ledger, Record, glb_faces, write_result
from .options import BatchError, BatchOptions

log = logging.getLogger("blend123.batch")

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass
class BatchSummary:
    ledger: Path
    records: list[Record] = field(default_factory=list)  # this run's, one per input, in input order
    seconds: float = 0.0
    workers: str = ""  # where it ran
    duplicates: int = 0  # results of an image that arrived after its first (retries); ignored

    def of(self, status: str) -> list[Record]:
        return [r for r in self.records if r.status == status]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.of(FAILED) else EXIT_OK

    def images_per_minute(self) -> float:
        worked = len(self.of(CONVERTED)) + len(self.of(FAILED))
        return 60.0 * worked / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = [
            f"blend123 batch: {len(self.of(CONVERTED))} converted, {len(self.of(SKIPPED))} skipped (already done), "
            f"{len(self.of(FAILED))} failed, of {len(self.records)}, in {self.seconds:.1f} s "
            f"({self.images_per_minute():.2f} images/min; {self.workers}); ledger: {self.ledger}"
        ]
        for r in self.of(FAILED):
            lines.append(f"  FAILED {r.image}: {r.error}" + (f"\n    fix: {r.hint}" if r.hint else ""))
        return "\n".join(lines)


def run_batch(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: BatchOptions,
    *,
    ray: str = "",
    workers: int = 0,
    cpus_per_worker: float = 1.0,
    retries: int = 3,
    force: bool = False,
    quiet: bool = False,
) -> BatchSummary:
    """Convert every image ``inputs`` name into ``out_dir``; never raises for one image.

    ``ray``: a Ray cluster address ("local", "auto", ``ray://host:10001``; a process already
    connected to a cluster uses that one), or "" to convert in this process.
    Raises :class:`BatchError` for a batch that cannot start.
    """
    options.validate()
    _check_model_names(options)
    items = plan(expand_inputs(inputs))
    out_dir = _output_folder(Path(out_dir))
    use_ray = bool(ray)
    if workers > 1 and not use_ray:
        raise BatchError(f"--workers {workers} needs a Ray cluster", "add --ray local (this machine) or --ray ADDRESS")
    if use_ray:
        from .ray_runner import import_ray

        import_ray()  # refuse now, with the install command, if Ray is missing
    started = time.monotonic()
    ledger = Ledger(out_dir)
    summary = BatchSummary(ledger.path)
    todo: list[tuple[int, BatchItem]] = []
    for index, item in enumerate(items):
        faces = None if force else glb_faces(item.glb(out_dir))
        if faces:
            previous = ledger.previous(item.image)
            seconds = previous.seconds if previous and previous.status in (CONVERTED, SKIPPED) else 0.0
            ledger.add(Record(str(item.image), str(item.glb(out_dir)), SKIPPED, seconds=seconds, faces=faces))
        else:
            todo.append((index, item))
    if todo and not use_ray and not quiet:
        _say_how_to_scale()
    bar = BatchBar(len(items), skipped=len(items) - len(todo), enabled=not quiet)
    by_index = dict(todo)

    def on_row(row: dict) -> None:
        item = by_index.get(int(row["index"]))
        if item is None or str(item.image) in ledger.this_run:
            summary.duplicates += 1
            return  # a retried image delivered twice is written once
        record = Record(
            str(item.image), str(item.glb(out_dir)), row["status"], seconds=float(row["seconds"]), faces=int(row["faces"]),
            error=row["error"], hint=row["hint"], code=row["code"], worker=row["worker"],
        )
        if record.status == CONVERTED:
            try:
                write_result(item, out_dir, row["glb"], row["light_json"])
            except OSError as exc:
                record.status, record.faces = FAILED, 0
                record.code = "disk_full" if exc.errno == errno.ENOSPC else "job_failed"
                record.error = f"cannot write {item.glb(out_dir)}: {exc.strerror or exc}"
                record.hint = "free some space in the output folder, then run the same command again"
        ledger.add(record)
        bar.update(record.status)

    stopped = ""
    try:
        with _logging_beside(bar):
            if not todo:
                summary.workers = "nothing to do"
            elif use_ray:
                from .ray_runner import run_on_ray

                summary.workers = f"Ray {ray or 'cluster'}"
                stopped = run_on_ray(todo, options, on_row, address=ray, workers=workers, cpus_per_worker=cpus_per_worker, retries=retries)
            else:
                from .local import run_local

                summary.workers = "in this process"
                stopped = run_local(todo, options, on_row)
        # Every input is accounted for: what no worker returned failed, and says why.
        for index, item in todo:
            if str(item.image) not in ledger.this_run:
                ledger.add(Record(
                    str(item.image), str(item.glb(out_dir)), FAILED, code="job_lost",
                    error=f"no worker finished it ({stopped or 'its worker died more often than --retries allows'})",
                    hint="run the same command again: only what is missing is converted",
                ))
                bar.update(FAILED)
    finally:
        bar.close()
        ledger.close(order=[str(item.image) for item in items])
        summary.seconds = time.monotonic() - started
    summary.records = [ledger.this_run[str(item.image)] for item in items if str(item.image) in ledger.this_run]
    return summary


def _check_model_names(options: BatchOptions) -> None:
    """A misspelt model is refused at once; whether its weights are installed is for each
    worker to find out (on a cluster, the driver need not have them)."""
    from ..synthesis.registry import MODELS

    for name in (options.settings.model, options.sds_model):
        if name and name not in MODELS:
            raise BatchError(f"unknown model {name[:64]!r}", f"available: {', '.join(MODELS)}")


def _output_folder(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"{out_dir} exists and is not a folder", "give -o the name of a folder for the GLBs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"cannot create {out_dir}: {exc.strerror or exc}", "choose an output folder you can write to") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise BatchError(f"cannot write to {out_dir} (read-only, or no permission)", "choose an output folder you can write to")
    return out_dir.resolve()


def _say_how_to_scale() -> None:
    from .ray_runner import ray_available

    if ray_available():
        print("blend123 batch: converting in this process; --ray local uses every GPU (or CPU) of this machine, --ray ADDRESS a Ray cluster", file=sys.stderr)
    else:
        print("blend123 batch: converting in this process; to spread a batch over GPUs and machines: pip install 'blend123[cluster]', then --ray local or --ray ADDRESS", file=sys.stderr)


@contextlib.contextmanager
def _logging_beside(bar: BatchBar):
    """Log lines printed above the progress bar rather than through it."""
    if bar._bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
