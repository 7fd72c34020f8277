"""The backend server: one ROUTER socket, one job queue, one worker for the GPU."""

from .app import Server
from .config import ServerConfig

__all__ = ["Server", "ServerConfig"]
