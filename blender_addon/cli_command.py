"""Headless batch conversion: ``blender -b --command blend123 convert IMAGE... -o DIR``.

Each image becomes ``DIR/<stem>.glb`` (and with ``--blend`` ``DIR/<stem>.blend`` holding
the mesh, its material and the orbit cameras with their planes). Images whose outputs
exist are skipped; one failing image does not stop the others; the exit status is
non-zero when any failed. :func:`convert` is the same thing for scripts (bpy module).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import bpy

from .dispatch import run_blocking
from .errors import JobFailed
from .core.batch import EXIT_USAGE, BatchItem, BatchSummary, UsageError, build_parser, plan, write_atomically
from .core.requests import parse_elevations, SettingsError
from .images import ReferenceImageError
from .session import session
from .submit import submit_orbit
from .protocol import settings as S
from .protocol.messages import Mesh, Message, Progress

_ID_COLLECTIONS = ("objects", "meshes", "materials", "images", "cameras", "collections", "scenes", "worlds")
_handle = None


def _log(text: str) -> None:
    print(text, flush=True)


def _snapshot() -> dict[str, set]:
    return {name: set(getattr(bpy.data, name)) for name in _ID_COLLECTIONS}


def _remove_new(before: dict[str, set]) -> None:
    """Free what one image's conversion created, so a long batch does not grow."""
    new = [idb for name in _ID_COLLECTIONS for idb in getattr(bpy.data, name) if idb not in before[name]]
    if new:
        bpy.data.batch_remove(new)


def _progress_printer(prefix: str):
    last = {"stage": None, "step": -1}

    def on_event(event: Message) -> None:
        if isinstance(event, Progress):
            step = int(event.fraction * 4)  # a line per quarter of each stage
            if (event.stage, step) != (last["stage"], last["step"]):
                last["stage"], last["step"] = event.stage, step
                _log(f"{prefix} {event.stage} {event.fraction * 100:3.0f}%")

    return on_event


def convert_one(item: BatchItem, prefix: str, options: dict, address: str, timeout_s: float) -> None:
    """Orbit + reconstruct one image into a fresh scene; write its GLB (and .blend)."""
    s = session()
    if not s.connected:
        s.connect(bpy.context, wait_s=timeout_s, timeout_s=timeout_s, address=address)
        if not s.connected:
            raise JobFailed(s.status, s.hint)
    scene = bpy.data.scenes.new(f"blend123 {item.glb.stem}")
    scene.render.resolution_x = scene.render.resolution_y = 512  # generated views are square
    settings = scene.blend123
    settings.reference_source = "FILE"
    settings.reference_file = str(item.image.resolve())
    for key, value in options.items():
        setattr(settings, key, value)
    info = submit_orbit(bpy.context, scene, then_mesh=True)
    meshes = [r.event for r in run_blocking(s, info, _progress_printer(prefix)) if isinstance(r.event, Mesh)]
    if not meshes or not meshes[-1].glb:
        raise JobFailed("the backend finished without a mesh", "see the backend's log")
    write_atomically(item.glb, meshes[-1].glb)
    if item.blend is not None:
        part = item.blend.with_name(f".{item.blend.name}.part")
        bpy.data.libraries.write(str(part), {scene}, fake_user=True, compress=True)
        part.replace(item.blend)


def convert(
    images: list[str | Path],
    output: str | Path,
    *,
    blend: bool = False,
    model: str = "",
    server: str = "",
    elevations: str = "10",
    resolution: int = S.RESOLUTION.default,
    steps: int | None = S.STEPS.default,
    seed: int = S.SEED.default,
    texture_size: int = S.TEXTURE_SIZE.default,
    max_faces: int = S.MAX_FACES.default,
    sds_model: str = "",
    timeout: float = 30.0,
    force: bool = False,
) -> BatchSummary:
    """Convert ``images``; never raises for one image's failure (see the summary)."""
    from . import preferences

    output = Path(output)
    summary = BatchSummary()
    try:
        parse_elevations(elevations)
    except SettingsError as exc:
        raise UsageError(f"{exc.message}: {exc.hint}") from None
    prefs = preferences.get()
    options = dict(
        model=model or prefs.default_model or "default",
        orbit_elevations=elevations,
        resolution=resolution,
        steps=steps or 0,  # the scene setting's 0: the model's own default
        seed=seed,
        texture_size=texture_size,
        max_faces=max_faces,
        sds_model=sds_model,
    )
    items = plan([Path(p) for p in images], output, blend)
    for n, item in enumerate(items, 1):
        prefix = f"[{n}/{len(items)}] {item.image.name}:"
        if item.done() and not force:
            _log(f"{prefix} skipped, {item.glb.name} exists")
            summary.skipped.append(item.image)
            continue
        start = time.perf_counter()
        before = _snapshot()
        try:
            convert_one(item, prefix, options, server or prefs.address, timeout)
        except (JobFailed, ReferenceImageError, SettingsError) as exc:
            reason = exc.message + (f" (fix: {exc.hint})" if exc.hint else "")
            _log(f"{prefix} FAILED: {reason}")
            summary.failed.append((item.image, reason))
        except (OSError, RuntimeError) as exc:
            _log(f"{prefix} FAILED: {exc}")
            summary.failed.append((item.image, str(exc)))
        else:
            _log(f"{prefix} wrote {item.glb}" + (f" and {item.blend.name}" if item.blend else "") + f" in {time.perf_counter() - start:.1f} s")
            summary.converted.append(item.image)
        finally:
            _remove_new(before)
            session().tracker.jobs.clear()
    return summary


def main(argv: list[str]) -> int:
    """The command's entry point: parse ``argv``, convert, print the summary, exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"blend123: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "convert":
        try:
            summary = convert(
                args.images, args.output, blend=args.blend, model=args.model, server=args.server, elevations=args.elevations,
                resolution=args.resolution, steps=args.steps, seed=args.seed, texture_size=args.texture_size,
                max_faces=args.max_faces, sds_model=args.sds_model, timeout=args.timeout, force=args.force,
            )
        except UsageError as exc:
            print(f"blend123: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _log(summary.text())
        return summary.exit_code
    return EXIT_USAGE


def register() -> None:
    global _handle
    _handle = bpy.utils.register_cli_command("blend123", main)


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.utils.unregister_cli_command(_handle)
        _handle = None
