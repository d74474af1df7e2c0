"""Refit a recalibrated model's coverage factor on more clusters and a finer grid.

``sbicluster recalibrate --coverage-factor N`` fits one factor on the temperature per bin of
predicted visibility, choosing from a coarse grid (steps of 0.05) the factor with the smallest
worst HPD coverage error over the joint region, every marginal and nine levels. With a few
thousand clusters per bin that worst error has a noise floor of ≈ 0.025, as large as the
differences between neighbouring factors, so the choice can be decided by noise. This benchmark
keeps the model's temperature (and location) as fitted and refits only the factor, on
``--n`` fresh clusters of the model's own simulator (the coverage-factor stream of ``--seed``:
a seed other than the recalibration's gives clusters the model has not seen) and a grid of
``--grid`` factors. It writes the refitted model and a record of every bin's error by factor.
With ``--criterion true`` the factors (still one per bin of predicted visibility) are chosen
together to minimise the largest error over bins of *true* visibility, the bins in which
``sbicluster diagnose`` reports conditional coverage.

Usage::

    python -m benchmarks.coverage_factor_refit \
        --model benchmarks/models/marginal-recalibrated-candidate --out runs/marginal-refit
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.records import environment, write_results
from sbicluster.coverage_factor import CRITERIA

__all__ = ["main", "markdown", "refit"]

NAME = "coverage_factor_refit"
DEFAULT_GRID = (0.95, 0.975, 1.0, 1.025, 1.05, 1.075, 1.1)
"""Candidate factors: half the default recalibration's step, around 1."""


def refit(
    model,
    simulator,
    *,
    n: int,
    seed: int,
    grid,
    keep=(),
    criterion: str = "predicted",
    progress: bool = False,
) -> dict:
    """Refit ``model``'s coverage factor in place on ``n`` fresh clusters.

    Parameters
    ----------
    model : ClusterModel
        A recalibrated model with a coverage factor (its card's ``recalibration`` names the bins).
    simulator : simulators.base.Simulator
        The model's forward model.
    n : int
        Fresh clusters simulated for the fit.
    seed : int
        Seed of the coverage-factor stream and of the base draws.
    grid : sequence of float
        Candidate factors (positive, including 1).
    keep : sequence of int
        Bins (0 = faintest) that keep their previous factor (which must be on the grid); their
        refitted choice is recorded under ``fitted_factor``. Under ``criterion="true"`` the
        other bins are chosen with the kept ones held.
    criterion : str
        ``"predicted"`` or ``"true"``: the bins of visibility in which the coverage error is read
        (:class:`sbicluster.coverage_factor.CoverageFactorConfig`).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The new factor record (:func:`sbicluster.coverage_factor.fit_coverage_factor`) with the
        previous bins' factors under ``previous_factors`` and the kept bins under ``kept_bins``.
    """
    from sbicluster.coverage_factor import (
        CoverageFactorConfig,
        coverage_factor_seed,
        fit_coverage_factor,
    )
    from sbicluster.errors import InputError
    from sbicluster.recalibration import RecalibrationConfig, simulate_and_embed

    previous = model.card.get("recalibration", {}).get("coverage_factor")
    if previous is None:
        raise InputError("the model has no coverage factor to refit (recalibrate it with one)")
    previous_factors = [row["factor"] for row in previous["bins"]]
    if any(not 0 <= b < len(previous_factors) for b in keep):
        raise InputError(f"keep {list(keep)}: bins are 0 to {len(previous_factors) - 1}")
    grid = tuple(float(g) for g in grid)
    off_grid = [b for b in keep if previous_factors[b] not in grid]
    if off_grid:
        raise InputError(
            f"keep {off_grid}: previous factor(s) {[previous_factors[b] for b in off_grid]} "
            f"not on the grid {list(grid)}"
        )
    old = previous["config"]
    edges = tuple(float("inf") if e is None else float(e) for e in old["edges"])
    config = CoverageFactorConfig(
        n_simulations=n,
        draws=old["draws"],
        grid=grid,
        edges=edges,
        levels=tuple(old["levels"]),
        min_clusters=old["min_clusters"],
        criterion=criterion,
    )
    theta, features, _, visibility = simulate_and_embed(
        model,
        simulator,
        RecalibrationConfig(n_simulations=n, seed=seed),
        progress,
        n=n,
        stream_seed=coverage_factor_seed(seed),
    )
    record = fit_coverage_factor(
        model,
        theta,
        features,
        visibility,
        config,
        seed=seed,
        fixed={b: previous_factors[b] for b in keep},
        names=simulator.prior.names,
        progress=progress,
    )
    record["previous_factors"] = previous_factors
    record["kept_bins"] = sorted(set(keep))
    record["refit_seed"] = int(seed)
    model.card["recalibration"]["coverage_factor"] = record
    return record


def _worst_region(row: dict) -> str:
    """'joint 0.021, worst marginal rv 0.034' for a bin's errors by region, or '—'."""
    errors = row.get("errors_by_column_chosen")
    if not errors:
        return "—"
    name, worst = max(((k, v) for k, v in errors.items() if k != "joint"), key=lambda kv: kv[1])
    return f"joint {errors['joint']:.3f}, worst marginal {name} {worst:.3f}"


def markdown(record: dict, *, model: str, seconds: float, env: dict) -> str:
    """The report: per bin the worst coverage error of each factor, the old and new choice."""
    from sbicluster.diagnostics.report import range_label

    grid = record["config"]["grid"]
    lines = [
        "# Coverage factor refitted on more clusters and a finer grid",
        "",
        f"Model `{model}`; {record['config']['n_simulations']} fresh clusters "
        f"(coverage-factor stream of seed {record['refit_seed']}), "
        f"{record['config']['draws']} draws each; read-out R² {record['readout_r2']:.3f}; "
        f"{seconds / 60:.1f} min on {env.get('cpu', 'the CPU')}.",
        "",
        "Worst |coverage − nominal| over the joint region, every marginal and the levels "
        "0.1…0.9, per bin of predicted visibility:",
        "",
        "| predicted visibility | n | "
        + " | ".join(f"m = {g:g}" for g in grid)
        + " | previous m | refitted m | worst region there |",
        "|---|---|" + "---|" * len(grid) + "---|---|---|",
    ]
    for row, old in zip(record["bins"], record["previous_factors"], strict=True):
        errors = [row["errors_by_factor"][f"{g:g}"] for g in grid]
        cells = " | ".join("—" if e is None else f"{e:.3f}" for e in errors)
        lines.append(
            f"| {range_label(row['predicted_visibility'])} | {row['n']} | {cells} | {old:g} | "
            f"**{row['factor']:g}**"
            + (" (kept)" if "fitted_factor" in row else "")
            + f" | {_worst_region(row)} |"
        )
    true_rows = record.get("true_visibility")
    if true_rows:
        own = " / ".join(f"{m:g}" for m in record["per_bin_choice"])
        chosen = " / ".join(f"{row['factor']:g}" for row in record["bins"])
        lines += [
            "",
            f"Criterion: bins of **{record['config'].get('criterion', 'predicted')}** visibility. "
            "The same clusters in bins of *true* visibility (the bins of `sbicluster diagnose`), "
            f"worst error under the refitted factors ({chosen}) and under each predicted bin's "
            f"own best factor ({own}):",
            "",
            "| true visibility | n | refitted factors | worst region there | each bin's own best |",
            "|---|---|---|---|---|",
        ]
        for row in true_rows:
            cells = [
                "—" if row[key] is None else f"{row[key]:.3f}"
                for key in ("worst_error_chosen", "worst_error_per_bin_choice")
            ]
            lines.append(
                f"| {range_label(row['true_visibility'])} | {row['n']} | {cells[0]} | "
                f"{_worst_region(row)} | {cells[1]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a recalibrated model with a factor")
    parser.add_argument("--out", required=True, help="folder of the refitted model")
    parser.add_argument("--n", type=int, default=30_000, help="fresh clusters (default: 30000)")
    parser.add_argument("--seed", type=int, default=1, help="coverage-factor seed (default: 1)")
    parser.add_argument(
        "--grid", type=float, nargs="+", default=DEFAULT_GRID, help="candidate factors"
    )
    parser.add_argument(
        "--keep",
        type=int,
        nargs="+",
        default=(),
        help="bins (0 = faintest) that keep their previous factor",
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="predicted",
        help="bins of predicted or of true visibility in which the coverage error is read "
        "(default: %(default)s)",
    )
    parser.add_argument("--name", default=NAME, help="results file name (default: %(default)s)")
    parser.add_argument("--results", default=None, help="results folder (default: committed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        parser.error(f"--out {args.out} exists; pass --overwrite to replace it")

    from sbicluster.artifact import load_model, save_model
    from sbicluster.errors import InputError
    from simulators.registry import simulator_from_card

    model = load_model(args.model, device="cpu")
    simulator = simulator_from_card(model.card.get("simulator"), device=torch.device("cpu"))
    start = time.perf_counter()
    try:
        record = refit(
            model,
            simulator,
            n=args.n,
            seed=args.seed,
            grid=args.grid,
            keep=args.keep,
            criterion=args.criterion,
            progress=True,
        )
    except InputError as error:
        parser.error(str(error))
    seconds = time.perf_counter() - start
    save_model(model, args.out, overwrite=args.overwrite)
    env = environment("cpu")
    results = {
        "environment": env,
        "model": args.model,
        "out": args.out,
        "seconds": seconds,
        "coverage_factor": record,
    }
    _, md_path = write_results(
        args.name,
        results,
        markdown(record, model=args.model, seconds=seconds, env=env),
        args.results,
    )
    print(f"refitted model → {args.out}; report {md_path}")


if __name__ == "__main__":
    main()
