"""benchmarks/gpu_check.py stays runnable without a GPU: --dry-run lists exactly its steps,
each a command its script accepts; without CUDA the real run fails loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu_check  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/gpu_check.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_dry_run_lists_exactly_the_steps(tmp_path):
    proc = _run("--dry-run", "--out", str(tmp_path / "check"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    steps = gpu_check.plan(tmp_path / "check", sys.executable)
    assert lines[1:-1] == [f"{i}. {s.name}: {s.command()}" for i, s in enumerate(steps, 1)]
    assert "within 480 s" in lines[0] and lines[-1].endswith("gpu_check.md")
    names = [s.name for s in steps]
    assert names == ["cuda tests", "zero123-xl", "sv3d-p", "reconstruction"]
    tests, zero, sv3d, recon = (s.argv for s in steps)
    assert tests[1:5] == ["-m", "pytest", "-m", "cuda"]
    assert recon[1:] [:5] == ["benchmarks/bench_reconstruction.py", "--size", "576", "--device", "cuda"]
    # The diffusion steps parse with the benchmark's own parser: every mode, 1 and 4 views, SV3D-p.
    from benchmarks.bench_diffusion import build_parser

    z = build_parser().parse_args(zero[2:])
    s = build_parser().parse_args(sv3d[2:])
    assert z.models == ["zero123"] and z.views == [1, 4] and z.memory == ["full", "balanced", "low"] and z.dtype == "float16"
    assert s.models == ["sv3d"] and s.memory == ["full", "balanced", "low"] and s.steps == [25]


def test_the_steps_only_use_options_the_scripts_have():
    help_text = subprocess.run([sys.executable, "benchmarks/bench_reconstruction.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    for option in ("--size", "--device", "--out"):
        assert option in help_text
    from tests.test_memory_modes import test_cuda_modes_agree_and_low_offloads as cuda_test

    assert any(m.name == "cuda" for m in cuda_test.pytestmark)  # `-m cuda` selects something


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without CUDA")
def test_without_cuda_it_fails_loudly(tmp_path):
    proc = _run("--out", str(tmp_path / "check"))
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "TORCH_INDEX=" in proc.stderr
    assert not (tmp_path / "check").exists()  # nothing half-written


def test_report_and_table_from_step_results(tmp_path):
    """The JSON and the markdown from (recorded) step outputs: targets judged per mode."""
    import json

    out = tmp_path / "check"
    out.mkdir()
    steps = gpu_check.plan(out)
    (out / "cuda_tests.xml").write_text('<testsuites><testsuite tests="3" failures="0" errors="0" skipped="0"/></testsuites>')
    runs = [{"model": "sv3d-p", "memory": m, "size": 576, "steps": 25, "views": 21, "seconds": 30.0, "seconds_per_view": 1.43,
             "peak_vram_gib": p, "peak_reserved_gib": p + 1} for m, p in (("full", 15.0), ("balanced", 12.5), ("low", 7.0))]
    (out / "diffusion_sv3d.json").write_text(json.dumps({"runs": runs}))
    for step in steps:
        step.outcome = {"ok": True, "rc": 0, "seconds": 1.0}
    steps[1].outcome = {"ok": False, "rc": 1, "seconds": 1.0, "error": "exit status 1"}
    facts = {"gpu": "Test GPU", "gpu_total_gib": 24.0, "gpu_free_gib": 23.0, "torch": "2.13.0", "cuda": "12.8", "cudnn": 1, "python": "3.11"}
    report = gpu_check.collect(steps, out, facts)
    assert not report["ok"]
    met = {(t["model"], t["memory"]): t["met"] for t in report["targets"]}
    assert met == {("sv3d-p", "full"): True, ("sv3d-p", "balanced"): False, ("sv3d-p", "low"): True}
    table = gpu_check.markdown(report)
    assert "| sv3d-p | balanced | 21 | 25 | 30.00 | 1.430 | 12.50 (13.50) | < 12 GiB: MISSED |" in table
    assert "zero123-xl FAILED" in table and "Test GPU" in table
    (out / "cuda_tests.xml").write_text('<testsuites><testsuite tests="3" failures="0" errors="0" skipped="3"/></testsuites>')
    assert not gpu_check.collect(steps, out, facts)["steps"][0]["ok"]  # skipped CUDA tests fail the check


def _junit(cases: str, tests: int, skipped: int) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" '
            f'failures="0" skipped="{skipped}" tests="{tests}">{cases}</testsuite></testsuites>')


def test_modules_skipped_at_collection_are_not_skipped_cuda_tests(tmp_path):
    """As the GPU machine reported it: bpy and Ray are not installed there, so pytest skips
    those modules while collecting, and junit counts them as skipped tests; the CUDA tests
    all ran. The check passes and names the modules; a skipped CUDA test still fails it."""
    out = tmp_path / "check"
    out.mkdir()
    module = ('<testcase classname="" name="tests.blender.test_addon" time="0.000"><skipped message="collection skipped">'
              "(&apos;tests/blender/test_addon.py&apos;, 12, &quot;Skipped: could not import &apos;bpy&apos;&quot;)</skipped></testcase>")
    ran = '<testcase classname="tests.test_memory_modes" name="test_cuda_sv3d_low_mode_matches_full" time="2.6"/>'
    skipped_cuda = ('<testcase classname="tests.test_memory_modes" name="test_cuda_modes_agree" time="0.0">'
                    '<skipped type="pytest.skip" message="needs an NVIDIA GPU">needs an NVIDIA GPU</skipped></testcase>')
    (out / "cuda_tests.xml").write_text(_junit(module + ran, tests=2, skipped=1))
    counts = gpu_check.cuda_test_counts(out / "cuda_tests.xml")
    assert counts == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0, "modules_skipped": ["tests.blender.test_addon"]}
    steps = gpu_check.plan(out)
    for step in steps:
        step.outcome = {"ok": True, "rc": 0, "seconds": 1.0}
    facts = {"gpu": "Test GPU", "gpu_total_gib": 24.0, "gpu_free_gib": 23.0, "torch": "2.13.0", "cuda": "12.8", "cudnn": 1, "python": "3.11"}
    assert gpu_check.collect(steps, out, facts)["steps"][0]["ok"]
    (out / "cuda_tests.xml").write_text(_junit(module + ran + skipped_cuda, tests=3, skipped=2))
    entry = gpu_check.collect(steps, out, facts)["steps"][0]
    assert not entry["ok"] and "'skipped': 1" in entry["error"]
    (out / "cuda_tests.xml").write_text(_junit(module, tests=1, skipped=1))
    assert not gpu_check.collect(steps, out, facts)["steps"][0]["ok"]  # nothing ran: no CUDA test at all
