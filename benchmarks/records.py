"""Machine, device and software facts recorded beside every benchmark result, and the writer of
the results files (``benchmarks/results/<name>.json`` and ``.md``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from sbicluster.devices import cpu_description, cpu_vector_extensions, device_name

__all__ = ["environment", "results_name", "write_results", "RESULTS_DIR"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: str | None = None) -> dict:
    """Facts about the machine and software a benchmark ran on.

    Parameters
    ----------
    device : str, optional
        The torch device the benchmark used (``"cpu"``, ``"cuda"``); also records the GPU name.

    Returns
    -------
    dict
        JSON-serialisable: date (UTC), command, python, platform, CPU model with its vector
        extensions (:func:`sbicluster.devices.cpu_description`), cores, torch threads,
        device (and GPU name), package versions, git commit.
    """
    import numpy
    import torch

    versions = {"numpy": numpy.__version__, "torch": torch.__version__}
    for name in ("sbi", "astropy", "arviz", "pyro", "zuko"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional packages
            pass
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "cpu_vector_extensions": list(cpu_vector_extensions()),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device or "cpu",
        "versions": versions,
        "git_commit": _git_commit(),
    }
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = device_name(device)
    return info


def results_name(name: str, device: str | None) -> str:
    """``name`` on the CPU, ``name_<device type>`` elsewhere (``inference_cuda``), so that a GPU
    run does not replace the CPU results."""
    kind = str(device or "cpu").split(":")[0]
    return name if kind == "cpu" else f"{name}_{kind}"


def write_results(
    name: str, results: dict, markdown: str, directory: str | Path | None = None
) -> tuple[Path, Path]:
    """Write ``<directory>/<name>.json`` and ``<directory>/<name>.md``.

    Parameters
    ----------
    name : str
        Benchmark name.
    results : dict
        JSON-serialisable results (should include ``environment()``).
    markdown : str
        Human-readable report.
    directory : str or Path, optional
        Where to write (default :data:`RESULTS_DIR`, the committed results; a quick check run
        writes elsewhere).

    Returns
    -------
    tuple of Path
        Paths of the JSON and Markdown files.
    """
    folder = Path(directory) if directory is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
