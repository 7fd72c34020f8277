"""Time one quick-proxy view of a large photo: the subject mask must not run at full size.

    python benchmarks/bench_large_photo.py [--side 4000] [--out benchmarks/results/large_photo.json]

The photo is examples/duck.png composited on a plain, slightly noisy background and
scaled up to ``--side`` x ``--side`` pixels, with no alpha (as a camera writes it), so the
mask comes from keying the border colour. Reports the subject mask alone and one view from
a cold start (mask, framing, proxy build and render).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from blend123.backend.images import MASK_MAX_SIDE, load_rgba, subject_mask
from blend123.backend.synthesis.proxy import ProxyViewSynthesizer
from blend123.protocol.camera import SphericalPose, world_azimuth

REPO = Path(__file__).resolve().parent.parent


def large_photo(side: int) -> np.ndarray:
    duck = load_rgba(REPO / "examples" / "duck.png")
    alpha = duck[:, :, 3:].astype(np.float32) / 255.0
    rgb = duck[:, :, :3] * alpha + 238.0 * (1.0 - alpha)
    big = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    big += np.random.default_rng(0).normal(0.0, 2.0, big.shape).astype(np.float32)  # sensor noise
    return np.clip(big, 0, 255).astype(np.uint8)


def one_view(photo: np.ndarray, pose: SphericalPose, reference: SphericalPose, resolution: int) -> np.ndarray:
    from blend123.backend.synthesis.registry import SynthesisRequest
    from blend123.protocol.camera import DEFAULT_FOV_DEG, CameraIntrinsics

    camera = CameraIntrinsics.square(DEFAULT_FOV_DEG, resolution)
    request = SynthesisRequest(photo, [pose], reference, DEFAULT_FOV_DEG, camera)
    return ProxyViewSynthesizer()(request)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(side: int, resolution: int = 256) -> dict:
    photo = large_photo(side)
    mask_s = timed(lambda: subject_mask(photo))
    pose = SphericalPose(8.0, world_azimuth(90.0))
    reference = SphericalPose(8.0, world_azimuth(0.0))
    view_s = timed(lambda: one_view(photo, pose, reference, resolution))
    return {
        "benchmark": "one proxy view of a large photo (no alpha, plain background)",
        "side_px": side,
        "mask_max_side_px": MASK_MAX_SIDE,
        "resolution": resolution,
        "subject_mask_s": round(mask_s, 3),
        "one_view_cold_s": round(view_s, 3),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4000)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.side, args.resolution)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
