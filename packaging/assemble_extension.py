"""Assemble the Blender extension: ``blender_addon/`` plus a copy of ``protocol/``.

The extension must not import the backend's ``blend123.protocol``; it carries its own
copy as the subpackage ``protocol`` (one source of truth, copied at build time). The
result is a folder usable as an extension repository directory::

    <dest>/blend123/blender_manifest.toml
    <dest>/blend123/__init__.py ...
    <dest>/blend123/protocol/...

Usage: ``python packaging/assemble_extension.py DEST`` (prints the package folder).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTENSION_ID = "blend123"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


def assemble(dest_dir: str | Path, *, source: Path = REPO) -> Path:
    """Copy the extension into ``dest_dir/blend123`` (replacing it); returns that folder."""
    package = Path(dest_dir) / EXTENSION_ID
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(source / "blender_addon", package, ignore=_IGNORE)
    shutil.copytree(source / "protocol", package / "protocol", ignore=_IGNORE)
    return package


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python packaging/assemble_extension.py DEST_DIR")
    print(assemble(sys.argv[1]))
