"""blend123 backend: the server process, view synthesis, reconstruction and the command line."""

from blend123.protocol import __version__

__all__ = ["__version__"]
