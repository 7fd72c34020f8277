"""Release and wire-protocol versions (the single source: pyproject.toml reads this file)."""

__version__ = "0.1.0"

#: Bumped whenever a message changes incompatibly; both ends refuse a mismatch. A new field
#: is incompatible too: an older decoder refuses fields it does not know. 3: fields
#: added since 2 (e.g. the whole job's ``overall`` in progress events, hello's memory mode).
#: 4: hello's ``proxy_orbit_share``. 5: progress's ``object_cost``.
PROTOCOL_VERSION = 5
