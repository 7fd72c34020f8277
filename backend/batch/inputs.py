"""A batch's inputs: image files, folders, glob patterns and text files listing paths.

Every image becomes one :class:`BatchItem` with an output name that does not depend on
the order of the inputs, so a rerun finds the outputs of the run before it.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .options import BatchError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".tga"})
#: A file with one of these suffixes lists inputs, one a line (``#`` starts a comment).
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class BatchItem:
    """One image of a batch and where its results go."""

    image: Path  # absolute: workers on other machines read it by this path
    name: str  # output stem, unique within the batch

    def glb(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}.glb"

    def light(self, out_dir: Path) -> Path:
        return out_dir / f"{self.name}.light.json"


def expand_inputs(specs: Iterable[str | Path]) -> list[Path]:
    """Every image the inputs name, each once, in the order given (folders and globs sorted)."""
    seen: dict[Path, None] = {}
    for spec in specs:
        for path in _expand(str(spec), listed_in=None):
            seen.setdefault(path, None)
    if not seen:
        raise BatchError("the inputs name no images", f"give image files ({', '.join(sorted(IMAGE_SUFFIXES))}), folders, globs or a .txt list")
    return list(seen)


def _expand(spec: str, listed_in: Path | None) -> list[Path]:
    where = f" (listed in {listed_in})" if listed_in else ""
    path = Path(spec).expanduser()
    if listed_in is not None and not path.is_absolute():
        path = listed_in.parent / path  # a list's relative paths are relative to the list
    if path.is_dir():
        images = sorted(p.resolve() for p in path.iterdir() if p.is_file() and _is_image(p))
        if not images:
            raise BatchError(f"folder {path}{where} holds no images", f"put {', '.join(sorted(IMAGE_SUFFIXES))} files in it, or use a glob such as '{path}/**/*.png'")
        return images
    if path.is_file():
        if path.suffix.lower() in LIST_SUFFIXES:
            if listed_in is not None:
                raise BatchError(f"{path} is a list inside the list {listed_in}", "list image files, folders or globs only")
            return _read_list(path)
        # A file is taken as given: an unreadable image fails alone, with its reason.
        return [path.resolve()]
    if _GLOB_CHARS & set(spec):
        matches = sorted(Path(m).resolve() for m in glob.glob(str(path), recursive=True))
        images = [m for m in matches if m.is_file() and _is_image(m)]
        if not images:
            raise BatchError(f"the pattern {spec!r}{where} matches no images", "check the pattern; quote it so the shell passes it through, e.g. 'photos/**/*.jpg'")
        return images
    raise BatchError(f"no file or folder {str(path)!r}{where}", "check the path (and the working folder)")


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read the list {path}: {exc}", "give a UTF-8 text file with one path per line") from None
    out: list[Path] = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.extend(_expand(entry, listed_in=path))
    return out


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def plan(images: list[Path]) -> list[BatchItem]:
    """One item per image, named after its file; images sharing a stem get a suffix made
    from their full path, so the names do not depend on the order of the inputs."""
    stems: dict[str, int] = {}
    for image in images:
        stems[image.stem] = stems.get(image.stem, 0) + 1
    items = []
    for image in images:
        stem = image.stem or "image"
        if stems[image.stem] > 1:
            stem = f"{stem}-{hashlib.sha1(str(image).encode()).hexdigest()[:8]}"
        items.append(BatchItem(image, stem))
    return items
