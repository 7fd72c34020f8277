"""blend123 backend: the server process, view synthesis, reconstruction and the command line."""

from .cpu_share import calm_thread_pools

calm_thread_pools()  # before anything imports numpy or torch: their thread pools read it once

from blend123.protocol import __version__  # noqa: E402 - after the thread pools are set

__all__ = ["__version__"]
