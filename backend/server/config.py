"""Server settings, with defaults that are safe on a laptop and fine on a GPU box."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from blend123.protocol.codec import Limits

from .stage_memory import FILE_NAME as STAGE_MEMORY_FILE

DEFAULT_PORT = 5123
DEFAULT_BIND = f"tcp://127.0.0.1:{DEFAULT_PORT}"


def default_jobs_dir() -> Path:
    """Where job inputs and results are kept: the user's cache folder."""
    return Path(platformdirs.user_cache_dir("blend123")) / "jobs"


@dataclass
class ServerConfig:
    bind: str = DEFAULT_BIND
    jobs_dir: Path = field(default_factory=default_jobs_dir)
    # CURVE authentication: the server's secret key file (as written by `blend123 keys`)
    # and a folder of allowed client public key files. Required off loopback.
    curve_secret_key: Path | None = None
    curve_clients_dir: Path | None = None
    # Admission limits.
    max_queue: int = 64
    max_jobs_per_client: int = 8
    # Bytes of request inputs one client may have queued or running at once.
    max_client_bytes: int = 2 << 30
    # Bytes one client's jobs (inputs and results) may hold in the jobs folder.
    max_client_disk_bytes: int = 10 << 30
    limits: Limits = field(default_factory=Limits)
    # Seconds between heartbeats sent to clients with queued or running jobs.
    heartbeat_s: float = 1.0
    # Clients silent this long stop getting heartbeats (their jobs run on regardless).
    client_timeout_s: float = 30.0
    # Progress events per job and second, at most (results are never throttled).
    progress_rate_hz: float = 20.0
    # Finished jobs older than this are deleted from the jobs folder at start-up.
    keep_days: float = 14.0
    # The oldest finished jobs are deleted to keep the jobs folder under this size (0: no cap).
    max_jobs_gb: float = 20.0
    # Finished jobs kept in memory; older ones are reloaded from the jobs folder.
    jobs_in_memory: int = 256
    # Where what this machine's stages take is remembered for the progress bar's ETA
    # (``stage_memory.py``); None: in the jobs folder.
    stage_memory_file: Path | None = None

    def __post_init__(self) -> None:
        self.jobs_dir = Path(self.jobs_dir)
        if self.stage_memory_file is None:
            self.stage_memory_file = self.jobs_dir / STAGE_MEMORY_FILE
