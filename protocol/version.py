"""Release and wire-protocol versions (the single source: pyproject.toml reads this file)."""

__version__ = "0.1.0"

#: Bumped whenever a message changes incompatibly; both ends refuse a mismatch.
PROTOCOL_VERSION = 2
