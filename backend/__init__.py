"""blend123 backend: the server process, view synthesis, reconstruction and the command line."""

from blend123.protocol import __version__

from .cpu_share import prefer_passive_waits

prefer_passive_waits()  # before anything imports torch: OpenMP reads it once

__all__ = ["__version__"]
