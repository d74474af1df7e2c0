"""Calibration, accuracy and classification benchmark of a trained model (default: the shipped one).

Runs :func:`sbicluster.diagnostics.run_diagnostics` on fresh held-out simulations drawn from the
simulator described by the model's card, and commits the one-page report as
``benchmarks/results/calibration.{md,json}`` plus ``calibration_<figure>.png``. The measured
attempts to meet the goals (other trained models run through this benchmark, with their training
commands) are kept in ``benchmarks/results/calibration_attempts.md``; the report links to it.

Usage::

    python -m benchmarks.calibration                      # shipped default model, n = 8000
    python -m benchmarks.calibration --model runs/m1 --n 2000 --device cuda

Goals checked (and stated in the report, met or missed): |empirical − nominal| HPD coverage
≤ 0.03 at every level 0.05…0.95 for the joint and each marginal; SBC uniformity not rejected at
p = 0.01; AUC ≥ 0.99 for clusters above the detection visibility.

The default test set is 8,000 objects (≈ 4,000 clusters), so that the coverage goal measures the
model rather than the draw of the test set: on ≈ 1,000 clusters (n = 2000) an exact posterior
exceeds the 0.03 tolerance somewhere on the 19 levels with probability ≈ 0.2 per region, on
≈ 4,000 with probability < 0.001 (the report states this noise floor for the n it ran).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.records import RESULTS_DIR, environment, write_results

__all__ = ["main"]

NAME = "calibration"
ATTEMPTS = "calibration_attempts.md"
"""Record of the trained models measured by this benchmark while working towards its goals."""


def _relink(markdown: str, keys, name: str) -> str:
    """Point the report's figure links at this run's files, ``<name>_<key>.png``."""
    for key in keys:
        markdown = markdown.replace(f"({key}.png)", f"({name}_{key}.png)")
    return markdown


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results dictionary written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model directory (default: shipped default model)"
    )
    parser.add_argument(
        "--n", type=int, default=8000, help="held-out objects (clusters + backgrounds)"
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="posterior draws per object")
    parser.add_argument("--seed", type=int, default=12345, help="test-set seed")
    parser.add_argument("--device", default="cpu", help="torch device for simulation and inference")
    parser.add_argument("--name", default=NAME, help="results name (files results/<name>*)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sbicluster.artifact import load_model
    from sbicluster.diagnostics import run_diagnostics
    from simulators.registry import simulator_from_card

    model = load_model(args.model, device=args.device)
    simulator = simulator_from_card(model.card["simulator"], device=args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = run_diagnostics(
            model,
            simulator,
            n=args.n,
            num_samples=args.num_samples,
            seed=args.seed,
            out_dir=tmp,
            progress=sys.stderr.isatty(),
        )
        keys = [p.stem for p in Path(tmp).glob("*.png")]
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        for key in keys:
            shutil.copyfile(Path(tmp) / f"{key}.png", RESULTS_DIR / f"{args.name}_{key}.png")
        report = (Path(tmp) / "report.md").read_text()
    wall = time.perf_counter() - start
    env = environment(args.device)
    results = {
        "environment": env,
        "model": args.model or "shipped default (sbicluster/models/default)",
        "n": args.n,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "wall_seconds": wall,
        "metrics": metrics,
    }
    header = (
        f"<!-- written by `{env['command']}` on {env['date_utc']} -->\n\n"
        f"Model: `{results['model']}`. Machine: {env['cpu']} ({env['cpu_cores']} cores), device "
        f"{env.get('gpu', env['device'])}; torch {env['versions'].get('torch')}, sbi {env['versions'].get('sbi')}; "
        f"git {env['git_commit']}. Wall time {wall:.0f} s.\n\n"
    )
    body = (
        _relink(report, keys, args.name).replace("\n", "\n" + header, 1)
        if "\n" in report
        else header + report
    )
    if (RESULTS_DIR / ATTEMPTS).is_file():
        body = body.rstrip() + (
            "\n\n## Attempted fixes (measured)\n\nEvery trained model measured against these goals, "
            f"with its training command and the outcome: [{ATTEMPTS}]({ATTEMPTS}).\n"
        )
    from sbicluster.diagnostics.report import to_jsonable

    write_results(args.name, to_jsonable(results), body)
    return results


if __name__ == "__main__":
    main()
