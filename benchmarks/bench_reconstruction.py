"""Benchmark the reconstruction's speed on a synthetic orbit (CPU, or CUDA when present).

21 views of the synthetic box-and-sphere -> textured GLB with the default options (light
model on: the refine stage fits the SG light); prints the time per stage, the total, the
F-score against the ground truth, and the xatlas unwrap time against face count. Writes
the numbers as JSON to ``--out``. Quality is measured by ``bench_quality.py``.

    python benchmarks/bench_reconstruction.py [--size 256] [--device auto|cpu|cuda]
        [--threads 2] [--out benchmarks/results/reconstruction.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the test-and-benchmark helpers live here
    sys.path.insert(0, str(REPO))

from benchmarks.quality import synthetic  # noqa: E402
from benchmarks.quality.surface_metrics import bbox_diagonal, f_score, sample_surface  # noqa: E402
from blend123.backend.reconstruction.carve import Silhouettes, carve  # noqa: E402
from blend123.backend.reconstruction.mesh import decimate, extract_surface, largest_component, taubin_smooth  # noqa: E402
from blend123.backend.reconstruction.pipeline import ReconstructionOptions, reconstruct  # noqa: E402
from blend123.backend.reconstruction.refine import resolve_device  # noqa: E402
from blend123.backend.reconstruction.uv import unwrap  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "reconstruction.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="view resolution in pixels (square)")
    parser.add_argument("--views", type=int, default=21)
    parser.add_argument("--unwrap-faces", type=int, nargs="*", default=[5_000, 20_000, 50_000])
    parser.add_argument("--uncapped", action="store_true", help="also time xatlas without the chart-area cap (slow)")
    parser.add_argument("--device", default="auto", help="torch device of the refine stage")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    scene = synthetic.make_scene(size=args.size, views=args.views)
    render_s = time.perf_counter() - start
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    options = ReconstructionOptions(device=args.device)
    device = str(resolve_device(args.device))
    print(f"refine stage on {device}, {torch.get_num_threads()} CPU threads")
    print(f"rendered {args.views} views at {args.size}px in {render_s:.2f} s")

    start = time.perf_counter()
    result = reconstruct(scene.images, scene.c2w, scene.camera_angle_x, options)
    total = time.perf_counter() - start
    for stage, seconds in result.stage_seconds.items():
        print(f"  {stage:8s} {seconds:7.2f} s")
    sizes = f"{len(result.faces)} faces, {len(result.vertices)} vertices, GLB {len(result.glb) / 1e6:.1f} MB"
    print(f"  {'total':8s} {total:7.2f} s  ({sizes})")

    truth = scene.surface_points(100_000)
    predicted = sample_surface(result.vertices, result.faces, 100_000)
    diagonal = bbox_diagonal(truth)
    scores = {f"{p}%": asdict(f_score(predicted, truth, p / 100 * diagonal)) for p in (1, 2)}
    print("  F-score " + ", ".join(f"{k}: {v['f']:.3f}" for k, v in scores.items()))

    unwrap_rows = _unwrap_timings(scene, options, args.unwrap_faces, args.uncapped)

    report = {
        "benchmark": "reconstruction",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "views": args.views,
        "view_size": args.size,
        "options": asdict(options),
        "render_seconds": render_s,
        "stage_seconds": result.stage_seconds,
        "total_seconds": total,
        "faces": len(result.faces),
        "vertices": len(result.vertices),
        "glb_bytes": len(result.glb),
        "f_score": scores,
        "unwrap": unwrap_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {_portable(args.out)}")
    return report


def _portable(path: Path) -> str:
    """The output path relative to the repository when inside it (no machine paths in logs)."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return path.name


def _unwrap_timings(scene, options: ReconstructionOptions, counts: list[int], uncapped: bool) -> list[dict]:
    """xatlas time against face count, on the scene's own hull decimated to each count."""
    masks = scene.images[..., 3] > options.alpha_threshold
    silhouettes = Silhouettes.from_masks(masks, scene.c2w, scene.camera_angle_x)
    vertices, faces = extract_surface(carve(silhouettes, 192), options.field_smoothing)
    vertices, faces = largest_component(vertices, faces)
    vertices = taubin_smooth(vertices, faces, options.smoothing_iterations)
    rows = []
    caps = [options.max_chart_area_fraction] + ([0.0] if uncapped else [])
    print(f"xatlas unwrap ({len(faces)} marching-cubes faces before decimation):")
    for count in counts:
        v, f = decimate(vertices, faces, count)
        for cap in caps:
            start = time.perf_counter()
            uv_mesh = unwrap(v, f, options.texture_size, options.uv_padding, cap)
            seconds = time.perf_counter() - start
            rows.append({"faces": int(len(f)), "max_chart_area_fraction": cap, "seconds": seconds})
            split = len(uv_mesh.vertices) / len(v)
            print(f"  {len(f):6d} faces, chart cap {cap:<5}: {seconds:6.2f} s  (vertices x{split:.2f} after seams)")
    return rows


if __name__ == "__main__":
    main()
