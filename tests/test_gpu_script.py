"""``benchmarks/gpu.sh``, the one-command GPU measurement, in its CPU check form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.records import results_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(ROOT)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900
    )


def test_results_of_a_gpu_run_do_not_replace_the_cpu_results():
    assert results_name("inference", "cpu") == "inference"
    assert results_name("inference", None) == "inference"
    assert results_name("inference", "cuda:0") == "inference_cuda"


def test_unknown_argument_is_refused_in_one_line_before_any_work(tmp_path):
    run = _run("--frobnicate", "--results-dir", str(tmp_path / "r"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "unknown argument --frobnicate" in run.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_quick_cpu_form_measures_every_step_and_writes_elsewhere(tmp_path):
    """The three benchmarks run end to end and write positive rates, into --results-dir only."""
    committed = {p: p.stat().st_mtime for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    run = _run("--device", "cpu", "--quick", "--results-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    simulator = json.loads((tmp_path / "simulator.json").read_text())
    training = json.loads((tmp_path / "training_speed.json").read_text())
    inference = json.loads((tmp_path / "inference.json").read_text())
    assert simulator["prior_draws"]["cutouts_per_s_median"] > 0
    for embedding in ("cpu", "paper"):
        step = training["bank"][embedding]["float32"]
        assert step["samples_per_s"] > 0 and math.isfinite(step["total_loss"])
    assert training["online"]["samples_per_s"] > 0
    assert inference["predict_8_views_cutouts_per_s"] > 0
    assert inference["memory_run"]["all_draws_inside_prior"]
    for name in ("simulator", "training_speed", "inference"):
        assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    after = {p: p.stat().st_mtime for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert after == committed
