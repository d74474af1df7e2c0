"""Peak memory of ``sbicluster diagnose`` against the size of the held-out set.

Runs ``python -m sbicluster -v diagnose --n N`` (the shipped default model and the documented
defaults: 1000 draws, 8 views, 50 L-C2ST probes) in a child process per N, and records its peak
resident set size (``ru_maxrss`` of that child, from :func:`os.wait4`), its RSS sampled every
few seconds together with the number of held-out objects the run reports as reduced, the wall
time and the exit status. Memory does not depend on CPU contention; the wall times do, and are
recorded only to say how long a run took on the machine it ran on. A run stopped at
``--timeout`` is recorded as incomplete, with the peak it had reached and how far it got.

``--source DIR`` measures another checkout of the package (e.g. an export of an earlier commit,
``git archive <commit> | tar -x -C DIR``) under ``--label``; every run is merged into
``benchmarks/results/diagnose_memory.json`` by (label, n) and the Markdown table is rewritten.

Usage::

    python -m benchmarks.diagnose_memory --n 1000 8000
    python -m benchmarks.diagnose_memory --n 1000 2000 --source /tmp/old --label "before (22cfb6e)"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.records import RESULTS_DIR, environment, write_results

__all__ = ["main", "measure"]

NAME = "diagnose_memory"
GOAL_GB = 4.0
"""Issue #17: peak RSS of ``diagnose`` below 4 GB at n = 50,000."""
REDUCED = re.compile(r"diagnose: (\d+) of (\d+) held-out objects reduced")


def _rss_kb(pid: int) -> int | None:
    """Current resident set size of ``pid`` in kB (None once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reduced(log: Path) -> int:
    """Held-out objects the run's log says it has reduced so far."""
    found = REDUCED.findall(log.read_text(errors="replace")) if log.exists() else []
    return int(found[-1][0]) if found else 0


def measure(n: int, *, source: Path, timeout: float, every: float = 5.0, threads: int = 1) -> dict:
    """Run ``diagnose --n n`` from ``source`` in a child process and record its memory.

    Parameters
    ----------
    n : int
        Held-out objects.
    source : Path
        Checkout whose ``sbicluster`` package is run (put first on ``PYTHONPATH``).
    timeout : float
        Seconds after which the run is stopped (recorded as incomplete).
    every : float
        Seconds between RSS samples.
    threads : int
        Torch/OpenMP threads of the child.

    Returns
    -------
    dict
        ``n``, ``complete``, ``exit_status``, ``peak_rss_mb`` (``ru_maxrss``, MB = 10⁶ bytes),
        ``wall_s``, ``reduced`` (held-out objects reduced when it ended), ``trace`` (list of
        [s, RSS MB, objects reduced]) and the report's ``timing`` when it finished.
    """
    env = dict(os.environ, PYTHONPATH=str(source), OMP_NUM_THREADS=str(threads))
    env["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "report", Path(tmp) / "log.txt"
        cmd = [sys.executable, "-m", "sbicluster", "-v", "diagnose", "--n", str(n)]
        cmd += ["--device", "cpu", "--out", str(out)]
        t0 = time.monotonic()
        with open(log, "w") as err:
            child = subprocess.Popen(cmd, cwd=source, env=env, stdout=err, stderr=err)
            trace, status, usage = [], None, None
            while status is None:
                pid, raw, rusage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    status, usage = raw, rusage
                    break
                elapsed = time.monotonic() - t0
                rss = _rss_kb(child.pid)
                if rss is not None:
                    trace.append([round(elapsed, 1), round(rss / 1000, 1), _reduced(log)])
                if elapsed > timeout:
                    child.kill()
                    _, status, usage = os.wait4(child.pid, 0)
                    break
                time.sleep(every)
        wall = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        metrics = out / "metrics.json"
        timing = json.loads(metrics.read_text())["timing"] if metrics.exists() else None
        tail = log.read_text(errors="replace").splitlines()[-3:]
        reduced = _reduced(log)
    return {
        "n": n,
        "complete": code == 0 and timing is not None,
        "exit_status": code,
        "peak_rss_mb": round(usage.ru_maxrss / 1000, 1),  # ru_maxrss is in kB on Linux
        "wall_s": round(wall, 1),
        "reduced": reduced if code != 0 else n,
        "timing": timing,
        "log_tail": tail if code != 0 else [],
        "trace": trace,
    }


def _markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Peak memory of `sbicluster diagnose`",
        "",
        f"Machine: {env['cpu_cores']}-core {env['cpu']} CPU, no GPU, shared with other jobs "
        "(wall times are under that contention and are not benchmarks); torch "
        f"{env['versions'].get('torch')}, one torch thread per run. Model: the shipped default; "
        "defaults of `sbicluster diagnose` (1000 draws per object, 8 views, 50 L-C2ST probes). "
        "Peak RSS is `ru_maxrss` of the `diagnose` process (MB = 10⁶ bytes). "
        f"Goal (issue #17): below {GOAL_GB:g} GB at n = 50,000.",
        "",
        "| code | n | complete | peak RSS (MB) | wall (s) | objects reduced |",
        "|---|---|---|---|---|---|",
    ]
    for run in sorted(results["runs"], key=lambda r: (r["label"], r["n"])):
        lines.append(
            f"| {run['label']} | {run['n']:,} | {'yes' if run['complete'] else 'no'} | "
            f"{run['peak_rss_mb']:,.0f} | {run['wall_s']:,.0f} | {run['reduced']:,} |"
        )
    lines += ["", "Command: `" + " ".join(results["command"]) + "`"]
    for note in results.get("notes", []):
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results dictionary written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", required=True, help="held-out set sizes")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="checkout to run (default: this one)",
    )
    parser.add_argument("--label", default=None, help="name of the code measured")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)

    path = args.out / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": [], "notes": []}
    label = args.label or f"chunked ({environment()['git_commit']})"
    for n in args.n:
        run = {"label": label, **measure(n, source=args.source, timeout=args.timeout)}
        results["runs"] = [r for r in results["runs"] if (r["label"], r["n"]) != (label, n)] + [run]
        results["environment"] = environment("cpu")
        results["command"] = ["python", "-m", "benchmarks.diagnose_memory", *sys.argv[1:]]
        write_results(NAME, results, _markdown(results), args.out)
    return results


if __name__ == "__main__":
    main()
