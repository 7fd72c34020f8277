"""Headless batch conversion: ``blender -b --command blend123 convert IMAGE... -o DIR``.

Each image becomes ``DIR/<stem>.glb`` (and with ``--blend`` ``DIR/<stem>.blend`` holding
the mesh, its material and the orbit cameras with their planes). Images whose outputs
exist are skipped; one failing image does not stop the others; the exit status is
non-zero when any failed. :func:`convert` is the same thing for scripts (bpy module).

With ``--ray ADDRESS`` the images are converted on a Ray cluster by ``blend123 batch``
(a child process with the backend's Python), and each .blend is made here from the GLB
it fetched (the mesh, its material and fitted light; no orbit planes: the cluster keeps
no views).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import bpy
import numpy as np

from .dispatch import run_blocking
from .errors import JobFailed
from .core.batch import EXIT_USAGE, BatchItem, BatchSummary, UsageError, build_parser, plan, ray_batch_command, read_ledger, write_atomically
from .core.glb_mesh import GLBError, read_mesh
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
    ray: str = "",
    python: str = "",
) -> BatchSummary:
    """Convert ``images``; never raises for one image's failure (see the summary).

    With ``ray`` (a Ray cluster address) the images are converted on the cluster by
    ``blend123 batch`` (run with ``python``, or the preferences' backend Python), and the
    .blend files are made here from the GLBs it fetched into ``output``.
    """
    from . import preferences

    output = Path(output)
    summary = BatchSummary()
    try:
        elevation_values = parse_elevations(elevations)
    except SettingsError as exc:
        raise UsageError(f"{exc.message}: {exc.hint}") from None
    prefs = preferences.get()
    if ray:
        cmd = ray_batch_command(
            [Path(p) for p in images], output, ray, python or prefs.python_executable, model=model or prefs.default_model or "default",
            elevations=tuple(elevation_values), resolution=resolution, steps=steps, seed=seed, texture_size=texture_size,
            max_faces=max_faces, sds_model=sds_model, force=force,
        )
        return _convert_on_ray(cmd, [Path(p) for p in images], output, blend, force, summary)
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


def _convert_on_ray(cmd: list[str], images: list[Path], output: Path, blend: bool, force: bool, summary: BatchSummary) -> BatchSummary:
    """Run ``blend123 batch --ray`` (its progress on this terminal), then make the .blend
    files here from the GLBs it wrote into ``output``; its batch.jsonl says what happened."""
    _log(f"blend123: converting {len(images)} image(s) on Ray: {' '.join(cmd[:2])} ... --ray {cmd[cmd.index('--ray') + 1]}")
    try:
        code = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise UsageError(f"cannot run {cmd[0]}: {exc}; name the Python that has the blend123 backend with --python") from None
    if code == EXIT_USAGE:
        raise UsageError("`blend123 batch` refused the command (its message is above)")
    records = read_ledger(output)
    for n, image in enumerate(images, 1):
        prefix = f"[{n}/{len(images)}] {image.name}:"
        record = records.get(str(image.resolve()))
        if record is None:
            reason = "the cluster run returned nothing for it (fix: run the same command again: only what is missing is converted)"
            _log(f"{prefix} FAILED: {reason}")
            summary.failed.append((image, reason))
            continue
        if record.get("status") == "failed":
            reason = record.get("error", "") + (f" (fix: {record['hint']})" if record.get("hint") else "")
            _log(f"{prefix} FAILED: {reason}")
            summary.failed.append((image, reason))
            continue
        glb = Path(record["output"])
        target = glb.with_suffix(".blend") if blend else None
        made_blend = False
        if target is not None and (force or record.get("status") == "converted" or not target.is_file()):
            before = _snapshot()
            try:
                _blend_from_glb(glb, target)
                made_blend = True
            except (OSError, GLBError, RuntimeError) as exc:
                _log(f"{prefix} FAILED: cannot make {target.name} from {glb.name}: {exc}")
                summary.failed.append((image, f"cannot make {target.name}: {exc}"))
                continue
            finally:
                _remove_new(before)
        if record.get("status") == "skipped" and not made_blend:
            _log(f"{prefix} skipped, {glb.name} exists")
            summary.skipped.append(image)
        else:
            _log(f"{prefix} wrote {glb}" + (f" and {target.name}" if made_blend else "") + f" ({record.get('faces', 0)} faces, {record.get('seconds', 0):.1f} s on {record.get('worker') or 'the cluster'})")
            summary.converted.append(image)
    return summary


def _blend_from_glb(glb: Path, target: Path) -> None:
    """A .blend with the GLB's mesh and material (and its fitted light), as convert makes one."""
    from . import scene_import
    from .protocol.messages import Mesh

    data = glb.read_bytes()
    vertices, faces, uvs, (width, height) = read_mesh(data)
    light = glb.with_suffix(".light.json")
    light_json = light.read_text(encoding="utf-8") if light.is_file() else ""
    job_id = hashlib.sha1(data).hexdigest()[:32]
    # The texture travels as the GLB's own PNG, packed as is; the pixels are not needed.
    mesh = Mesh(job_id, vertices=vertices, faces=faces, uvs=uvs, texture=np.zeros((height, width, 4), np.uint8), glb=data, light_json=light_json)
    scene = bpy.data.scenes.new(f"blend123 {glb.stem}")
    scene.render.resolution_x = scene.render.resolution_y = 512
    frame = scene_import.scene_frame(scene)
    scene_import.add_mesh(scene, mesh, frame, scene_import.job_collection(scene, "mesh", job_id))
    part = target.with_name(f".{target.name}.part")
    bpy.data.libraries.write(str(part), {scene}, fake_user=True, compress=True)
    part.replace(target)


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
                ray=args.ray, python=args.python,
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
