"""A local ``blend123 serve`` process started from Blender: plain Python, no bpy.

It is a child process, not a thread; it is stopped on unregister and at interpreter exit
(``atexit``), so quitting Blender never leaves a backend behind.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import time
from pathlib import Path

from ..protocol.errors import Blend123Error


class BackendStartError(Blend123Error):
    """A local backend could not be started; ``hint`` says what to check."""


def serve_command(address: str, python: str = "", jobs_dir: str = "") -> list[str]:
    """The command line that serves ``address``: ``python -m ...`` or ``blend123`` on PATH."""
    if python:
        cmd = [python, "-m", "blend123.backend.cli", "serve", "--bind", address]
    else:
        exe = shutil.which("blend123")
        if not exe:
            raise BackendStartError(
                "no `blend123` command on PATH to start a local backend",
                "install the backend (pip install blend123) or set its Python in the blend123 preferences",
            )
        cmd = [exe, "serve", "--bind", address]
    if jobs_dir:
        cmd += ["--jobs-dir", jobs_dir]
    return cmd


class LocalBackend:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        atexit.register(self.stop)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, command: list[str], log_path: Path) -> None:
        if self.running:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as exc:
                raise BackendStartError(f"could not start the backend: {exc}", "check the backend Python in the blend123 preferences") from None
        time.sleep(0.2)  # a wrong interpreter or module fails at once: report it now
        if self.process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-400:]
            self.process = None
            raise BackendStartError(f"the local backend exited at start: {tail.strip()}", f"see {log_path}")

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
