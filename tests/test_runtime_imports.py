"""Build-time code stays out of run time.

``simulators/build_psf.py``, ``simulators/tables/build.py`` and ``simulators/tables/sedfit.py``
derive the shipped tables; the last two need packages installed only for building them. The
run-time modules must not import any of them, neither when they are imported nor when a
simulator is built and run (the PSF model a simulator needs lives in ``simulators/psf_optics.py``).
Checked in a fresh interpreter, whose ``sys.modules`` starts clean.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TIME = [
    "sbicluster.cli",
    "sbicluster.api",
    "sbicluster.inference",
    "sbicluster.training",
    "sbicluster.diagnostics",
    "simulators.cluster",
]
BUILD_TIME = ["simulators.build_psf", "simulators.tables.build", "simulators.tables.sedfit"]


def _loaded_after(code: str) -> list[str]:
    """Build-time modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps([m for m in {BUILD_TIME!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_run_time_modules_imports_no_build_time_code():
    assert _loaded_after("\n".join(f"import {m}" for m in RUN_TIME)) == []


def test_simulating_needs_no_build_time_code():
    code = (
        "import torch\n"
        "from simulators.cluster import ClusterSimulator\n"
        "ClusterSimulator('m83-wfc3').simulate(2, torch.Generator().manual_seed(0))"
    )
    assert _loaded_after(code) == []
