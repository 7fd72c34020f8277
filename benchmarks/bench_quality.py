"""Quality benchmark: reconstruct Blender-rendered objects with known truth and score them.

For each object (``benchmarks/quality/scenes.py``): render it with Cycles if not cached
(``build/quality/``), reconstruct from its 21-view input orbit, then score geometry
(Chamfer-L1, F-score at 1% and 2% of the diagonal, volume IoU), held-out views (PSNR,
SSIM) and albedo (error against Cycles' diffuse-colour pass after one global scale).
With a light model (``ReconstructionOptions.light_model``), the same pipeline runs a
second time with it off (the "baked" albedo) and the albedo error cut is reported.
Prints a markdown table per object plus the mean and writes everything as JSON.

    python benchmarks/bench_quality.py [--objects all|seen|unseen|name,...]
        [--pipeline baseline|full] [--option key=value ...] [--variant clean|degraded|both]
        [--out benchmarks/results/quality.json]

``--variant degraded`` reconstructs from the renders made into what view-synthesis models
hand over (``quality/degrade.py``: RGB on white without alpha, per-view exposure and white
balance drift, noise, 1-2 px shifts), read through ``load_transforms``; ``both`` runs clean
and degraded and reports the loss of mean F@1%. "views PSNR" is the shaded input views
themselves scored as albedo: the level the de-lit texture has to beat.

``baseline``: the pipeline with the light model off (if it has one); ``full``: its
defaults with the light model on. Tune on ``seen`` objects only; ``unseen`` ones (other
shapes and lighting) are for the final numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality import metrics, render, scenes  # noqa: E402
from benchmarks.quality.dataset import EvalObject  # noqa: E402
from blend123.backend.reconstruction.carve import Silhouettes, carve  # noqa: E402
from blend123.backend.reconstruction.mesh import extract_surface  # noqa: E402
from blend123.backend.reconstruction.pipeline import ReconstructionOptions, reconstruct, views_with_a_subject  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "quality.json"
TARGETS = {"f2": 0.90, "psnr": 26.0, "albedo_cut": 0.40}
#: Largest loss of mean F@1% from clean alpha to the degraded (generated-like) views.
DEGRADED_F1_LOSS = 0.03


# --- running the pipeline -------------------------------------------------------------------


def make_options(pipeline: str, overrides: dict[str, str], light_model: bool | None = None) -> ReconstructionOptions:
    """Options for ``pipeline`` with ``key=value`` overrides (typed after the defaults)."""
    options = ReconstructionOptions()
    fields = {f.name for f in dataclasses.fields(options)}
    for key, text in overrides.items():
        if key not in fields:
            raise SystemExit(f"--option {key}: ReconstructionOptions has no such field ({', '.join(sorted(fields))})")
        default = getattr(options, key)
        value = text.lower() in ("1", "true", "yes", "on") if isinstance(default, bool) else type(default)(text)
        setattr(options, key, value)
    if getattr(options, "light_model", None) is not None:
        if light_model is None:
            light_model = pipeline == "full"
        options.light_model = light_model
    return options


def has_light_model(options: ReconstructionOptions) -> bool:
    return getattr(options, "light_model", None) is not None


def input_views(obj: EvalObject, views=None):
    """(images, c2w, camera_angle_x) to reconstruct ``obj`` from: ``views`` (a degraded
    variant), else its clean input views."""
    return views if views is not None else (obj.input.images, obj.input.c2w, obj.input.camera_angle_x)


def run_pipeline(obj: EvalObject, options: ReconstructionOptions, views=None):
    """Reconstruct ``obj`` from :func:`input_views`; scoring always uses the clean truth."""
    images, c2w, angle = input_views(obj, views)
    start = time.perf_counter()
    result = reconstruct(images, c2w, angle, options)
    return result, time.perf_counter() - start


def visual_hull(options: ReconstructionOptions, views) -> tuple[np.ndarray, np.ndarray]:
    """The visual hull alone of ``views`` = (images, c2w, camera_angle_x): their masks carved
    on the pipeline's grid, its surface as extracted before any carving by colour,
    decimation or smoothing. The floor a reconstruction must not fall below in F-score:
    one that does has eroded what the masks alone keep (a table's legs, a handle)."""
    images, c2w, angle = views
    images, c2w = views_with_a_subject(images, c2w, options.alpha_threshold)
    grid = carve(Silhouettes.from_alpha(images[..., 3], options.alpha_threshold, c2w, angle), options.grid_resolution)
    return extract_surface(grid, options.field_smoothing)


def degraded_views(folder: Path):
    """The object's degraded input (``quality/degrade.py``: RGB on white, exposure and white
    balance drift, noise, 1-2 px shifts), read through the loader a user's dataset goes
    through (``load_transforms``: subject keyed out of the white background)."""
    from benchmarks.quality.degrade import write_degraded
    from blend123.backend.reconstruction.transforms import load_transforms

    return load_transforms(write_degraded(folder))


# --- scoring -------------------------------------------------------------------------------------


def score_albedo(mesh: metrics.TexturedMesh, obj: EvalObject, supersample: int) -> metrics.AlbedoScores:
    """Unlit texture against the diffuse-colour pass over the input and held-out views."""
    predicted, coverage, truth = [], [], []
    for views in (obj.input, obj.heldout):
        for c2w, albedo in zip(views.c2w, views.albedo):
            view = metrics.render_view(mesh, c2w, views.camera_angle_x, views.size, supersample)
            predicted.append(view.straight_albedo())
            coverage.append(view.coverage)
            truth.append(albedo)
    return metrics.albedo_error(predicted, coverage, truth)


def _images_as_albedo(images, albedo) -> metrics.AlbedoScores:
    """RGBA ``images`` scored as if their colour were the albedo (alpha as coverage)."""
    predicted = [image[..., :3].astype(np.float64) / 255.0 for image in images]
    coverage = [image[..., 3].astype(np.float64) / 255.0 for image in images]
    return metrics.albedo_error(predicted, coverage, list(albedo))


def score_views_as_albedo(obj: EvalObject) -> metrics.AlbedoScores:
    """The shaded views themselves taken as albedo (same pixels, same scale fit): the level
    a de-lit texture must beat to hold more albedo than the views it came from."""
    return _images_as_albedo([*obj.input.images, *obj.heldout.images], [*obj.input.albedo, *obj.heldout.albedo])


def score_given_views_as_albedo(obj: EvalObject, views) -> metrics.AlbedoScores:
    """The input views the reconstruction was given (``views``: the degraded ones, else the
    clean renders) taken as albedo over the input poses: what the texture starts from. A
    degraded view's subject is off by its 1-2 px shift, which a fine pattern pays for."""
    return _images_as_albedo(obj.input.images if views is None else views[0], obj.input.albedo)


def evaluate(obj: EvalObject, result, supersample: int) -> dict:
    """Every score of one reconstruction of ``obj``."""
    geometry = metrics.geometry_scores(result.vertices, result.faces, obj.vertices, obj.faces)
    mesh = metrics.TexturedMesh.from_result(result)
    views = []
    for c2w, truth in zip(obj.heldout.c2w, obj.heldout.images):
        render_ = metrics.render_view(mesh, c2w, obj.heldout.camera_angle_x, obj.heldout.size, supersample)
        views.append(dataclasses.asdict(metrics.appearance_scores(render_, truth)))
    albedo = score_albedo(mesh, obj, supersample)
    return {
        "geometry": {
            "chamfer_l1": geometry.chamfer_l1,
            "f1": geometry.f1.f,
            "precision1": geometry.f1.precision,
            "recall1": geometry.f1.recall,
            "f2": geometry.f2.f,
            "precision2": geometry.f2.precision,
            "recall2": geometry.f2.recall,
            "volume_iou": geometry.volume_iou,
            "diagonal": geometry.diagonal,
        },
        "appearance": {key: float(np.mean([v[key] for v in views])) for key in views[0]} | {"views": views},
        "albedo": dataclasses.asdict(albedo),
        "views_as_albedo": dataclasses.asdict(score_views_as_albedo(obj)),
    }


def evaluate_object(
    obj: EvalObject, options: ReconstructionOptions, compare_baked: bool, supersample: int, views=None, variant: str = "clean"
) -> dict:
    result, seconds = run_pipeline(obj, options, views)
    start = time.perf_counter()
    record = {"object": obj.name, "variant": variant, "seen": obj.name in {s.name for s in scenes.SEEN}}
    record |= evaluate(obj, result, supersample)
    record["given_views_as_albedo"] = dataclasses.asdict(score_given_views_as_albedo(obj, views))
    hull = metrics.geometry_scores(*visual_hull(options, input_views(obj, views)), obj.vertices, obj.faces)
    record["hull"] = {"f1": hull.f1.f, "f2": hull.f2.f}
    record |= {
        "reconstruct_seconds": seconds,
        "stage_seconds": result.stage_seconds,
        "faces": int(len(result.faces)),
        "light": result.light is not None,
        "gt_watertight": _watertight(obj),
        "albedo_baked": None,
        "albedo_cut": None,
    }
    if compare_baked:
        baked, baked_seconds = run_pipeline(obj, dataclasses.replace(options, light_model=False), views)
        scores = score_albedo(metrics.TexturedMesh.from_result(baked), obj, supersample)
        record["albedo_baked"] = dataclasses.asdict(scores)
        record["albedo_cut"] = 1.0 - record["albedo"]["mae"] / scores.mae
        record["reconstruct_seconds"] += baked_seconds
    record["evaluate_seconds"] = time.perf_counter() - start
    return record


def _watertight(obj: EvalObject) -> bool:
    import trimesh

    return bool(trimesh.Trimesh(obj.vertices, obj.faces, process=True).is_watertight)


# --- reporting ----------------------------------------------------------------------------------

COLUMNS = [
    ("object", "object", "{}"),
    ("CD-L1", ("geometry", "chamfer_l1"), "{:.4f}"),
    ("F@1%", ("geometry", "f1"), "{:.3f}"),
    ("F@2%", ("geometry", "f2"), "{:.3f}"),
    ("hull F@1%", ("hull", "f1"), "{:.3f}"),
    ("hull F@2%", ("hull", "f2"), "{:.3f}"),
    ("vIoU", ("geometry", "volume_iou"), "{:.3f}"),
    ("PSNR", ("appearance", "psnr"), "{:.2f}"),
    ("SSIM", ("appearance", "ssim"), "{:.3f}"),
    ("PSNR obj", ("appearance", "psnr_object"), "{:.2f}"),
    ("albedo MAE", ("albedo", "mae"), "{:.4f}"),
    ("albedo PSNR", ("albedo", "psnr"), "{:.2f}"),
    ("views PSNR", ("views_as_albedo", "psnr"), "{:.2f}"),
    ("given views PSNR", ("given_views_as_albedo", "psnr"), "{:.2f}"),
    ("baked MAE", ("albedo_baked", "mae"), "{:.4f}"),
    ("cut", "albedo_cut", "{:.0%}"),
    ("time s", "reconstruct_seconds", "{:.1f}"),
]


def _get(record: dict, key):
    if isinstance(key, tuple):
        outer = record.get(key[0])
        return None if outer is None else outer.get(key[1])
    return record.get(key)


def mean_record(records: list[dict]) -> dict:
    """Means of every column over the objects (None where any object lacks it)."""
    mean: dict = {"object": "**mean**"}
    for _, key, _ in COLUMNS[1:]:
        values = [_get(r, key) for r in records]
        value = None if any(v is None for v in values) else float(np.mean(values))
        if isinstance(key, tuple):
            mean.setdefault(key[0], {})[key[1]] = value
        else:
            mean[key] = value
    if all(r["albedo_baked"] for r in records):  # the cut of the mean error, not the mean cut
        mean["albedo_cut"] = 1.0 - mean["albedo"]["mae"] / mean["albedo_baked"]["mae"]
    return mean


def markdown(records: list[dict], mean: dict) -> str:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for record in records + [mean]:
        cells = []
        for _, key, fmt in COLUMNS:
            value = _get(record, key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append("n/a" if missing else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(mean: dict) -> list[str]:
    f2, psnr, cut = mean["geometry"]["f2"], mean["appearance"]["psnr"], mean["albedo_cut"]

    def verdict(value, target):
        return "pass" if value >= target else "FAIL"

    lines = [
        f"mean F@2% {f2:.3f} (target >= {TARGETS['f2']:.2f}): {verdict(f2, TARGETS['f2'])}",
        f"mean held-out PSNR {psnr:.2f} dB (target >= {TARGETS['psnr']:.0f}): {verdict(psnr, TARGETS['psnr'])}",
    ]
    if cut is None:
        lines.append("albedo error cut by the light model: n/a (no run with it off: --no-compare, or a pipeline without one)")
    else:
        target = TARGETS["albedo_cut"]
        lines.append(f"albedo error cut by the light model {cut:.0%} (target >= {target:.0%}): {verdict(cut, target)}")
    return lines


def hull_lines(clean: list[dict], degraded: list[dict]) -> list[str]:
    """The objects whose reconstruction ends below a visual hull in F@1%: the clean ones
    below their own; the degraded ones below the hull of their misaligned masks (whose
    random 1-2 px shifts erode it, a tighter floor than the object's) and below the hull of
    the object's true silhouettes (the clean views')."""

    def below(records: list[dict], floor: dict[str, float]) -> str:
        names = [f"{r['object']} ({r['geometry']['f1']:.3f} < {floor[r['object']]:.3f})" for r in records if r["object"] in floor and r["geometry"]["f1"] < floor[r["object"]]]
        return ", ".join(names) or "none"

    lines = []
    if clean:
        named = below(clean, {r["object"]: r["hull"]["f1"] for r in clean})
        lines.append(f"clean: below their own visual hull in F@1%: {named} (target: none): {'pass' if named == 'none' else 'FAIL'}")
    if degraded:
        lines.append(f"degraded: below the hull of their own masks: {below(degraded, {r['object']: r['hull']['f1'] for r in degraded})}")
    if clean and degraded:
        lines.append(f"degraded: below the hull of the true silhouettes: {below(degraded, {r['object']: r['hull']['f1'] for r in clean})}")
    return lines


def _portable(path: Path) -> str:
    """A path for the report: relative to the repository, or just its name (no machine paths)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", default="all", help="all, seen, unseen, or comma-separated names")
    parser.add_argument("--pipeline", choices=("baseline", "full"), default="baseline")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="set a ReconstructionOptions field"
    )
    parser.add_argument("--no-compare", action="store_true", help="skip the light-model-off run")
    parser.add_argument(
        "--variant",
        choices=("clean", "degraded", "both"),
        default="clean",
        help="reconstruct from the clean RGBA renders, from their degraded RGB-on-white variant, or both",
    )
    parser.add_argument("--root", type=Path, default=render.DEFAULT_ROOT, help="render cache")
    parser.add_argument("--render-threads", type=int, default=render.RenderSettings.threads)
    parser.add_argument("--supersample", type=int, default=2, help="rasteriser supersampling for scoring renders")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    try:
        specs = scenes.select(args.objects)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    overrides = dict(item.split("=", 1) for item in args.option)
    options = make_options(args.pipeline, overrides)
    compare = has_light_model(options) and options.light_model and not args.no_compare

    settings = dataclasses.replace(render.RenderSettings(), threads=args.render_threads)
    render_seconds = render.ensure_rendered([s.name for s in specs], args.root, settings)
    print(f"renders ready ({render_seconds:.0f} s spent rendering)" if render_seconds else "renders cached")

    variants = ("clean", "degraded") if args.variant == "both" else (args.variant,)
    records, degraded = [], []
    for spec in specs:
        obj = EvalObject.load(args.root / spec.name)
        for variant in variants:
            views = degraded_views(args.root / spec.name) if variant == "degraded" else None
            record = evaluate_object(obj, options, compare, args.supersample, views, variant)
            (degraded if variant == "degraded" else records).append(record)
            g, a = record["geometry"], record["appearance"]
            print(
                f"{spec.name:8s} {variant:8s} F@1% {g['f1']:.3f}  F@2% {g['f2']:.3f}  vIoU {g['volume_iou']:.3f}  "
                f"PSNR {a['psnr']:.2f}  albedo PSNR {record['albedo']['psnr']:.2f} (views as albedo "
                f"{record['views_as_albedo']['psnr']:.2f}, the views given {record['given_views_as_albedo']['psnr']:.2f})  ({record['reconstruct_seconds']:.1f} s + "
                f"{record['evaluate_seconds']:.1f} s scoring)",
                flush=True,
            )
    hull_report = hull_lines(records, degraded)  # before a degraded-only run takes the main table
    if not records:  # degraded only: report it as the main table
        records, degraded = degraded, []

    groups = {"all": records}
    if len(records) > 1:
        groups |= {"seen": [r for r in records if r["seen"]], "unseen": [r for r in records if not r["seen"]]}
    means = {name: mean_record(group) for name, group in groups.items() if group}
    print()
    print(markdown(records, means["all"]))
    for name in ("seen", "unseen"):
        if name in means and len(groups[name]) < len(records):
            print(f"\nmean over {name} objects:")
            print(markdown([], means[name] | {"object": f"**{name}**"}))
    if degraded:
        means["degraded"] = mean_record(degraded)
        print("\ndegraded views (RGB on white, exposure/white-balance drift, noise, 1-2 px shifts):")
        print(markdown(degraded, means["degraded"]))
        clean_f1, degraded_f1 = means["all"]["geometry"]["f1"], means["degraded"]["geometry"]["f1"]
        loss = clean_f1 - degraded_f1
        print(
            f"\nmean F@1%: clean alpha {clean_f1:.3f}, degraded {degraded_f1:.3f}: loss {loss:.3f} "
            f"(target <= {DEGRADED_F1_LOSS:.2f}): {'pass' if loss <= DEGRADED_F1_LOSS else 'FAIL'}"
        )
    print()
    for line in target_lines(means["all"]):
        print(line)
    beaten = [r["object"] for r in records if r["albedo"]["psnr"] > r["views_as_albedo"]["psnr"]]
    print(f"albedo closer to the truth than the shaded views: {len(beaten)} of {len(records)} objects")
    for line in hull_report:
        print(line)

    report = {
        "benchmark": "quality",
        "pipeline": args.pipeline,
        "options": dataclasses.asdict(options),
        "light_model": getattr(options, "light_model", None),
        "objects": [s.describe() | {"seen": s in scenes.SEEN} for s in specs],
        "render": dataclasses.asdict(settings) | {"cache": _portable(args.root), "seconds_this_run": render_seconds},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "results": records,
        "degraded_results": degraded,
        "mean": means,
        "targets": TARGETS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {_portable(args.out)}")
    return report


if __name__ == "__main__":
    main()
