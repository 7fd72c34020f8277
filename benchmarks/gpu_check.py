"""The one prepared device check: everything that needs an NVIDIA GPU, in one unattended run.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check] [--budget-s 480]
    python benchmarks/gpu_check.py --dry-run     # what it would run; works without a GPU

Runs, in order, each step as its own process with what is left of the time budget:

1. the CUDA-marked tests (``pytest -m cuda``): at least one must run and none may skip;
2. ``bench_diffusion.py`` with full-size random weights: Zero123-XL (1 and 4 views, 20 and
   50 DDIM steps) and SV3D-p (21 views, 25 Euler steps), fp16, in each memory mode;
3. ``bench_reconstruction.py --size 576 --device cuda``.

Writes ``gpu_check.json`` (everything) and ``gpu_check.md`` (the table for the README:
time per view, orbit seconds, peak GPU memory per mode against the targets, reconstruction
seconds, torch / CUDA versions, GPU name) to ``--out``. Without CUDA it fails at once, with
what to install; a step that fails, or the budget running out, fails the check (exit 1)
after writing what it has. Needs the environment ``make venv`` builds, with a CUDA build of
PyTorch (``make venv TORCH_INDEX=https://download.pytorch.org/whl/cu128``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check"
BUDGET_S = 480  # the whole check: under 8 minutes on one GPU
MODES = ("full", "balanced", "low")
#: Peak GPU memory targets (GiB, torch's peak allocation during one call).
TARGETS_GIB = {("sv3d-p", "full"): 20.0, ("sv3d-p", "balanced"): 12.0, ("sv3d-p", "low"): 8.0, ("zero123-xl", "low"): 6.0}


@dataclass
class Step:
    name: str
    argv: list[str]
    result: str = ""  # the file the step writes, relative to --out ("" for none)
    share: float = 1.0  # of the budget this step may use at most
    outcome: dict = field(default_factory=dict)

    def command(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


def _rel(path: Path) -> str:
    """Relative to the repository (where the steps run) when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def plan(out: Path, python: str = sys.executable) -> list[Step]:
    """The steps, in order (``--dry-run`` prints exactly these)."""
    rel = _rel

    bench = "benchmarks/bench_diffusion.py"
    return [
        Step("cuda tests", [python, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                            f"--junitxml={rel(out / 'cuda_tests.xml')}", "tests"], "cuda_tests.xml", 0.3),
        Step("zero123-xl", [python, bench, "--models", "zero123", "--views", "1", "4", "--steps", "20", "50",
                            "--memory", *MODES, "--dtype", "float16", "--json", rel(out / "diffusion_zero123.json")],
             "diffusion_zero123.json", 0.4),
        Step("sv3d-p", [python, bench, "--models", "sv3d", "--steps", "25", "--memory", *MODES, "--dtype", "float16",
                        "--json", rel(out / "diffusion_sv3d.json")], "diffusion_sv3d.json", 0.7),
        Step("reconstruction", [python, "benchmarks/bench_reconstruction.py", "--size", "576", "--device", "cuda",
                                "--out", rel(out / "reconstruction.json")], "reconstruction.json", 0.5),
    ]


class CheckFailed(Exception):
    pass


def require_cuda() -> dict:
    """torch / CUDA / GPU facts, or CheckFailed saying what to install."""
    try:
        import torch
    except ImportError as exc:
        raise CheckFailed("PyTorch is not installed here: run `make venv TORCH_INDEX=https://download.pytorch.org/whl/cu128` first") from exc
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
        raise CheckFailed(
            f"CUDA is not available (torch {torch.__version__}, {build}): this check needs an NVIDIA GPU and a CUDA build of "
            "PyTorch. `blend123 doctor` says which build matches the driver; e.g. "
            "`make clean venv TORCH_INDEX=https://download.pytorch.org/whl/cu128`"
        )
    free, total = torch.cuda.mem_get_info()
    return {
        "gpu": torch.cuda.get_device_name(),
        "gpu_total_gib": round(total / 2**30, 1),
        "gpu_free_gib": round(free / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
    }


def run_step(step: Step, out: Path, deadline: float, budget_s: float) -> None:
    left = deadline - time.monotonic()
    limit = min(left, step.share * budget_s)
    if limit <= 5:
        step.outcome = {"ok": False, "error": "no time left in the budget", "seconds": 0.0}
        return
    print(f"\n=== {step.name}: {step.command()}  (at most {limit:.0f} s)", flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(step.argv, cwd=REPO, timeout=limit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log, rc, error = proc.stdout, proc.returncode, ""
    except subprocess.TimeoutExpired as exc:
        log = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, error = -1, f"timed out after {limit:.0f} s"
    seconds = time.monotonic() - start
    print(log[-6000:], flush=True)
    (out / f"{step.name.replace(' ', '_')}.log").write_text(log)
    step.outcome = {"ok": rc == 0 and not error, "rc": rc, "seconds": round(seconds, 1)}
    if error or rc:
        step.outcome["error"] = error or f"exit status {rc}"


def cuda_test_counts(xml_path: Path) -> dict:
    """Counts of the selected tests. A whole module skipped while pytest collects it (the
    Blender and Ray tests where bpy or Ray is not installed, as on a bare GPU machine) is a
    junit entry with no class; it is listed under ``modules_skipped`` by name, not counted
    as a skipped CUDA test (none of those modules holds one: the CUDA tests need neither)."""
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    modules = [case.get("name", "") for case in root.iter("testcase")
               if not case.get("classname") and any(c.tag == "skipped" and c.get("message") == "collection skipped" for c in case)]
    counts["tests"] -= len(modules)
    counts["skipped"] -= len(modules)
    counts["modules_skipped"] = modules
    return counts


def collect(steps: list[Step], out: Path, facts: dict) -> dict:
    report = {"check": "gpu_check", **facts, "steps": [], "diffusion": [], "reconstruction": None, "targets": []}
    for step in steps:
        entry = {"name": step.name, "command": step.command(), **step.outcome}
        path = out / step.result if step.result else None
        if step.name == "cuda tests" and path is not None and path.is_file():
            counts = cuda_test_counts(path)
            entry["tests"] = counts
            if counts["tests"] == 0 or counts["skipped"] or counts["failures"] or counts["errors"]:
                entry["ok"] = False
                shown = {k: v for k, v in counts.items() if k != "modules_skipped"}
                entry["error"] = f"CUDA tests: {shown} (none may skip, at least one must run)"
        elif step.name in ("zero123-xl", "sv3d-p") and path is not None and path.is_file():
            report["diffusion"] += json.loads(path.read_text())["runs"]
        elif step.name == "reconstruction" and path is not None and path.is_file():
            data = json.loads(path.read_text())
            report["reconstruction"] = {k: data.get(k) for k in ("device", "view_size", "views", "total_seconds", "stage_seconds", "f_score", "faces")}
        report["steps"].append(entry)
    for (model, mode), target in TARGETS_GIB.items():
        peaks = [r["peak_vram_gib"] for r in report["diffusion"] if r["model"] == model and r["memory"] == mode]
        if peaks:
            report["targets"].append({"model": model, "memory": mode, "target_gib": target, "peak_gib": max(peaks), "met": max(peaks) < target})
    report["ok"] = all(s.get("ok") for s in report["steps"])
    return report


def markdown(report: dict) -> str:
    lines = [
        f"GPU check on {report['gpu']} ({report['gpu_total_gib']} GiB), torch {report['torch']}, CUDA {report['cuda']}, "
        f"Python {report['python']}; random full-size weights, fp16 (SV3D's VAE in fp32). Peak: torch's peak GPU allocation "
        "during one call (reserved in brackets).",
        "",
        "| model | memory mode | views | steps | seconds | seconds per view | peak GiB | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    targets = {(t["model"], t["memory"]): t for t in report["targets"]}
    for r in report["diffusion"]:
        t = targets.get((r["model"], r["memory"]))
        verdict = f"< {t['target_gib']:g} GiB: {'met' if r['peak_vram_gib'] < t['target_gib'] else 'MISSED'}" if t else ""
        lines.append(f"| {r['model']} | {r['memory']} | {r['views']} | {r['steps']} | {r['seconds']:.2f} | {r['seconds_per_view']:.3f} | "
                     f"{r['peak_vram_gib']:.2f} ({r.get('peak_reserved_gib', 0):.2f}) | {verdict} |")
    rec = report.get("reconstruction")
    if rec:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in (rec.get("stage_seconds") or {}).items())
        lines += ["", f"Reconstruction, {rec['views']} views at {rec['view_size']} px on {rec['device']}: "
                      f"{rec['total_seconds']:.1f} s ({stages})."]
    failed = [s for s in report["steps"] if not s.get("ok")]
    lines += ["", "Steps: " + ", ".join(f"{s['name']} {'ok' if s.get('ok') else 'FAILED'} ({s.get('seconds', 0)} s)" for s in report["steps"])]
    if failed:
        lines += [f"- {s['name']}: {s.get('error', '')}" for s in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole check's time limit, seconds")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and exit (no GPU needed)")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
    steps = plan(out, sys.executable)
    if args.dry_run:
        print(f"gpu_check would run, within {args.budget_s:.0f} s, from the repository root:")
        for i, step in enumerate(steps, 1):
            print(f"{i}. {step.name}: {step.command()}")
        print(f"and write {_rel(out / 'gpu_check.json')} and {_rel(out / 'gpu_check.md')}")
        return 0
    try:
        facts = require_cuda()
    except CheckFailed as exc:
        print(f"gpu_check FAILED: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check on {facts['gpu']}: torch {facts['torch']}, CUDA {facts['cuda']}; budget {args.budget_s:.0f} s", flush=True)
    deadline = time.monotonic() + args.budget_s
    for step in steps:
        run_step(step, out, deadline, args.budget_s)
    report = collect(steps, out, facts)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (out / "gpu_check.md").write_text(table)
    print("\n" + table)
    if not report["ok"]:
        print("gpu_check FAILED: " + "; ".join(f"{s['name']}: {s.get('error', '')}" for s in report["steps"] if not s.get("ok")), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
