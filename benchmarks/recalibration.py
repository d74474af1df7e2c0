"""What a model's base temperature does, bin by bin of visibility, on fresh clusters.

A calibrated flow maps held-out truths to standard-normal base coordinates u = T(θ; x) whatever
the cutout. This benchmark simulates fresh clusters of the model's own simulator (on the
recalibration stream of ``--seed``, so a seed other than the one the model was fitted with gives
an independent set), and reports per visibility bin: the mean square of u per dimension (1 for a
calibrated flow), the share of truths inside the 50 % and 90 % balls of N(0, I) in u before and
after the temperature (the ball is the HPD region of the base distribution, not of θ: where the
flow's Jacobian varies across a posterior the two differ), the median τ, and how many base
coordinates lie beyond 4 and 5 against the standard normal's expectation. The coverage of HPD
regions in θ itself is what ``sbicluster diagnose`` measures.

Usage::

    python -m benchmarks.recalibration                 # the shipped default, 20,000 clusters
    python -m benchmarks.recalibration --model runs/x/model --n 5000 --name recalibration_x
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import stats

from benchmarks.records import environment, write_results

__all__ = ["main", "summarise"]

NAME = "recalibration"
EDGES = (0.0, 5.0, 20.0, 100.0, 300.0, math.inf)
"""Visibility bins of the report."""


def summarise(u: np.ndarray, log_tau: np.ndarray, visibility: np.ndarray) -> list[dict]:
    """Per visibility bin: count, mean square of u per dimension, u-ball coverage at 50 % and
    90 % before and after the temperature, and the median τ.

    Parameters
    ----------
    u : numpy.ndarray
        (N, D) base coordinates of the truths through the trained flow (temperature excluded).
    log_tau : numpy.ndarray
        (N,) or (N, D) log temperature of each cluster (zeros for a model without one).
    visibility : numpy.ndarray
        (N,) true visibility.
    """
    d = u.shape[1]
    log_tau = np.broadcast_to(np.asarray(log_tau).reshape(len(u), -1), u.shape)
    r2_before = (u**2).sum(1)
    r2_after = (u**2 * np.exp(-2 * log_tau)).sum(1)
    radius = {level: stats.chi2.ppf(level, d) for level in (0.5, 0.9)}
    rows = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        sel = (visibility >= lo) & (visibility < hi)
        if not sel.any():
            continue
        rows.append(
            {
                "visibility": [lo, None if math.isinf(hi) else hi],
                "n": int(sel.sum()),
                "mean_square_per_dim": (u[sel] ** 2).mean(0).tolist(),
                "mean_square": float((u[sel] ** 2).mean()),
                "ball_coverage_before": {
                    str(k): float(np.mean(r2_before[sel] <= r)) for k, r in radius.items()
                },
                "ball_coverage_after": {
                    str(k): float(np.mean(r2_after[sel] <= r)) for k, r in radius.items()
                },
                "tau_median": float(np.median(np.exp(log_tau[sel].mean(1)))),
            }
        )
    return rows


def _markdown(results: dict) -> str:
    env = results["environment"]
    tails = results["tails"]
    lines = [
        "# Base temperature by visibility",
        "",
        f"Model: `{results['model']}` ({'recalibrated' if results['recalibrated'] else 'no temperature'}). "
        f"{results['n']} fresh clusters of the model's simulator on the recalibration stream of "
        f"seed {results['seed']}; {results['wall_s']:.0f} s (wall time; not a speed benchmark). Machine: {env.get('cpu', '?')} "
        f"({env.get('cpu_cores', '?')} cores), device cpu; git {env.get('git_commit', '?')}.",
        "",
        "u = T(θ; x): base coordinates of the truths through the trained flow, without the "
        "temperature. For a calibrated flow their mean square per dimension is 1 and the 50 % / "
        "90 % balls of N(0, I) hold 50 % / 90 % of them in every bin. After: the same balls "
        "scaled by τ(x). (Balls in u are not the HPD regions in θ; `sbicluster diagnose` "
        "measures those.)",
        "",
        "| visibility | clusters | mean u² per dimension | ball 50 %: before → after | "
        "ball 90 %: before → after | median τ |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["bins"]:
        lo, hi = row["visibility"]
        span = f"{lo:g}+" if hi is None else f"{lo:g}–{hi:g}"
        b, a = row["ball_coverage_before"], row["ball_coverage_after"]
        per_dim = ", ".join(f"{v:.3f}" for v in row["mean_square_per_dim"])
        lines.append(
            f"| {span} | {row['n']} | {row['mean_square']:.3f} ({per_dim}) | "
            f"{b['0.5']:.3f} → {a['0.5']:.3f} | {b['0.9']:.3f} → {a['0.9']:.3f} | "
            f"{row['tau_median']:.3f} |"
        )
    lines += [
        "",
        f"Tails: {tails['beyond_4']} of {tails['coordinates']} base coordinates beyond |u| = 4 "
        f"(standard normal: {tails['expected_beyond_4']:.1f}), {tails['beyond_5']} beyond 5 "
        f"(standard normal: {tails['expected_beyond_5']:.2f}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results dictionary written to JSON."""
    from sbicluster.artifact import load_model
    from sbicluster.recalibration import RecalibrationConfig, simulate_and_embed
    from simulators.registry import simulator_from_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--n", type=int, default=20_000, help="fresh clusters (default: 20000)")
    parser.add_argument(
        "--seed",
        type=int,
        default=99,
        help="recalibration-stream seed of the clusters; use one the model was not fitted with "
        "(default: 99)",
    )
    parser.add_argument("--name", default=NAME, help="results name (files results/<name>.*)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    simulator = simulator_from_card(model.card["simulator"], device=torch.device("cpu"))
    config = RecalibrationConfig(n_simulations=args.n, seed=args.seed)
    features, u, visibility = simulate_and_embed(model, simulator, config, progress=False)
    layer = model.base_temperature
    with torch.no_grad():
        log_tau = (
            layer.log_temperature(features).numpy()
            if layer is not None
            else np.zeros((len(u), 1), dtype=np.float32)
        )
    u_np = u.numpy()
    results = {
        "model": str(args.model or "shipped default (sbicluster/models/default)"),
        "recalibrated": layer is not None,
        "n": args.n,
        "seed": args.seed,
        "bins": summarise(u_np, log_tau, visibility.numpy()),
        "tails": {
            "coordinates": int(u_np.size),
            "beyond_4": int((np.abs(u_np) > 4).sum()),
            "beyond_5": int((np.abs(u_np) > 5).sum()),
            "expected_beyond_4": float(u_np.size * 2 * stats.norm.sf(4)),
            "expected_beyond_5": float(u_np.size * 2 * stats.norm.sf(5)),
        },
        "wall_s": time.perf_counter() - start,
        "environment": environment("cpu"),
    }
    write_results(args.name, results, _markdown(results))
    print(_markdown(results))
    return results


if __name__ == "__main__":
    main()
