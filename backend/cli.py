"""The ``blend123`` command line.

Every job command (``views``, ``orbit``, ``reconstruct``, ``convert``) talks to a
backend through the same client the Blender add-on uses: ``--server ADDRESS`` for a
running ``blend123 serve``, otherwise a private in-process backend.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, NoReturn

import numpy as np
import zmq

from blend123.protocol.codec import Limits
from blend123.protocol import settings as S
from blend123.protocol.camera import DEFAULT_FOV_DEG, ORBIT_VIEWS, CameraIntrinsics
from blend123.protocol.client import Client, CurveClientKeys, check_address
from blend123.protocol.errors import TIMEOUT, Blend123Error, ProtocolError
from blend123.protocol.job_progress import ChainProgress
from blend123.protocol.messages import Done, Error, GenerationSettings, Mesh, Message, NovelView, Orbit, Progress, Reconstruct, View
from blend123.protocol.version import __version__

from .console import JobBar
from .cpu_share import SETTLE_S, LoadMeter, second_cpu_free
from .images import load_rgba, save_rgba
from .server.config import DEFAULT_BIND, STAGE_MEMORY_FILE, ServerConfig, default_jobs_dir
from .server.stage_memory import StageMemory
from .tasks import write_transforms

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Blend123Error):
    """A mistake on the command line: a path, a value, a combination of options."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except ProtocolError as exc:  # the backend (or the client) refused: a failed job, not a typo
        _print_error(exc.message, exc.hint)
        return EXIT_FAILED if exc.code not in ("bad_request", "bad_keys") else EXIT_USAGE
    except Blend123Error as exc:  # every user mistake: a message and a fix, no traceback
        _print_error(exc.message, exc.hint)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> NoReturn:
    """The ``blend123`` command: :func:`main`, then an exit that skips the interpreter's
    teardown once everything is flushed and closed.

    With torch loaded, tearing the interpreter down takes ~0.8 s (unloading its libraries)
    and does nothing for a command whose files are written and closed. Ray's own exit
    handlers (a batch's local cluster) do matter, so a run that loaded Ray exits normally.
    """
    code = main()
    if "ray" in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_error(message: str, hint: str) -> None:
    print(f"blend123: error: {message}", file=sys.stderr)
    if hint:
        print(f"  fix: {hint}", file=sys.stderr)


# --- argument parsing ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blend123", description="Single image to 3D asset: novel views, orbits and textured meshes.")
    parser.add_argument("--version", action="version", version=f"blend123 {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the backend server")
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"ZeroMQ endpoint (default {DEFAULT_BIND}, loopback only)")
    p.add_argument("--jobs-dir", type=Path, default=None, help=f"where job inputs and results are kept (default {default_jobs_dir()})")
    p.add_argument("--curve-secret", type=Path, help="server secret key file (required to bind off loopback)")
    p.add_argument("--curve-clients", type=Path, help="folder of allowed client public keys (*.key)")
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--max-jobs-per-client", type=int, default=8)
    p.add_argument("--max-message-mb", type=int, default=512, help="largest request accepted, in MiB")
    p.add_argument("--keep-days", type=float, default=14.0, help="delete finished jobs older than this at start-up")
    p.add_argument("--max-client-disk-gb", type=float, default=10.0, help="what one client's jobs may hold in the jobs folder")
    p.add_argument("--max-jobs-gb", type=float, default=20.0, help="delete the oldest finished jobs to keep the jobs folder under this size (0: no cap)")
    p.set_defaults(func=cmd_serve, log_level="info")

    p = sub.add_parser("views", help="novel views of an image at given poses")
    p.add_argument("image", type=Path)
    p.add_argument("--elevation", type=float, default=0.0, help="elevation of the new views, degrees above the horizontal")
    p.add_argument("--azimuth", type=float, nargs="+", required=True, help="azimuths relative to the reference view, degrees (+90 = to the right)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (PNGs + transforms.json)")
    _add_generation(p, resolution=256)
    p.set_defaults(func=cmd_views)

    p = sub.add_parser("orbit", help=f"an orbit of {ORBIT_VIEWS} views around the subject")
    p.add_argument("image", type=Path)
    p.add_argument("--elevations", type=float, nargs="+", default=[10.0], help=f"one elevation, or {ORBIT_VIEWS} (a dynamic orbit)")
    p.add_argument("--views", type=int, default=ORBIT_VIEWS)
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (PNGs + transforms.json)")
    _add_generation(p, resolution=256)
    p.set_defaults(func=cmd_orbit)

    p = sub.add_parser("reconstruct", help="views with known cameras (transforms.json) to a textured GLB")
    p.add_argument("transforms", type=Path, help="a NeRF-style transforms.json, or the folder that holds it")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb")
    _add_mesh(p)
    p.add_argument(
        "--sds-frame", type=int, default=-1, help="with --sds-model: the frame that is the reference photo (default: the last, as in orbits)"
    )
    _add_connection(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("convert", help="image to textured GLB: orbit, then reconstruct")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output .glb")
    p.add_argument("--elevations", type=float, nargs="+", default=[10.0])
    p.add_argument("--views-dir", type=Path, help="also keep the orbit's views here")
    _add_generation(p, resolution=256)
    _add_mesh(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("batch", help="many images to textured GLBs, in this process or on a Ray cluster (--ray)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs ('photos/**/*.jpg'), or .txt files listing them")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder: NAME.glb and NAME.light.json per image, and batch.jsonl")
    p.add_argument("--elevations", type=float, nargs="+", default=[10.0])
    _add_generation(p, resolution=256, connection=False)
    _add_mesh(p)
    _add_batch(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("doctor", help="check the installation: GPU, weights, versions, port")
    p.add_argument("--bind", default=DEFAULT_BIND)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("keys", help="make a CURVE key pair for a remote backend or a client")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("folder", type=Path)
    p.add_argument("--name", help="file name stem (default: the role)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    p.set_defaults(func=cmd_keys)
    return parser


def _add_generation(p: argparse.ArgumentParser, resolution: int = S.RESOLUTION.default, connection: bool = True) -> None:
    p.add_argument("--model", default=S.MODEL.default, help="view-synthesis model (default: the built-in quick proxy, no weights)")
    p.add_argument("--ref-elevation", type=S.ELEVATION.argparse_type(), default=S.ELEVATION.default, help="elevation the reference image was seen from")
    p.add_argument("--ref-fov", type=S.REFERENCE_FOV.argparse_type(), default=S.REFERENCE_FOV.default, help=f"{S.REFERENCE_FOV.help} (default %(default)s)")
    p.add_argument("--resolution", type=S.RESOLUTION.argparse_type(), default=resolution, help=S.RESOLUTION.help)
    p.add_argument("--steps", type=S.STEPS.argparse_type(), default=S.STEPS.default, help=S.STEPS.help)
    p.add_argument("--guidance", type=S.GUIDANCE.argparse_type(), default=S.GUIDANCE.default, help=S.GUIDANCE.help)
    p.add_argument("--seed", type=S.SEED.argparse_type(), default=S.SEED.default)
    p.add_argument("--fov", type=S.FOV.argparse_type(), default=S.FOV.default, help=f"{S.FOV.help} (default %(default)s)")
    p.add_argument("--aspect", type=float, default=1.0, help="width / height of the returned views (default 1: square)")
    p.add_argument("--radius", type=S.RADIUS.argparse_type(), default=S.RADIUS.default, help=S.RADIUS.help)
    if connection:
        _add_connection(p)


def _add_mesh(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texture-size", type=S.TEXTURE_SIZE.argparse_type(), default=S.TEXTURE_SIZE.default, help=S.TEXTURE_SIZE.help)
    p.add_argument("--max-faces", type=S.MAX_FACES.argparse_type(), default=S.MAX_FACES.default, help=S.MAX_FACES.help)
    p.add_argument(
        "--sds-model",
        default="",
        help="a Zero123-class model (zero123-xl, stable-zero123) that paints surfaces no view saw (masked SDS)",
    )


def _add_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray", metavar="ADDRESS", default=None,
        help="run on a Ray cluster: auto (the one running here), ray://HEAD:10001, or local (a private one on this machine); "
        "default: $RAY_ADDRESS, else this process",
    )
    p.add_argument("--workers", type=int, default=0, help="with --ray: at most this many converter workers (default: one per GPU, else per --cpus-per-worker CPUs)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="with --ray on a cluster without GPUs: CPUs each converter worker takes")
    p.add_argument("--retries", type=int, default=3, help="with --ray: times a worker that died is restarted and its image retried")
    p.add_argument("--force", action="store_true", help="convert again images whose GLB is already there")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="address of a running backend (default: run one in this process)")
    p.add_argument("--client-key", type=Path, help="this client's secret key file, for a CURVE-protected backend")
    p.add_argument("--server-key", type=Path, help="the backend's public key file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> GenerationSettings:
    if not 0.05 <= args.aspect <= 20.0:
        raise CommandError(f"--aspect {args.aspect} is not a camera frame", "give width / height, e.g. 1.778 for 16:9")
    # The asking camera: --fov across the width, --aspect for its frame.
    width = args.resolution if args.aspect >= 1.0 else max(1, round(args.resolution * args.aspect))
    height = args.resolution if args.aspect < 1.0 else max(1, round(args.resolution / args.aspect))
    camera = CameraIntrinsics.from_fov_x(math.radians(args.fov), width, height)
    return GenerationSettings(
        model=args.model,
        reference_elevation=args.ref_elevation,
        radius=args.radius,
        reference_fov_deg=args.ref_fov,
        camera=camera,
        resolution=args.resolution,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
    )


# --- connection -----------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A client for ``--server``, or for a private in-process backend."""
    keys = None
    if args.client_key or args.server_key:
        if not (args.client_key and args.server_key):
            raise CommandError("a CURVE-protected backend needs both --client-key and --server-key")
        keys = CurveClientKeys.from_files(args.client_key, args.server_key)
    server = server_thread = None
    private_jobs = None
    if args.server:
        address = args.server
        client = Client(address, keys=keys, timeout_s=30.0)  # refuses a malformed address at once
    else:
        from .server import Server

        # A private jobs folder: this run's jobs are nobody else's, and another process's
        # live jobs are never mistaken for interrupted ones.
        private_jobs = tempfile.TemporaryDirectory(prefix="blend123-cli-")
        # The machine's stage timings are shared with `blend123 serve`'s default jobs folder.
        config = ServerConfig(
            bind=f"inproc://blend123-cli-{uuid.uuid4().hex}",
            jobs_dir=Path(private_jobs.name),
            stage_memory_file=default_jobs_dir() / STAGE_MEMORY_FILE,
        )
        server = Server(config)
        server_thread = server.start_in_thread()
        address = server.endpoint
        client = Client(address, keys=keys, timeout_s=30.0)
    try:
        if server is None:  # an in-process backend is this very version: nothing to ask
            client.hello("blend123-cli")
        yield client
    finally:
        client.close()
        if server is not None:
            server.stop()
            # Let it finish releasing the model: a daemon thread still freeing torch
            # memory while the interpreter shuts down aborts the process.
            server_thread.join(timeout=30)
        if private_jobs is not None:
            private_jobs.cleanup()


def run_job(client: Client, request: Message, quiet: bool, bar: JobBar | None = None, step: int = 0) -> Iterator[Message]:
    """Submit, show progress, yield result events; Ctrl-C cancels the job on the backend.

    ``bar`` (with ``step``, this job's place in its chain) shows jobs that follow one
    another on one bar; without it the job gets a bar of its own.
    """
    job_id = client.submit(request)
    bars = bar or JobBar(enabled=not quiet)
    try:
        for event in client.events(job_id, on_silence=lambda silent_s: bars.waiting(silent_s, client.timeout_s)):
            if isinstance(event, Progress):
                bars.show(event, step)
            elif isinstance(event, Error):
                bars.close()
                raise event.to_exception()
            elif isinstance(event, Done):
                if event.state != "done":
                    bars.close()
                    raise ProtocolError("cancelled", f"job {job_id} was {event.state}")
                return
            else:
                yield event
    except KeyboardInterrupt:
        bars.close()
        with contextlib.suppress(ProtocolError):
            client.cancel(job_id)
        raise
    except ProtocolError as exc:
        if exc.code != TIMEOUT:
            raise
        bars.close()
        # The client's own advice (resume the job once the backend is back) needs a job id
        # and a command the command line has not: say where to look and what to run.
        if client.address.startswith("inproc://"):  # the command's own backend, in this process
            hint = "run the command again; if it stops answering again, run it with --log-level debug to see where"
        else:
            hint = (
                f"check that the backend at {client.address} is running, then run the command again "
                "(a backend that was restarted does not carry on with the job it was running)"
            )
        raise ProtocolError(TIMEOUT, f"{exc.message} (job {job_id[:8]})", hint) from None
    finally:
        if bar is None or step == len(bar.chain.shares) - 1:
            bars.close()


def _proxy_orbit_share(client: Client) -> float:
    """The quick proxy orbit's share of a conversion as the backend measured it: from its
    hello, or, for the command's own backend, from the stage timings it starts from and
    the CPUs other processes leave it now."""
    if client.server is not None:
        return client.server.proxy_orbit_share
    meter = LoadMeter()  # a tenth of a second at most: the backend imports torch meanwhile
    second_cpu = second_cpu_free(meter.free(settle_s=SETTLE_S), meter.cpus)
    return StageMemory.load(default_jobs_dir() / STAGE_MEMORY_FILE).proxy_orbit_share(second_cpu)


# --- commands -------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import Server

    check_address(args.bind)  # "localhost:5123" says how to write it, not "refusing to listen"

    config = ServerConfig(
        bind=args.bind,
        jobs_dir=args.jobs_dir or default_jobs_dir(),
        curve_secret_key=args.curve_secret,
        curve_clients_dir=args.curve_clients,
        max_queue=args.max_queue,
        max_jobs_per_client=args.max_jobs_per_client,
        limits=Limits(max_total_bytes=args.max_message_mb << 20),
        keep_days=args.keep_days,
        max_jobs_gb=args.max_jobs_gb,
        max_client_disk_bytes=int(args.max_client_disk_gb * (1 << 30)),
    )
    # Job inputs are the artist's images: whatever the server writes is private to its user.
    os.umask(0o077)
    # Two I/O threads: a client flooding one connection does not hold up the others' handshakes.
    server = Server(config, zmq.Context(io_threads=2))
    try:
        endpoint = server.bind()
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"{args.bind} is already in use (another blend123 serve, or another program)", "stop that process, or serve on another port: --bind tcp://127.0.0.1:5124") from None
        raise CommandError(f"cannot serve on {args.bind!r}: {exc}", "give an endpoint like tcp://127.0.0.1:5123 (tcp://[::1]:5123 for IPv6)") from None
    from .tasks import warm_up

    warm_up()  # torch and the reconstruction loaded before saying "serving": requests are answered at once
    server.probe_speed()  # and the first job's estimate starts from this machine's pace
    auth = "CURVE authentication on" if args.curve_secret else "loopback only, no authentication"
    print(f"blend123 {__version__} serving on {endpoint} ({auth}); jobs in {config.jobs_dir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0



# --- output paths: checked before any work starts, written atomically ------------------------------


def check_output_file(path: Path, suffix: str) -> None:
    """Refuse an output file that could not be written, before minutes of work go into it."""
    if path.is_dir():
        raise CommandError(f"{path} is a folder", f"give a file name ending in {suffix}, e.g. {path / ('asset' + suffix)}")
    if path.suffix.lower() != suffix:
        raise CommandError(f"{path} does not end in {suffix}", f"name the output {path.with_suffix(suffix).name}")
    _check_writable_folder(path.parent if str(path.parent) else Path("."))


def check_output_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CommandError(f"{path} exists and is not a folder", "give the name of a folder for the views")
    _check_writable_folder(path)


def _check_writable_folder(folder: Path) -> None:
    existing = folder
    while not existing.exists():  # the nearest folder that exists must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"{existing} is a file, so {folder} cannot be created", "choose another output location")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write to {existing} (read-only, or no permission)", "choose a folder you can write to")


def write_file_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}", "free some space or choose another output location") from None


def _collect_views(client: Client, request: Message, output: Path, quiet: bool, bar: JobBar | None = None) -> list[View]:
    views: list[View] = []
    for event in run_job(client, request, quiet, bar):
        if isinstance(event, View):
            output.mkdir(parents=True, exist_ok=True)  # only once there is a view: a refused job leaves no folder
            save_rgba(output / f"view_{event.index:03d}.png", event.image)
            views.append(event)
    frames = [
        {"file_path": f"view_{v.index:03d}.png", "transform_matrix": v.c2w.astype(float).tolist(), "elevation": v.elevation, "azimuth": v.azimuth}
        for v in views
    ]
    output.mkdir(parents=True, exist_ok=True)
    # The intrinsics of the pixels as returned (the asking camera's lens, non-square frames too).
    write_transforms(output / "transforms.json", views[0].intrinsics() if views else math.radians(DEFAULT_FOV_DEG), frames)
    return views


def cmd_views(args: argparse.Namespace) -> int:
    check_output_folder(args.output)
    image = load_rgba(args.image)
    poses = np.array([[args.elevation, a, args.radius] for a in args.azimuth], dtype=np.float64)
    request = NovelView(image, poses, _settings(args))
    request.validate()  # a mistyped value is refused before a backend starts
    with connect(args) as client:
        views = _collect_views(client, request, args.output, args.quiet)
    print(f"wrote {len(views)} view(s) and transforms.json to {args.output}")
    return 0


def cmd_orbit(args: argparse.Namespace) -> int:
    check_output_folder(args.output)
    image = load_rgba(args.image)
    request = Orbit(image, list(args.elevations), views=args.views, settings=_settings(args))
    request.validate()
    with connect(args) as client:
        views = _collect_views(client, request, args.output, args.quiet)
    print(f"wrote {len(views)} orbit views and transforms.json to {args.output}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .reconstruction.pipeline import load_transforms_camera

    check_output_file(args.output, ".glb")
    try:
        images, c2w, camera = load_transforms_camera(args.transforms)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc), "pass a NeRF-style transforms.json, or the folder `blend123 orbit` wrote") from None
    sds = {}
    if args.sds_model:
        if not -len(images) <= args.sds_frame < len(images):
            raise CommandError(f"--sds-frame {args.sds_frame} is not a frame of {args.transforms} ({len(images)} frames)")
        sds = {"sds_model": args.sds_model, "sds_image": np.ascontiguousarray(images[args.sds_frame]), "sds_c2w": np.ascontiguousarray(c2w[args.sds_frame])}
    request = Reconstruct(
        images=images, c2w=c2w, camera_angle_x=camera.camera_angle_x, camera=camera, texture_size=args.texture_size, max_faces=args.max_faces, **sds
    )
    request.validate()  # e.g. a one-frame transforms.json: refused now, not by the backend
    with connect(args) as client:
        mesh = _receive_mesh(client, request, args.quiet)
    _write_mesh(mesh, args.output)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    check_output_file(args.output, ".glb")
    if args.views_dir:
        check_output_folder(args.views_dir)
    image = load_rgba(args.image)
    orbit = Orbit(image, list(args.elevations), settings=_settings(args))
    orbit.validate()
    Reconstruct(source_job="0" * 32, texture_size=args.texture_size, max_faces=args.max_faces, sds_model=args.sds_model).validate()
    bar = JobBar(enabled=not args.quiet)
    with connect(args) as client, contextlib.closing(bar):
        # One bar for the orbit and the mesh made from it, shared as the backend expects.
        bar.chain = ChainProgress.orbit_then_mesh(orbit.settings.model, _proxy_orbit_share(client))
        orbit_id = ""
        if args.views_dir:
            views = _collect_views(client, orbit, args.views_dir, args.quiet, bar)
            orbit_id = views[0].job_id if views else ""
        else:
            for event in run_job(client, orbit, args.quiet, bar):
                orbit_id = getattr(event, "job_id", orbit_id)
        if not orbit_id:
            raise CommandError("the orbit produced no views")
        # With an sds_model the backend conditions on the orbit's own photo and camera.
        request = Reconstruct(source_job=orbit_id, texture_size=args.texture_size, max_faces=args.max_faces, sds_model=args.sds_model)
        mesh = _receive_mesh(client, request, args.quiet, bar, step=1)
    _write_mesh(mesh, args.output)
    return 0


def _receive_mesh(client: Client, request: Reconstruct, quiet: bool, bar: JobBar | None = None, step: int = 0) -> Mesh:
    meshes = [e for e in run_job(client, request, quiet, bar, step) if isinstance(e, Mesh)]
    if not meshes:
        raise CommandError("the reconstruction finished without a mesh")
    return meshes[-1]


def _write_mesh(mesh: Mesh, output: Path) -> None:
    write_file_atomically(output, mesh.glb)
    extra = ""
    if mesh.light_json:
        light = output.with_suffix(".light.json")
        write_file_atomically(light, mesh.light_json.encode())
        extra = f" and {light.name}"
    print(f"wrote {output} ({len(mesh.faces)} faces, {mesh.texture.shape[1]}x{mesh.texture.shape[0]} texture){extra}")


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, run_batch

    if args.workers < 0 or args.retries < 0 or args.cpus_per_worker <= 0:
        raise CommandError("--workers and --retries take a count of 0 or more, --cpus-per-worker a positive number")
    options = BatchOptions(
        settings=_settings(args), elevations=tuple(args.elevations), texture_size=args.texture_size, max_faces=args.max_faces,
        sds_model=args.sds_model, log_level=args.log_level,
    )
    address = args.ray if args.ray is not None else os.environ.get("RAY_ADDRESS", "")
    summary = run_batch(
        args.inputs, args.output, options, ray=address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        retries=args.retries, force=args.force, quiet=args.quiet,
    )
    print(summary.text())
    return summary.exit_code


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    checks = run_checks(args.bind)
    for check in checks:
        # ok / !! a problem (exit 1) / -- optional, not installed (exit 0)
        mark = "ok " if check.ok else ("-- " if check.optional else "!! ")
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"     {'to add' if check.optional else 'fix'}: {check.fix}")
    problems = sum(check.problem for check in checks)
    optional = sum(not check.ok and check.optional for check in checks)
    summary = "all good" if not problems else f"{problems} problem(s) found"
    print(summary + (f"; {optional} optional part(s) not installed (listed with --)" if optional else ""))
    return 0 if not problems else EXIT_FAILED


def cmd_keys(args: argparse.Namespace) -> int:
    from .server.security import generate_keys

    public, secret = generate_keys(args.folder, args.name or args.role, force=args.force)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    if args.role == "server":
        print(f"serve with: blend123 serve --bind tcp://0.0.0.0:5123 --curve-secret {secret} --curve-clients DIR_OF_CLIENT_KEYS")
        print(f"give {public.name} to every client")
    else:
        print(f"copy {public.name} into the backend's --curve-clients folder")
    return 0


if __name__ == "__main__":
    run()
