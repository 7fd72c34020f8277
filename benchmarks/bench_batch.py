"""Batch throughput on Ray: images per minute with 1 and 2 converter workers, in one run.

    python benchmarks/bench_batch.py [--images 6] [--workers 1 2] [--cpus 2] [--out benchmarks/results/batch.json]

Starts one local Ray cluster (``--cpus`` CPUs; every GPU of the machine, when it has any),
then converts the same images once per worker count, each into a fresh folder, with the
built-in ``default`` model and small mesh settings (``--resolution``, ``--texture-size``,
``--max-faces``). Without GPUs each worker is a one-CPU actor; with GPUs, one GPU each, and
the report is also per GPU. Times are wall clock for the whole batch, worker start-up
(model load) included; the ratio is the speed-up of the most workers over one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from blend123.backend.batch import BatchOptions, run_batch
from blend123.protocol.messages import GenerationSettings

REPO = Path(__file__).resolve().parent.parent


def make_images(folder: Path, count: int) -> list[Path]:
    """The two examples, mirrored and recoloured variants of them: ``count`` distinct images."""
    sources = [Image.open(REPO / "examples" / name).convert("RGBA") for name in ("duck.png", "mug.png")]
    paths = []
    for i in range(count):
        image = sources[i % 2]
        if (i // 2) % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.array(image)
        shift = (i // 4) % 3
        if shift:
            pixels[..., :3] = np.roll(pixels[..., :3], shift, axis=-1)  # another colour
        path = folder / f"image_{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local cluster")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--texture-size", type=int, default=64)
    parser.add_argument("--max-faces", type=int, default=500)
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()

    import ray

    options = BatchOptions(settings=GenerationSettings(resolution=args.resolution), texture_size=args.texture_size, max_faces=args.max_faces)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            images = make_images(Path(tmp), args.images)
            for workers in args.workers:
                summary = run_batch(images, Path(tmp) / f"out_{workers}", options, ray="auto", workers=workers, quiet=True)
                converted = len(summary.of("converted"))
                assert converted == len(images), summary.text()
                per_minute = 60.0 * converted / summary.seconds
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                rows.append({
                    "workers": workers, "images": converted, "seconds": round(summary.seconds, 1), "images_per_minute": round(per_minute, 2),
                    "distinct_worker_processes": len({r.worker for r in summary.records}),
                    # Seconds one image took inside its worker: it grows with the workers when
                    # they have no spare core to run on (a busy or small machine).
                    "mean_seconds_per_image": round(sum(r.seconds for r in summary.records) / converted, 2),
                    "load_average_after": round(load, 2),
                })
                if gpus:
                    rows[-1]["images_per_minute_per_gpu"] = round(per_minute / min(workers, gpus), 2)
                print(
                    f"{workers} worker(s): {converted} images in {summary.seconds:.1f} s = {per_minute:.2f} images/min "
                    f"({rows[-1]['mean_seconds_per_image']:.1f} s per image in a worker; load average {load:.1f})", flush=True,
                )
    finally:
        ray.shutdown()
    ratio = rows[-1]["images_per_minute"] / rows[0]["images_per_minute"]
    print(f"speed-up, {rows[-1]['workers']} workers over {rows[0]['workers']}: {ratio:.2f}x")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores" + (f", {gpus} GPU(s)" if gpus else ""),
        "cluster_cpus": args.cpus, "load_average_before": round(load_before, 2), "settings": {"model": "default", "resolution": args.resolution, "texture_size": args.texture_size, "max_faces": args.max_faces},
        "runs": rows, "speedup": round(ratio, 2), "when": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
