"""The batch on Ray: the inputs as a Ray Data dataset, converted by an actor pool.

Each actor holds one :class:`ImageConverter` (its model stays resident across images):
one actor per GPU with ``num_gpus=1``, or, where the cluster has no GPU, CPU actors of
``cpus_per_worker`` CPUs each. Ray schedules them, restarts an actor whose process died
and retries its image (``max_restarts`` / ``max_task_retries``, bounded). Results stream
back to the driver, which writes every output and ledger line itself: the workers need
to read the inputs (shared storage on a multi-machine cluster), never to write anything.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .converter import RESULT_COLUMNS, ImageConverter
from .inputs import BatchItem
from .options import BatchError, BatchOptions

log = logging.getLogger("blend123.batch")

INSTALL_HINT = "pip install 'blend123[cluster]' (Ray Data), on this machine and on every node of the cluster"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BatchError(f"--ray needs Ray Data, which is not installed here ({exc})", INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    """How many converter actors, and what each one asks Ray for."""

    actors: int
    num_gpus: float
    num_cpus: float

    def describe(self) -> str:
        each = "1 GPU" if self.num_gpus else f"{self.num_cpus:g} CPU"
        return f"{self.actors} converter worker(s), {each} each"


def plan_workers(resources: dict, images: int, workers: int = 0, cpus_per_worker: float = 1.0) -> WorkerPlan:
    """One actor per GPU of the cluster; without GPUs, one per ``cpus_per_worker`` CPUs.
    ``workers`` (when > 0) caps the count; never more actors than images."""
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        actors = min(gpus, workers) if workers > 0 else gpus
        return WorkerPlan(max(1, min(actors, images)), 1.0, 1.0)
    cpus = max(float(resources.get("CPU", 1)), 1.0)
    actors = workers if workers > 0 else max(1, int(cpus // cpus_per_worker))
    actors = max(1, min(actors, images))
    # Asked for more CPU actors than fit: they share the cores rather than wait for them.
    return WorkerPlan(actors, 0.0, min(float(cpus_per_worker), cpus / actors))


class RayConverter:
    """The stateful ``map_batches`` class: one per actor, its model loaded once."""

    def __init__(self, options: BatchOptions) -> None:
        _worker_logging(options.log_level)
        self.converter = ImageConverter(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.converter.convert(int(i), str(p), str(n)) for i, p, n in zip(batch["index"], batch["image"], batch["name"])]
        out = {key: np.array([row[key] for row in rows], dtype=object) for key in RESULT_COLUMNS}
        out["index"] = np.array([row["index"] for row in rows], dtype=np.int64)
        return out


def _worker_logging(level: str) -> None:
    logger = logging.getLogger("blend123")
    logger.setLevel(getattr(logging, level.upper(), logging.WARNING))
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def run_on_ray(
    todo: list[tuple[int, BatchItem]],
    options: BatchOptions,
    on_row: Callable[[dict], None],
    *,
    address: str,
    workers: int = 0,
    cpus_per_worker: float = 1.0,
    retries: int = 3,
) -> str:
    """Convert ``todo`` on the Ray cluster at ``address`` ("local": a private one on this
    machine; "auto": the one running here; or ``ray://host:10001``), or on the one this
    process is already connected to. Rows go to ``on_row`` as they arrive. Returns "" when
    the dataset ran to its end, else what stopped it (the caller accounts for the rest)."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BatchError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}",
                "start one with `ray start --head`, pass its address (--ray auto on a node of it, or ray://HEAD:10001), or use --ray local",
            ) from None
        started = True
    try:
        return _run(ray, todo, options, on_row, workers, cpus_per_worker, retries)
    finally:
        if started:
            ray.shutdown()


def _run(ray, todo, options, on_row, workers, cpus_per_worker, retries) -> str:
    from ray.data import ActorPoolStrategy, DataContext

    plan = plan_workers(ray.cluster_resources(), len(todo), workers, cpus_per_worker)
    log.warning("Ray cluster: %s", plan.describe())
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the batch has its own, one for the whole run
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    # A block whose worker died more often than the retries allow is dropped, not fatal:
    # the driver records its image as failed and the rest of the run goes on.
    context.max_errored_blocks = len(todo)
    rows = [{"index": index, "image": str(item.image), "name": item.name} for index, item in todo]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one image per block: one per retry
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing actor options such as max_restarts here, yet has no
        # other way to bound the restarts of a map_batches actor (its default: forever).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        converted = _map(dataset, options, plan, ActorPoolStrategy, retries)
    try:
        for batch in converted.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            for i in range(len(batch["index"])):
                on_row({key: _plain(batch[key][i]) for key in RESULT_COLUMNS})
    except Exception as exc:  # noqa: BLE001 - a lost cluster or exhausted retries: account for the rest
        log.error("the Ray dataset stopped: %s", exc)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ""


def _map(dataset, options: BatchOptions, plan: WorkerPlan, pool, retries: int):
    return dataset.map_batches(
        RayConverter,
        fn_constructor_kwargs={"options": options},
        batch_size=1,
        batch_format="numpy",
        # One image at a time per worker: an image waits in the common queue, not behind a
        # busy worker, so a worker that is free (or restarted) takes the next one.
        compute=pool(size=plan.actors, max_tasks_in_flight_per_actor=1),
        num_gpus=plan.num_gpus,
        num_cpus=plan.num_cpus,
        max_restarts=retries,
        max_task_retries=retries,
    )


def _plain(value):
    """numpy scalars as Python values (the ledger is JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def default_address() -> str:
    return os.environ.get("RAY_ADDRESS", "")
