"""What a model's base temperature does, bin by bin of visibility, on fresh clusters.

A calibrated flow maps held-out truths to standard-normal base coordinates u = T(θ; x) whatever
the cutout. This benchmark simulates fresh clusters of the model's own simulator (on the
recalibration stream of ``--seed``, so a seed other than the one the model was fitted with gives
an independent set), and reports per visibility bin: the mean square of u per dimension (1 for a
calibrated flow), the share of truths inside the 50 % and 90 % balls of N(0, I) in u before and
after the temperature (the ball is the HPD region of the base distribution, not of θ: where the
flow's Jacobian varies across a posterior the two differ), the median τ, and how many base
coordinates lie beyond 4 and 5 against the standard normal's expectation.

It also measures the coverage of the joint HPD region in θ itself (what ``sbicluster diagnose``
reports) on the first ``--hpd-clusters`` of them, with the model's temperature multiplied by each
of ``--multipliers``: how far a wider or narrower posterior would move each bin.

Usage::

    python -m benchmarks.recalibration                 # the shipped default, 20,000 clusters
    python -m benchmarks.recalibration --model runs/x/model --n 5000 --name recalibration_x
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager

import numpy as np
import torch
from scipy import stats

from benchmarks.records import environment, write_results
from sbicluster.diagnostics.report import range_label

__all__ = ["hpd_coverage_by_multiplier", "main", "summarise"]

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


HPD_EDGES = (0.0, 20.0, 100.0, math.inf)
"""Visibility bins of the HPD coverage, those of ``sbicluster diagnose``."""


@contextmanager
def _temperature_times(layer, factor: float):
    """The layer's τ multiplied by ``factor`` for every context, inside the block."""
    original = layer.log_temperature
    layer.log_temperature = lambda c: original(c) + math.log(factor)
    try:
        yield
    finally:
        del layer.log_temperature


@torch.no_grad()
def hpd_coverage_by_multiplier(
    model,
    theta: torch.Tensor,
    features: torch.Tensor,
    visibility: np.ndarray,
    multipliers,
    *,
    num_samples: int = 200,
    seed: int = 0,
    block: int = 250,
) -> list[dict]:
    """Coverage of the joint 50 % and 90 % HPD regions in θ per visibility bin, with the model's
    temperature multiplied by each factor.

    The HPD credibility of a truth is the share of its posterior draws with a higher density
    (``num_samples`` draws, the same base noise for every factor). ``model`` must have a base
    temperature (:func:`sbicluster.recalibration.with_base_temperature` adds one at τ = 1).

    Returns
    -------
    list of dict
        Per factor: ``multiplier`` and ``bins`` (``visibility``, ``n``, ``coverage`` at "0.5"
        and "0.9").
    """
    layer = model.base_temperature
    rows = []
    for factor in multipliers:
        credibility = []
        with _temperature_times(layer, float(factor)):
            for i in range(0, len(theta), block):
                f, t = features[i : i + block], theta[i : i + block]
                generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
                draws = model.sample_from_features(f, num_samples, generator)
                above = model.flow_log_prob(draws, f) > model.flow_log_prob(t, f)
                credibility.append(above.float().mean(0))
        credibility = torch.cat(credibility).numpy()
        bins = []
        for lo, hi in zip(HPD_EDGES[:-1], HPD_EDGES[1:], strict=True):
            sel = (visibility >= lo) & (visibility < hi)
            bins.append(
                {
                    "visibility": [lo, None if math.isinf(hi) else hi],
                    "n": int(sel.sum()),
                    "coverage": {
                        str(level): float(np.mean(credibility[sel] <= level)) if sel.any() else None
                        for level in (0.5, 0.9)
                    },
                }
            )
        rows.append({"multiplier": float(factor), "bins": bins})
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
        span = range_label(row["visibility"])
        b, a = row["ball_coverage_before"], row["ball_coverage_after"]
        per_dim = ", ".join(f"{v:.3f}" for v in row["mean_square_per_dim"])
        lines.append(
            f"| {span} | {row['n']} | {row['mean_square']:.3f} ({per_dim}) | "
            f"{b['0.5']:.3f} → {a['0.5']:.3f} | {b['0.9']:.3f} → {a['0.9']:.3f} | "
            f"{row['tau_median']:.3f} |"
        )
    hpd = results.get("hpd_by_multiplier")
    if hpd:
        spans = [range_label(b["visibility"]) for b in hpd[0]["bins"]]
        counts = ", ".join(
            f"{span}: {b['n']}" for span, b in zip(spans, hpd[0]["bins"], strict=True)
        )
        lines += [
            "",
            f"Joint HPD region in θ, first {results['hpd_clusters']} clusters, "
            f"{results['hpd_draws']} draws each, τ multiplied by m: share of truths inside the "
            "50 % / 90 % regions per visibility bin "
            f"({counts} clusters).",
            "",
            "| m | " + " | ".join(spans) + " |",
            "|---|" + "---|" * len(spans),
        ]
        for row in hpd:
            cells = " | ".join(
                f"{b['coverage']['0.5']:.3f} / {b['coverage']['0.9']:.3f}" if b["n"] else "–"
                for b in row["bins"]
            )
            lines.append(f"| {row['multiplier']:g} | {cells} |")
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
    from sbicluster.recalibration import (
        RecalibrationConfig,
        simulate_and_embed,
        with_base_temperature,
    )
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
    parser.add_argument(
        "--multipliers",
        type=float,
        nargs="*",
        default=[1.0, 1.05, 1.1, 1.15],
        help="factors on τ at which the HPD coverage in θ is measured (none: skip; "
        "default: 1 1.05 1.1 1.15)",
    )
    parser.add_argument(
        "--hpd-clusters", type=int, default=6000, help="clusters of the HPD measurement"
    )
    parser.add_argument("--draws", type=int, default=200, help="posterior draws per cluster")
    parser.add_argument("--name", default=NAME, help="results name (files results/<name>.*)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    simulator = simulator_from_card(model.card["simulator"], device=torch.device("cpu"))
    config = RecalibrationConfig(n_simulations=args.n, seed=args.seed)
    theta, features, u, visibility = simulate_and_embed(model, simulator, config)
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
        "hpd_clusters": min(args.hpd_clusters, args.n),
        "hpd_draws": args.draws,
        "hpd_by_multiplier": hpd_coverage_by_multiplier(
            model if layer is not None else with_base_temperature(model),
            theta[: args.hpd_clusters],
            features[: args.hpd_clusters],
            visibility.numpy()[: args.hpd_clusters],
            args.multipliers,
            num_samples=args.draws,
            seed=args.seed,
        ),
        "wall_s": time.perf_counter() - start,
        "environment": environment("cpu"),
    }
    write_results(args.name, results, _markdown(results))
    print(_markdown(results))
    return results


if __name__ == "__main__":
    main()
