"""Time the built-in "default" model (quick proxy, geometric, not diffusion) on the CPU.

    python benchmarks/bench_proxy.py [--image examples/duck.png] [--out benchmarks/results/proxy.json]

Reports the one-off proxy build, the time per rendered view with the proxy cached, and a
21-view orbit from a cold start (build included) and warm. Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from blend123.backend.images import load_rgba
from blend123.backend.synthesis.proxy import ProxyViewSynthesizer
from blend123.backend.synthesis.registry import SynthesisRequest
from blend123.protocol.camera import DEFAULT_FOV_DEG, ORBIT_VIEWS, CameraIntrinsics, SphericalPose, orbit_relative_azimuths, world_azimuth

REPO = Path(__file__).resolve().parent.parent
ELEVATION_DEG = 8.0  # the examples' camera height


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(image_path: Path, resolution: int = 256, repeats: int = 5) -> dict:
    image = load_rgba(image_path)
    reference = SphericalPose(ELEVATION_DEG, world_azimuth(0.0))
    orbit = [SphericalPose(ELEVATION_DEG, world_azimuth(a)) for a in orbit_relative_azimuths(ORBIT_VIEWS)]
    camera = CameraIntrinsics.square(DEFAULT_FOV_DEG, resolution)

    def request(poses) -> SynthesisRequest:
        return SynthesisRequest(image, poses, reference, DEFAULT_FOV_DEG, camera)

    def cold_orbit() -> None:
        ProxyViewSynthesizer()(request(orbit))

    cold = [timed(cold_orbit) for _ in range(repeats)]
    warm_model = ProxyViewSynthesizer()
    build = timed(lambda: warm_model(request([])))  # builds and caches the proxy only
    warm = [timed(lambda: warm_model(request(orbit))) for _ in range(repeats)]
    spread = orbit[:: max(1, ORBIT_VIEWS // repeats)]  # a few different azimuths
    single = [timed(lambda p=p: warm_model(request([p]))) for p in spread]
    return {
        "benchmark": "proxy view synthesis",
        "model": ProxyViewSynthesizer.name,
        "description": ProxyViewSynthesizer.description,
        "image": _display_path(image_path),
        "resolution": resolution,
        "orbit_views": ORBIT_VIEWS,
        "elevation_deg": ELEVATION_DEG,
        "repeats": repeats,
        "build_s": build,
        "per_view_s": statistics.median(single),
        "per_view_in_orbit_s": statistics.median(warm) / ORBIT_VIEWS,
        "orbit_cold_s": statistics.median(cold),
        "orbit_warm_s": statistics.median(warm),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }


def _display_path(path: Path) -> str:
    """Repository-relative when possible: results never record this machine's folders."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.name


def markdown(result: dict) -> str:
    return "\n".join(
        [
            "| model | view size | proxy build | per view | 21-view orbit, cold | 21-view orbit, warm |",
            "|---|---|---|---|---|---|",
            f"| `{result['model']}` ({result['description']}) | {result['resolution']} px "
            f"| {result['build_s']:.2f} s | {1000 * result['per_view_s']:.0f} ms "
            f"| {result['orbit_cold_s']:.2f} s | {result['orbit_warm_s']:.2f} s |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "duck.png")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "proxy.json")
    args = parser.parse_args()
    result = run(args.image, args.resolution, args.repeats)
    print(markdown(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {_display_path(args.out)}")


if __name__ == "__main__":
    main()
