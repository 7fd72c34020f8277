"""Build the installable Blender extension: one zip per platform, each validated by Blender.

    python packaging/build_extension.py [--out dist] [--platform linux-x64 ...] [--blender PATH]

Steps: fetch the bundled wheels (pyzmq, msgpack; once, into a cache), assemble
``blender_addon/`` plus a copy of ``protocol/``, write the version (from
``protocol/version.py``, which pyproject.toml reads too), the wheel list and the platforms
into the manifest, then let Blender's own builder make the per-platform zips
(``extension build --split-platforms``) and its validator check each one.

Blender's builder is taken from ``--blender`` (a Blender executable) or, by default, from
the ``bpy`` wheel, which ships it as ``addons_core/bl_pkg/cli/blender_ext.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assemble_extension import REPO, assemble  # noqa: E402
from wheels import DEFAULT_CACHE, PLATFORMS, fetch  # noqa: E402


def version() -> str:
    text = (REPO / "protocol" / "version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def blender_ext_command(blender: str | None) -> list[str]:
    """How to run Blender's extension tool: through a Blender binary or the bpy wheel's copy."""
    if blender:
        return [blender, "--background", "--factory-startup", "--command", "extension"]
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("need Blender's extension builder: pass --blender PATH or install the bpy wheel")
    root = Path(list(spec.submodule_search_locations)[0])
    found = sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"blender_ext.py not found inside the bpy wheel at {root}")
    return [sys.executable, str(found[-1])]


def write_manifest(package: Path, wheel_names: list[str], platforms: list[str]) -> None:
    manifest = package / "blender_manifest.toml"
    text = manifest.read_text()
    text = re.sub(r'^version = ".*"$', f'version = "{version()}"', text, count=1, flags=re.M)
    text = re.sub(r"^#? ?wheels = \[.*\]$\n?", "", text, flags=re.M)
    text = re.sub(r"^platforms = \[.*\]$\n?", "", text, flags=re.M)
    listed = ",\n".join(f'  "./wheels/{name}"' for name in wheel_names)
    platform_list = ", ".join(f'"{p}"' for p in platforms)
    # Top-level keys must come before the first [table].
    head, sep, tail = text.partition("\n[")
    head = head.rstrip() + f"\n\nplatforms = [{platform_list}]\nwheels = [\n{listed},\n]\n"
    manifest.write_text(head + (sep + tail if sep else ""))


def build(out: Path, platforms: list[str], blender: str | None = None, cache: Path = DEFAULT_CACHE) -> list[Path]:
    chosen = tuple(p for p in PLATFORMS if p.blender in platforms)
    wheels = fetch(cache, chosen)
    staging = REPO / "build" / "extension"
    package = assemble(staging)
    (package / "wheels").mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, package / "wheels" / wheel.name)
    write_manifest(package, [w.name for w in wheels], [p.blender for p in chosen])

    tool = blender_ext_command(blender)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("blend123-*.zip"):
        old.unlink()
    subprocess.run([*tool, "build", "--source-dir", str(package), "--output-dir", str(out), "--split-platforms"], check=True)
    zips = sorted(out.glob("blend123-*.zip"))
    if len(zips) != len(chosen):
        raise SystemExit(f"expected {len(chosen)} zips, Blender built {[z.name for z in zips]}")
    for archive in zips:
        subprocess.run([*tool, "validate", str(archive)], check=True)
    return zips


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the blend123 Blender extension zips.")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--platform", action="append", choices=[p.blender for p in PLATFORMS], help="default: all")
    parser.add_argument("--blender", help="a Blender executable (default: the builder inside the bpy wheel)")
    parser.add_argument("--wheels-cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    for archive in build(args.out, args.platform or [p.blender for p in PLATFORMS], args.blender, args.wheels_cache):
        print(archive)


if __name__ == "__main__":
    main()
