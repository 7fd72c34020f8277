"""Batch conversion bookkeeping: arguments, outputs, skipping, summary. No bpy.

``blender -b --command blend123 convert IMAGE... -o DIR [--blend] [--model NAME]``
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol import settings as S
from ..protocol.errors import Blend123Error

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Blend123Error):
    """A wrong command line: the message says what, argparse's usage how."""


class _Parser(argparse.ArgumentParser):
    # argparse would call sys.exit() inside Blender: raise instead, the caller decides.
    def error(self, message: str) -> None:
        raise UsageError(f"{message}\n{self.format_usage()}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="blender -b --command blend123", description="blend123 headless batch commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("convert", help="images to textured GLBs (orbit, then reconstruct)")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--blend", action="store_true", help="also write a .blend per image with the mesh, material and orbit planes")
    p.add_argument("--model", default="", help="view-synthesis model (default: the one set in the preferences)")
    p.add_argument("--server", default="", help="backend address (default: the one set in the preferences)")
    p.add_argument("--elevations", default="10", help="orbit elevation(s), degrees: one, or 21 comma-separated")
    p.add_argument("--resolution", type=S.RESOLUTION.argparse_type(), default=S.RESOLUTION.default, help=S.RESOLUTION.help)
    p.add_argument("--steps", type=S.STEPS.argparse_type(), default=S.STEPS.default, help=S.STEPS.help)
    p.add_argument("--seed", type=S.SEED.argparse_type(), default=S.SEED.default, help=S.SEED.help)
    p.add_argument("--texture-size", type=S.TEXTURE_SIZE.argparse_type(), default=S.TEXTURE_SIZE.default, help=S.TEXTURE_SIZE.help)
    p.add_argument("--max-faces", type=S.MAX_FACES.argparse_type(), default=S.MAX_FACES.default, help=S.MAX_FACES.help)
    p.add_argument("--sds-model", default="", help="a Zero123-class model that paints surfaces no view saw (masked SDS)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds of backend silence before giving up")
    p.add_argument("--force", action="store_true", help="convert again images whose outputs exist")
    p.add_argument(
        "--ray", default="", metavar="ADDRESS",
        help="convert on a Ray cluster (auto, ray://HEAD:10001, or local) through `blend123 batch`; the .blend files are made here from its GLBs",
    )
    p.add_argument("--python", default="", help="with --ray: the Python that has the blend123 backend and Ray (default: the one set in the preferences, else `blend123` on PATH)")
    return parser


def ray_batch_command(
    images: list[Path], output: Path, ray: str, python: str = "", *, model: str = "", elevations: tuple[float, ...] = (10.0,),
    resolution: int = S.RESOLUTION.default, steps: int | None = None, seed: int = S.SEED.default,
    texture_size: int = S.TEXTURE_SIZE.default, max_faces: int = S.MAX_FACES.default, sds_model: str = "", force: bool = False,
) -> list[str]:
    """The ``blend123 batch ... --ray ADDRESS`` command line that converts ``images`` on a cluster."""
    import shutil

    if python:
        cmd = [python, "-m", "blend123.backend.cli", "batch"]
    else:
        exe = shutil.which("blend123")
        if not exe:
            raise UsageError(
                "--ray runs `blend123 batch`, and there is no `blend123` command on PATH: "
                "install the backend with its cluster extra (pip install 'blend123[cluster]') or name its Python with --python"
            )
        cmd = [exe, "batch"]
    cmd += [str(Path(i).resolve()) for i in images] + ["-o", str(output), "--ray", ray]
    cmd += ["--elevations", *[f"{float(e):g}" for e in elevations]]
    cmd += ["--resolution", str(resolution), "--seed", str(seed), "--texture-size", str(texture_size), "--max-faces", str(max_faces)]
    if model:
        cmd += ["--model", model]
    if steps:
        cmd += ["--steps", str(steps)]
    if sds_model:
        cmd += ["--sds-model", sds_model]
    if force:
        cmd.append("--force")
    return cmd


def read_ledger(output: Path) -> dict[str, dict]:
    """``blend123 batch``'s records in ``output/batch.jsonl``, by image path (the newest wins)."""
    import json

    records: dict[str, dict] = {}
    try:
        lines = (output / "batch.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
            records[str(record["image"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


@dataclass(frozen=True)
class BatchItem:
    image: Path
    glb: Path
    blend: Path | None

    def outputs(self) -> list[Path]:
        return [self.glb] + ([self.blend] if self.blend else [])

    def done(self) -> bool:
        return all(p.is_file() and p.stat().st_size > 0 for p in self.outputs())


def plan(images: list[Path], output: Path, blend: bool) -> list[BatchItem]:
    """One item per image; two images with the same stem get distinct outputs."""
    items, used = [], set()
    for image in images:
        stem = image.stem or "image"
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        items.append(BatchItem(image, output / f"{name}.glb", output / f"{name}.blend" if blend else None))
    return items


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file so an interrupted run never leaves a 'done' output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class BatchSummary:
    converted: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def text(self) -> str:
        lines = [f"blend123 convert: {len(self.converted)} converted, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"]
        lines += [f"  FAILED {image}: {reason}" for image, reason in self.failed]
        return "\n".join(lines)
