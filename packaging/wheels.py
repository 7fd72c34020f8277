"""The wheels the Blender extension bundles: pyzmq and msgpack for every platform Blender ships.

Blender 4.2-5.0 run Python 3.11 and 5.1+ run Python 3.13, so each platform gets a wheel
for both. Wheels are fetched with pip into a cache folder once; building the extension
only reads that folder, so a build (and the tests that build) never reaches the network
when the cache is filled.

    python packaging/wheels.py [--cache build/wheels]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Bundled packages, pinned so that every platform zip carries the same versions.
PACKAGES = ("pyzmq==27.3.0", "msgpack==1.2.4")
PYTHONS = ("3.11", "3.13")


@dataclass(frozen=True)
class Platform:
    blender: str  # Blender's platform name in the manifest
    pip_tags: tuple[str, ...]  # wheel platform tags pip may pick, best first


PLATFORMS = (
    Platform("linux-x64", ("manylinux_2_28_x86_64", "manylinux_2_26_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")),
    Platform("windows-x64", ("win_amd64",)),
    Platform("macos-arm64", ("macosx_11_0_arm64", "macosx_10_15_universal2", "macosx_10_9_universal2")),
    Platform("macos-x64", ("macosx_10_15_x86_64", "macosx_10_9_x86_64", "macosx_10_15_universal2", "macosx_10_9_universal2")),
)

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "build" / "wheels"


def fetch(cache: Path = DEFAULT_CACHE, platforms: tuple[Platform, ...] = PLATFORMS) -> list[Path]:
    """Download the wheels into ``cache`` (skipping what is there already); returns them all."""
    for platform in platforms:
        for python in PYTHONS:
            folder = _folder(cache, platform, python)
            if len(list(folder.glob("*.whl"))) == len(PACKAGES):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            abi = "cp" + python.replace(".", "")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--implementation", "cp", "--python-version", python, "--abi", abi, "--abi", "abi3", "--dest", str(folder)]
            for tag in platform.pip_tags:
                cmd += ["--platform", tag]
            subprocess.run(cmd + list(PACKAGES), check=True)
    return wheels_for(cache, platforms)


def wheels_for(cache: Path, platforms: tuple[Platform, ...] = PLATFORMS) -> list[Path]:
    """The cached wheels for ``platforms``, one per package, platform and Python; unique by name."""
    found: dict[str, Path] = {}
    for platform in platforms:
        for python in PYTHONS:
            wheels = sorted(_folder(cache, platform, python).glob("*.whl"))
            if len(wheels) != len(PACKAGES):
                raise FileNotFoundError(
                    f"wheels for {platform.blender} / Python {python} are missing from {cache}; "
                    "run `python packaging/wheels.py` once (it downloads them)"
                )
            for wheel in wheels:
                found.setdefault(wheel.name, wheel)  # an abi3 wheel serves both Pythons
    return [found[name] for name in sorted(found)]


def _folder(cache: Path, platform: Platform, python: str) -> Path:
    return cache / platform.blender / f"py{python}"


def main() -> None:
    parser = argparse.ArgumentParser(description="Download the wheels the Blender extension bundles.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    for wheel in fetch(args.cache):
        print(wheel.name)


if __name__ == "__main__":
    main()
