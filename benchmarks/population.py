"""Population inference validated end to end: recovery, selection bias, SBC and runtime.

Galaxies with known hyper-parameters are pushed through simulate → infer → population with the
shipped model: cluster θ are drawn from p(θ | Λ), their cutouts simulated
(``simulate(n, generator, theta=..., label=1)``), P(cluster), visibility and posterior draws
predicted (:func:`sbicluster.inference.predict`), the catalogue cut at P(cluster) ≥ 0.5, and Λ
fitted with NUTS with the selection function and, side by side, without it.

* **recovery and selection bias**: catalogues of 200 and 1,000 clusters at β = −2, γ = −0.8,
  log10 λ_AV = −0.3;
* **SBC**: ``--populations`` populations with Λ drawn from the hyper-priors, ``--clusters``
  simulated clusters each (before the cut); ranks of the true β and γ among the NUTS draws,
  uniformity tested with a χ² test on ``--bins`` bins (p ≥ 0.01: not rejected);
* **runtime**: 1,000 clusters × 1,000 draws (exact truncated-Gaussian posteriors, no images) with
  the command's default NUTS settings (2 chains × 500 draws after 300 warm-up).

The selection function used here is estimated in the run (``--selection-sims`` clusters) with
the same symmetric views (``--views``, default 1 for speed) as the predictions.

Usage::

    python -m benchmarks.population                      # defaults (≈ 15–20 min on 2 busy cores)
    python -m benchmarks.population --populations 20 --clusters 40   # a quick look

Writes ``benchmarks/results/population.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from benchmarks.records import environment, write_results

__all__ = ["main"]

NAME = "population"
TRUTH = {"beta": -2.0, "gamma": -0.8, "log_av_scale": -0.3}
log = logging.getLogger(__name__)


def _catalogue(model, simulator, population, hyper, n, rng, gen, *, views, draws, threshold):
    """Simulate ``n`` clusters of a population; the detected ones' draws (N, S, D) and θ."""
    from sbicluster.inference import predict

    theta = population.sample(n, hyper, rng)
    batch = simulator.simulate(
        n, gen, theta=torch.as_tensor(theta, dtype=torch.float32), label=torch.ones(n)
    )
    pred = predict(
        model, batch.images, num_samples=draws, generator=gen, views=views, progress=False
    )
    keep = pred.p_cluster >= threshold
    return pred.samples[keep], theta[keep]


def _fit_summary(fit) -> dict:
    return {k: {"mean": float(v.mean()), "sd": float(v.std())} for k, v in fit.samples.items()}


def main(argv=None) -> dict:
    from scipy import stats

    from sbicluster.artifact import load_model
    from sbicluster.population import (
        NutsConfig,
        PopulationModel,
        SelectionFunction,
        estimate_selection,
        fit_population,
    )
    from simulators.registry import simulator_from_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=60, help="clusters per SBC population")
    parser.add_argument("--sbc-draws", type=int, default=200, help="posterior draws (SBC)")
    parser.add_argument("--sbc-warmup", type=int, default=100)
    parser.add_argument("--sbc-samples", type=int, default=199)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--sizes", default="200,1000", help="catalogue sizes of the recovery runs")
    parser.add_argument("--draws", type=int, default=1000, help="posterior draws (recovery)")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--selection-sims", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runtime-only",
        action="store_true",
        help="only the 1,000 × 1,000 runtime, written to results/population_runtime.{json,md}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t_all = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = load_model(None)
    simulator = simulator_from_card(model.card["simulator"])
    population = PopulationModel(model.prior)
    results: dict = {"environment": environment("cpu"), "settings": vars(args), "truth": TRUTH}

    # runtime: 1,000 clusters × 1,000 draws with the command's default NUTS settings
    from scipy.stats import truncnorm

    low, high = model.prior.low().double().numpy(), model.prior.high().double().numpy()
    theta = population.sample(1000, TRUTH, rng)
    sigma = np.array([0.3, 0.15, 0.1, 0.3])
    obs = theta + rng.normal(size=theta.shape) * sigma
    a, b = (low - obs) / sigma, (high - obs) / sigma
    exact = truncnorm.rvs(
        a[:, None],
        b[:, None],
        loc=obs[:, None],
        scale=sigma,
        size=(1000, 1000, 4),
        random_state=rng,
    )
    fit = fit_population(exact, population, SelectionFunction.none(model.prior), NutsConfig())
    results["runtime"] = {
        "clusters": 1000,
        "draws": 1000,
        "nuts": "2 chains × 500 draws, 300 warm-up",
        "seconds": fit.runtime_s,
        "hyper": _fit_summary(fit),
        "divergences": int(fit.divergences.sum()),
    }
    log.info("runtime 1000 × 1000: %.1f s", fit.runtime_s)
    if args.runtime_only:
        env = results["environment"]
        write_results(
            f"{NAME}_runtime",
            results,
            "# Population inference: runtime\n\n"
            f"Command: `{env['command']}`; machine: {env['cpu']} ({env['cpu_cores']} cores, "
            f"shared), device cpu, commit {env['git_commit']}, {env['date_utc']}.\n\n"
            f"1,000 clusters × 1,000 draws, {results['runtime']['nuts']}: "
            f"**{fit.runtime_s:.1f} s** (target ≤ 60 s); "
            f"{results['runtime']['divergences']} divergences.\n",
        )
        return results

    t0 = time.perf_counter()
    selection = estimate_selection(
        model,
        simulator,
        threshold=args.threshold,
        visibility_cut=0.0,
        views=args.views,
        n=args.selection_sims,
        seed=args.seed + 1,
    )
    results["selection"] = {**selection.provenance, "seconds": time.perf_counter() - t0}
    none = SelectionFunction.none(model.prior)

    # recovery and selection bias at the fiducial hyper-parameters
    results["recovery"] = []
    for size in (int(s) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        n_sim = int(size / max(selection.provenance["detected_fraction"], 0.05) * 1.15)
        draws, _ = _catalogue(
            model,
            simulator,
            population,
            TRUTH,
            n_sim,
            rng,
            gen,
            views=args.views,
            draws=args.draws,
            threshold=args.threshold,
        )
        draws = draws[:size]
        t_sim = time.perf_counter() - t0
        row = {"clusters": int(len(draws)), "draws": args.draws, "simulate_infer_s": t_sim}
        for label, fn in (("with_selection", selection), ("without_selection", none)):
            fit = fit_population(draws, population, fn, NutsConfig(seed=args.seed))
            row[label] = {
                **_fit_summary(fit),
                "seconds": fit.runtime_s,
                "low_ess_clusters": fit.low_ess,
                "median_ess": float(np.median(fit.ess)),
            }
            row[label]["bias_over_sd"] = {
                k: (row[label][k]["mean"] - TRUTH[k]) / row[label][k]["sd"] for k in TRUTH
            }
        results["recovery"].append(row)
        log.info("recovery %d: %s", size, row)

    # SBC over populations with Λ from the hyper-priors
    ranks = {"beta": [], "gamma": []}
    sizes, t0 = [], time.perf_counter()
    config = NutsConfig(num_samples=args.sbc_samples, warmup=args.sbc_warmup, chains=1)
    for p in range(args.populations):
        hyper = population.sample_hyper(rng)
        draws, _ = _catalogue(
            model,
            simulator,
            population,
            hyper,
            args.clusters,
            rng,
            gen,
            views=args.views,
            draws=args.sbc_draws,
            threshold=args.threshold,
        )
        sizes.append(len(draws))
        if len(draws) == 0:
            continue
        fit = fit_population(
            draws, population, selection, NutsConfig(**{**vars(config), "seed": p})
        )
        for k in ranks:
            ranks[k].append(int(np.sum(fit.samples[k].reshape(-1) < hyper[k])))
        if p % 10 == 0:
            log.info(
                "SBC population %d/%d (%.0f s)", p + 1, args.populations, time.perf_counter() - t0
            )
    n_rank = args.sbc_samples + 1
    sbc = {
        "populations": len(ranks["beta"]),
        "median_catalogue": float(np.median(sizes)),
        "rank_values": n_rank,
        "seconds": time.perf_counter() - t0,
    }
    for k, r in ranks.items():
        counts = np.histogram(r, bins=args.bins, range=(0, n_rank))[0]
        sbc[k] = {
            "chi2_pvalue": float(stats.chisquare(counts).pvalue),
            "counts": counts.tolist(),
            "ranks": r,
        }
    results["sbc"] = sbc
    results["total_seconds"] = time.perf_counter() - t_all
    write_results(NAME, results, _markdown(results, args))
    return results


def _markdown(r: dict, args) -> str:
    env = r["environment"]
    rt = r["runtime"]
    lines = [
        "# Population inference benchmark",
        "",
        f"Command: `{env['command']}`; machine: {env['cpu']} ({env['cpu_cores']} cores, shared), "
        f"device cpu, commit {env['git_commit']}, {env['date_utc']}; total "
        f"{r['total_seconds'] / 60:.1f} min.",
        "",
        "## Runtime",
        "",
        f"1,000 clusters × 1,000 draws, {rt['nuts']}: **{rt['seconds']:.1f} s** (target ≤ 60 s); "
        f"{rt['divergences']} divergences.",
        "",
        "## Recovery and selection bias (simulate → predict → population, shipped model)",
        "",
        f"Truth β = {TRUTH['beta']}, γ = {TRUTH['gamma']}, log10 λ_AV = {TRUTH['log_av_scale']}; "
        f"catalogue P(cluster) ≥ {args.threshold}; selection function from "
        f"{r['selection']['n_simulations']} simulations (detected fraction "
        f"{r['selection']['detected_fraction']:.2f}, held-out accuracy "
        f"{r['selection']['heldout_accuracy']:.2f}), views {args.views}.",
        "",
        "| clusters | selection | β (mean ± sd) | γ | log λ_AV | (β−truth)/sd | (γ−truth)/sd "
        "| clusters ESS < 50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["recovery"]:
        for label in ("with_selection", "without_selection"):
            f = row[label]
            lines.append(
                f"| {row['clusters']} | {label.split('_')[0]} | {f['beta']['mean']:.3f} ± "
                f"{f['beta']['sd']:.3f} | {f['gamma']['mean']:.3f} ± {f['gamma']['sd']:.3f} | "
                f"{f['log_av_scale']['mean']:.3f} ± {f['log_av_scale']['sd']:.3f} | "
                f"{f['bias_over_sd']['beta']:+.1f} | {f['bias_over_sd']['gamma']:+.1f} | "
                f"{f['low_ess_clusters']} |"
            )
    s = r["sbc"]
    lines += [
        "",
        "## SBC",
        "",
        f"{s['populations']} populations, Λ from the hyper-priors, {args.clusters} simulated "
        f"clusters each (median catalogue {s['median_catalogue']:.0f} after the cut), "
        f"{args.sbc_draws} draws per cluster, NUTS 1 chain × {args.sbc_samples} after "
        f"{args.sbc_warmup} warm-up; {s['seconds'] / 60:.1f} min.",
        "",
        "| parameter | χ² p-value (ranks uniform?) | rank counts per bin |",
        "|---|---|---|",
    ]
    for k in ("beta", "gamma"):
        verdict = "not rejected" if s[k]["chi2_pvalue"] >= 0.01 else "**rejected**"
        lines.append(f"| {k} | {s[k]['chi2_pvalue']:.3f} ({verdict} at 0.01) | {s[k]['counts']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
