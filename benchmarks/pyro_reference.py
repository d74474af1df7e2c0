"""NPE against exact-likelihood references on the tractable integrated-photometry simulator.

The simulator is smooth (IMF-expected, non-stochastic) integrated photometry of the preset
instrument's bands from :meth:`simulators.population.StellarPopulation.integrated_magnitudes`
(piecewise linear in log age between the 0.01-dex grid nodes, so differentiable), moved to the
preset's distance and given Gaussian noise. Its likelihood is exact, so for test objects drawn
from the prior an sbi NPE (neural spline flow by default) trained on simulations of the *same*
simulator is compared with two exact-likelihood references:

* **NUTS** (pyro): chains started from prior draws, pooled with equal weight;
* **grid**: the posterior of (log age, A_V) on a fine grid with log M marginalised analytically
  (the magnitudes are linear in log M: a Gaussian in log M truncated to the prior box), sampled
  iid; log r_h, absent from the photometry, from its prior. Exact up to the grid cells
  (default 0.0025 dex × 0.005 mag), and immune to multimodality.

Integrated colours often allow several separated age–extinction solutions; NUTS chains then sit
in different modes and their equal-weight pool is not the posterior. The benchmark therefore also
compares NUTS with the grid and records each object's split R̂ between its NUTS chains.
Comparisons are per object: C2ST accuracy (0.5 means indistinguishable) and differences of means
and standard deviations in units of the reference σ. This validates the NPE machinery (training,
density estimator, sampling), not the image model.

Usage::

    python -m benchmarks.pyro_reference          # defaults: 20 objects, ≈ 12–17 min on 2 idle cores
    python -m benchmarks.pyro_reference --objects 4 --train 10000 --warmup 100 --samples 200

Writes ``benchmarks/results/pyro_reference.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from benchmarks.records import environment, write_results

__all__ = ["main", "compare", "GridReference", "reference_for_object"]

NAME = "pyro_reference"
RHAT_OK = 1.1
logger = logging.getLogger(__name__)

_LIKELIHOOD = ("log_age", "log_mass", "av")  # parameters in the photometry (log r_h is not)


def compare(draws: np.ndarray, ref: np.ndarray, names, seed: int = 0) -> dict:
    """C2ST accuracy and standardised mean/σ differences of two sample sets.

    Parameters
    ----------
    draws, ref : numpy.ndarray
        Draws (S, D) of the tested and the reference posterior, in θ units.
    names : sequence of str
        The D parameter names.
    seed : int
        Seed of the C2ST classifier and its cross-validation folds.

    Returns
    -------
    dict
        ``c2st`` (cross-validated classifier accuracy, 0.5 = indistinguishable, on
        min(S_draws, S_ref) draws of each), ``mean_diff_over_sigma`` ((mean − mean_ref) / σ_ref)
        and ``sigma_ratio`` (σ / σ_ref) per parameter (dimensionless).
    """
    from sbi.utils.metrics import c2st

    sd = ref.std(0)
    n = min(len(draws), len(ref))
    acc = float(
        c2st(
            torch.as_tensor(draws[:n], dtype=torch.float32),
            torch.as_tensor(ref[:n], dtype=torch.float32),
            seed=seed,
        )
    )
    return {
        "c2st": acc,
        "mean_diff_over_sigma": {
            k: float((draws[:, j].mean() - ref[:, j].mean()) / sd[j]) for j, k in enumerate(names)
        },
        "sigma_ratio": {k: float(draws[:, j].std() / sd[j]) for j, k in enumerate(names)},
    }


class GridReference:
    """Exact posterior draws of the smooth-photometry model from a (log age, A_V) grid.

    The magnitudes are m_b(θ) = M_b(log age, A_V) + μ − 2.5 log M with noise N(0, σ_b²), so for
    fixed (log age, A_V) the likelihood is Gaussian in log M with mean
    log M̂ = Σ w_b (M_b + μ − x_b) / (2.5 Σ w_b), w_b = σ_b⁻², and σ_logM = 1 / (2.5 √Σ w_b). Under
    the uniform prior the marginal posterior of (log age, A_V) is ∝ exp(−χ²_min / 2) ×
    P(log M ∈ prior box), with χ²_min = Σ w_b (r_b − r̄)², r_b = x_b − M_b − μ. It is evaluated at
    the centres of equal cells tiling the prior box; a draw picks a cell ∝ its value, a uniform
    point inside it, log M from the truncated Gaussian of the cell centre, and log r_h from its
    uniform prior.

    Parameters
    ----------
    model : sbicluster.baselines.photometry.SmoothPhotometryModel
        The simulator (θ order log age, log M, log r_h, A_V).
    age_step : float
        Cell size in log age, dex (default 0.0025: a quarter of the population's age grid).
    av_step : float
        Cell size in A_V, mag (default 0.005).
    """

    def __init__(self, model, age_step: float = 0.0025, av_step: float = 0.005) -> None:
        self.prior = model.prior
        low, high = self.prior.low().double(), self.prior.high().double()
        self.low, self.high = low, high
        na = int(round(float(high[0] - low[0]) / age_step))
        nv = int(round(float(high[3] - low[3]) / av_step))
        self.age_step = float(high[0] - low[0]) / na
        self.av_step = float(high[3] - low[3]) / nv
        self.ages = low[0] + self.age_step * (torch.arange(na, dtype=torch.float64) + 0.5)
        self.avs = low[3] + self.av_step * (torch.arange(nv, dtype=torch.float64) + 0.5)
        a, v = torch.meshgrid(self.ages, self.avs, indexing="ij")
        theta = torch.zeros(na * nv, 4)
        theta[:, 0], theta[:, 3] = a.reshape(-1).float(), v.reshape(-1).float()
        with torch.no_grad():  # apparent magnitudes at log M = 0, (na·nv, n_band)
            self.mags = torch.cat([model.mean(t) for t in theta.split(16384)]).double()
        self.w = torch.broadcast_to(model.sigma.double() ** -2, self.mags.shape[-1:])

    def sample(self, x: torch.Tensor, num_samples: int, generator: torch.Generator) -> np.ndarray:
        """Draw ``num_samples`` θ (num_samples, 4) from the posterior given magnitudes x (n_band,)."""
        from torch.special import ndtr, ndtri

        w, sw = self.w, self.w.sum()
        r = x.double() - self.mags  # = −2.5 log M + noise
        rbar = (w * r).sum(-1) / sw
        chi2 = (w * (r - rbar[:, None]) ** 2).sum(-1)
        lm_hat, sd = -rbar / 2.5, 1.0 / (2.5 * math.sqrt(float(sw)))
        za, zb = (self.low[1] - lm_hat) / sd, (self.high[1] - lm_hat) / sd
        flip = za > 0  # use the upper tail where the box lies above the mean (no cancellation)
        pa = torch.where(flip, ndtr(-zb), ndtr(za))
        pb = torch.where(flip, ndtr(-za), ndtr(zb))
        logp = -0.5 * chi2 + torch.log((pb - pa).clamp_min(1e-300))
        cell = torch.multinomial(
            torch.exp(logp - logp.max()), num_samples, True, generator=generator
        )
        u = torch.rand(num_samples, 4, generator=generator, dtype=torch.float64)
        i, j = cell // len(self.avs), cell % len(self.avs)
        q = (pa[cell] + u[:, 1] * (pb[cell] - pa[cell])).clamp(1e-300, 1 - 1e-16)
        z = torch.where(flip[cell], -ndtri(q), ndtri(q))
        out = torch.stack(
            [
                self.ages[i] + (u[:, 0] - 0.5) * self.age_step,
                (lm_hat[cell] + sd * z).clamp(self.low[1], self.high[1]),
                self.low[2] + u[:, 2] * (self.high[2] - self.low[2]),
                self.avs[j] + (u[:, 3] - 0.5) * self.av_step,
            ],
            1,
        )
        return out.float().numpy()


def _model(preset: str, sigma: float):
    """The tractable simulator of ``preset``'s bands (IMF-expected magnitudes + N(0, σ²) noise)."""
    from sbicluster.baselines.photometry import SmoothPhotometryModel
    from simulators.instruments import get_preset
    from simulators.population import StellarPopulation
    from simulators.priors import DEFAULT_PRIOR

    inst = get_preset(preset)
    pop = StellarPopulation(inst.bands)
    model = SmoothPhotometryModel(
        pop.integrated_magnitudes,
        DEFAULT_PRIOR,
        sigma=sigma,
        distance_modulus=inst.distance_modulus,
    )
    return model, inst


def reference_for_object(task: dict, model=None) -> dict:
    """NUTS reference draws for one test object, compared with the NPE and grid draws.

    Parameters
    ----------
    task : dict
        ``x`` (observed magnitudes, list), ``npe`` and ``grid`` (draws (S, 4), arrays),
        ``preset``, ``sigma`` (mag), ``samples``, ``warmup``, ``chains``, ``max_tree_depth``
        (optional, default 10), ``seed`` (NUTS and C2ST seed).
    model : SmoothPhotometryModel, optional
        The simulator; built from ``preset`` and ``sigma`` when omitted (worker processes).

    Returns
    -------
    dict
        :func:`compare` results ``npe_vs_grid``, ``npe_vs_nuts`` and ``nuts_vs_grid``; ``rhat``
        (split R̂ between NUTS chains per likelihood parameter; NaN with one chain); ``jit``
        (whether the traced potential was used); ``nuts_s`` and ``c2st_s`` (seconds of this
        object's NUTS run and comparisons).
    """
    import pyro.ops.stats

    from sbicluster.baselines.photometry import nuts_reference

    torch.set_num_threads(1)
    if model is None:
        model, _ = _model(task["preset"], task["sigma"])
    names = model.prior.names
    x = torch.as_tensor(task["x"], dtype=torch.float32)
    kw = dict(
        num_samples=task["samples"],
        warmup=task["warmup"],
        num_chains=task["chains"],
        seed=task["seed"],
        max_tree_depth=task.get("max_tree_depth", 10),
        return_chains=True,
    )
    t0 = time.perf_counter()
    jit = True
    try:
        chains = nuts_reference(model, x, **kw)
    except Exception as err:  # noqa: BLE001 - a magnitude function that the JIT cannot trace
        logger.warning("NUTS with JIT failed (%s); retrying without JIT", err)
        jit = False
        chains = nuts_reference(model, x, jit=False, **kw)
    t_nuts = time.perf_counter() - t0
    nuts = chains.reshape(-1, chains.shape[-1])[: task["samples"]]
    rhat = {k: float("nan") for k in _LIKELIHOOD}
    if chains.shape[0] > 1 and chains.shape[1] >= 4:
        r = pyro.ops.stats.split_gelman_rubin(torch.as_tensor(chains, dtype=torch.float64))
        rhat = {k: float(r[names.index(k)]) for k in _LIKELIHOOD}
    t0 = time.perf_counter()
    npe, grid, seed = np.asarray(task["npe"]), np.asarray(task["grid"]), task["seed"]
    return {
        "npe_vs_grid": compare(npe, grid, names, seed=seed),
        "npe_vs_nuts": compare(npe, nuts, names, seed=seed),
        "nuts_vs_grid": compare(nuts, grid, names, seed=seed),
        "rhat": rhat,
        "jit": jit,
        "nuts_s": t_nuts,
        "c2st_s": time.perf_counter() - t0,
    }


def _parse_sizes(text: str) -> list[int]:
    """Training-set sizes from a comma-separated list ("" → none); each must be ≥ 100."""
    sizes = [int(v) for v in text.split(",") if v.strip()]
    if any(n < 100 for n in sizes):
        raise argparse.ArgumentTypeError(f"training-set sizes must be ≥ 100, got {text!r}")
    return sizes


def _npe_draws(posterior, test_x: torch.Tensor, samples: int) -> list[np.ndarray]:
    """``samples`` NPE draws (samples, 4) for each row of ``test_x``."""
    return [
        posterior.sample((samples,), x=test_x[i : i + 1], show_progress_bars=False).numpy()
        for i in range(len(test_x))
    ]


def _summary(rows: list[dict], names) -> dict:
    c2 = np.array([r["c2st"] for r in rows])
    md = {k: np.array([r["mean_diff_over_sigma"][k] for r in rows]) for k in names}
    sr = {k: np.array([r["sigma_ratio"][k] for r in rows]) for k in names}
    return {
        "objects": len(rows),
        "c2st_median": float(np.median(c2)),
        "c2st_max": float(c2.max()),
        "abs_mean_diff_over_sigma_median": {k: float(np.median(np.abs(v))) for k, v in md.items()},
        "sigma_ratio_median": {k: float(np.median(v)) for k, v in sr.items()},
    }


_TITLES = {
    "npe_vs_grid": "NPE vs grid (the exact posterior)",
    "nuts_vs_grid": "NUTS vs grid (is the NUTS reference right?)",
    "npe_vs_nuts": "NPE vs NUTS",
    "npe_vs_nuts_rhat_ok": f"NPE vs NUTS, objects whose NUTS chains agree (split R̂ < {RHAT_OK})",
}


def _table(summary: dict, names) -> list[str]:
    lines = [
        f"C2ST accuracy (0.5 = indistinguishable) over {summary['objects']} objects: median "
        f"{summary['c2st_median']:.3f}, worst {summary['c2st_max']:.3f}.",
        "",
        "| parameter | median \\|mean − mean_ref\\| / σ_ref | median σ / σ_ref |",
        "|---|---|---|",
    ]
    for k in names:
        lines.append(
            f"| {k} | {summary['abs_mean_diff_over_sigma_median'][k]:.3f} "
            f"| {summary['sigma_ratio_median'][k]:.3f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="m83-wfc3")
    parser.add_argument(
        "--objects", type=int, default=20, help="test objects with a NUTS reference"
    )
    parser.add_argument("--train", type=int, default=20_000, help="NPE training simulations")
    parser.add_argument(
        "--sigma", type=float, default=0.05, help="photometric error per band (mag)"
    )
    parser.add_argument(
        "--samples", type=int, default=500, help="posterior draws per object and method"
    )
    parser.add_argument("--chains", type=int, default=2, help="NUTS chains per object")
    parser.add_argument("--warmup", type=int, default=200, help="NUTS warm-up steps per chain")
    parser.add_argument(
        "--max-tree-depth", type=int, default=8, help="NUTS tree-depth cap (pyro's default 10)"
    )
    parser.add_argument("--epochs", type=int, default=200, help="NPE epoch cap")
    parser.add_argument(
        "--estimator", default="nsf", help="sbi density estimator of the NPE (nsf, maf, ...)"
    )
    parser.add_argument(
        "--sweep",
        type=_parse_sizes,
        default=[2_000, 5_000],
        help="further NPE training-set sizes (comma-separated; nested subsets of the --train "
        "simulations, each smaller than it) compared with the grid only, to show convergence",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes running the objects' NUTS in parallel"
    )
    parser.add_argument("--grid-age-step", type=float, default=0.0025, help="grid cell, dex")
    parser.add_argument("--grid-av-step", type=float, default=0.005, help="grid cell, mag")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    if any(n >= args.train for n in args.sweep):
        parser.error(f"--sweep sizes must be smaller than --train ({args.train}): {args.sweep}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sbicluster.baselines.photometry import train_npe

    model, inst = _model(args.preset, args.sigma)
    prior = model.prior
    names = prior.names
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    theta = prior.sample(args.train, gen)
    with torch.no_grad():
        x = torch.cat([model.simulate(t, gen) for t in theta.split(4096)])
    t_sim = time.perf_counter() - t0
    ok = torch.isfinite(x).all(1)
    t0 = time.perf_counter()
    theta, x = theta[ok], x[ok]
    npe_kw = dict(density_estimator=args.estimator, max_num_epochs=args.epochs, seed=args.seed)
    posterior = train_npe(theta, x, prior, **npe_kw)
    t_train = time.perf_counter() - t0

    test_theta = prior.sample(args.objects, gen)
    with torch.no_grad():
        test_x = model.simulate(test_theta, gen)
    t0 = time.perf_counter()
    npe_draws = _npe_draws(posterior, test_x, args.samples)
    t_npe = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = GridReference(model, args.grid_age_step, args.grid_av_step)
    grid_draws = [grid.sample(test_x[i], args.samples, gen) for i in range(args.objects)]
    t_grid = time.perf_counter() - t0

    convergence = []  # NPE vs grid by training-set size (nested subsets of the simulations)
    for n in sorted(set(args.sweep)):
        t0 = time.perf_counter()
        smaller = train_npe(theta[:n], x[:n], prior, **npe_kw)
        t_fit = time.perf_counter() - t0
        draws = _npe_draws(smaller, test_x, args.samples)
        versus_grid = [
            compare(d, g, names, seed=args.seed + i)
            for i, (d, g) in enumerate(zip(draws, grid_draws, strict=True))
        ]
        convergence.append({"simulations": n, "train_s": t_fit, **_summary(versus_grid, names)})
        logger.info(
            "NPE on %d simulations: C2ST vs grid median %.3f", n, convergence[-1]["c2st_median"]
        )
    logger.info(
        "NPE: %d simulations, trained in %.1f s; grid reference %.1f s; NUTS for %d objects on "
        "%d process(es)",
        int(ok.sum()),
        t_train,
        t_grid,
        args.objects,
        args.workers,
    )

    tasks = [
        {
            "x": test_x[i].tolist(),
            "npe": npe_draws[i],
            "grid": grid_draws[i],
            "preset": args.preset,
            "sigma": args.sigma,
            "samples": args.samples,
            "warmup": args.warmup,
            "chains": args.chains,
            "max_tree_depth": args.max_tree_depth,
            "seed": args.seed + i,
        }
        for i in range(args.objects)
    ]
    t0 = time.perf_counter()
    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(args.workers, args.objects), mp_context=ctx) as pool:
            rows = list(pool.map(reference_for_object, tasks))
    else:
        rows = [reference_for_object(t, model) for t in tasks]
    t_ref = time.perf_counter() - t0
    for i, (t, r) in enumerate(zip(test_theta, rows, strict=True)):
        r["theta"] = t.tolist()
        logger.info(
            "object %d: C2ST NPE–grid %.3f, NUTS–grid %.3f, NPE–NUTS %.3f; max R̂ %.2f; NUTS %.1f s",
            i,
            r["npe_vs_grid"]["c2st"],
            r["nuts_vs_grid"]["c2st"],
            r["npe_vs_nuts"]["c2st"],
            max(r["rhat"].values()),
            r["nuts_s"],
        )

    mixed = [r for r in rows if max(r["rhat"].values()) < RHAT_OK]  # NaN (1 chain) is never < 1.1
    summary = {
        k: _summary([r[k] for r in rows], names)
        for k in ("npe_vs_grid", "nuts_vs_grid", "npe_vs_nuts")
    }
    if mixed:
        summary["npe_vs_nuts_rhat_ok"] = _summary([r["npe_vs_nuts"] for r in mixed], names)
    convergence.append({"simulations": len(theta), "train_s": t_train, **summary["npe_vs_grid"]})
    t_nuts = sum(r["nuts_s"] for r in rows)
    t_c2st = sum(r["c2st_s"] for r in rows)
    t_total = time.perf_counter() - t_start
    env = environment("cpu")
    results = {
        "environment": env,
        "preset": args.preset,
        "bands": list(inst.bands),
        "sigma_mag": args.sigma,
        "train_simulations": int(ok.sum()),
        "estimator": args.estimator,
        "objects": args.objects,
        "samples": args.samples,
        "nuts": {
            "chains": args.chains,
            "warmup": args.warmup,
            "workers": args.workers,
            "max_tree_depth": args.max_tree_depth,
            "jit": all(r["jit"] for r in rows),
            "rhat_ok_objects": len(mixed),
        },
        "grid": {
            "age_step_dex": grid.age_step,
            "av_step_mag": grid.av_step,
            "cells": len(grid.ages) * len(grid.avs),
        },
        "timing_s": {
            "simulate": t_sim,
            "train_npe": t_train,
            "npe_sampling_total": t_npe,
            "grid_total": t_grid,
            "nuts_total_cpu": t_nuts,
            "nuts_per_object_median": float(np.median([r["nuts_s"] for r in rows])),
            "c2st_total_cpu": t_c2st,
            "nuts_and_c2st_wall": t_ref,
            "total_wall": t_total,
        },
        "summary": summary,
        "convergence": convergence,
        "per_object": rows,
    }
    lines = [
        "# NPE vs exact-likelihood references on smooth integrated photometry",
        "",
        f"<!-- written by `{env['command']}` on {env['date_utc']} -->",
        "",
        f"**What is compared.** For each of {args.objects} test objects, θ drawn from the prior "
        "and x = m(θ) + μ + ε, three sets of draws from p(θ | x) of the *same* tractable simulator, "
        f"{args.samples} each:",
        "",
        f"* **NPE**: an sbi neural posterior estimate (`{args.estimator}`) trained on "
        f"{int(ok.sum())} simulations "
        f"(θ from the prior; at most {args.epochs} epochs, early stopping on a 10 % validation "
        "split) — the method under test;",
        f"* **NUTS**: pyro's NUTS on the exact likelihood ({args.chains} chains × {args.warmup} "
        f"warm-up steps from prior draws, dense mass matrix, tree depth ≤ {args.max_tree_depth}, "
        "pooled with equal weight; log r_h "
        "drawn from its prior, which is its exact posterior);",
        "* **grid**: the exact posterior on a "
        f"{grid.age_step:.4f} dex × {grid.av_step:.4f} mag (log age, A_V) grid with log M "
        "marginalised analytically (the magnitudes are linear in log M), drawn iid — it also "
        "weights separated modes correctly, which equal-weight NUTS chains do not.",
        "",
        "The simulator: IMF-expected (smooth, no stochastic sampling of stars) absolute magnitudes "
        f"in {', '.join(inst.bands)} (`{args.preset}`; Kroupa IMF, MIST, solar metallicity, "
        "piecewise linear in log age between 0.01-dex grid nodes), the preset's distance modulus "
        f"μ = {inst.distance_modulus:.2f} mag and Gaussian noise σ = {args.sigma} mag per band; "
        "uniform prior box (`DEFAULT_PRIOR`). It validates the NPE machinery, not the image model. "
        "Per object: C2ST accuracy of a classifier telling the two sets apart (0.5 = "
        "indistinguishable) and the difference of means and ratio of σ per parameter in units of "
        "the reference (second-named) set; tables give medians over objects.",
        "",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores), torch {env['versions'].get('torch')}, "
        f"sbi {env['versions'].get('sbi')}, pyro {env['versions'].get('pyro')}.",
    ]
    for key, title in _TITLES.items():
        if key in summary:
            lines += ["", f"## {title}", "", *_table(summary[key], names)]
    if len(convergence) > 1:
        lines += [
            "",
            "## NPE vs grid by number of training simulations",
            "",
            "The same test objects and grid draws; each NPE is trained on the first n of the "
            "simulations above (same estimator, epoch cap and seed). A machinery that works "
            "approaches the exact posterior as n grows.",
            "",
            "| simulations | training (s) | C2ST median | C2ST worst | "
            + " | ".join(f"{k}: \\|Δ mean\\| / σ, σ ratio" for k in _LIKELIHOOD)
            + " |",
            "|---|---|---|---|" + "---|" * len(_LIKELIHOOD),
        ]
        for c in convergence:
            cells = " | ".join(
                f"{c['abs_mean_diff_over_sigma_median'][k]:.2f}, {c['sigma_ratio_median'][k]:.2f}"
                for k in _LIKELIHOOD
            )
            lines.append(
                f"| {c['simulations']} | {c['train_s']:.0f} | {c['c2st_median']:.3f} "
                f"| {c['c2st_max']:.3f} | {cells} |"
            )
    lines += [
        "",
        f"NUTS chains agree (split R̂ < {RHAT_OK} in log age, log M and A_V) for {len(mixed)} of "
        f"{args.objects} objects. Where they do not, they usually sit in different modes of a "
        "multimodal age–extinction posterior.",
        "",
        "log r_h does not enter integrated photometry: all posteriors should return its prior "
        "(σ = 0.376 dex).",
        "",
        f"Time: simulate {t_sim:.1f} s, train NPE {t_train:.1f} s, NPE sampling {t_npe:.2f} s, "
        f"grid {t_grid:.1f} s; NUTS {t_nuts:.0f} s CPU in all ({t_nuts / args.objects:.1f} s per "
        f"object, {args.workers} process(es), {'JIT' if results['nuts']['jit'] else 'no JIT'}), "
        f"C2ST {t_c2st:.0f} s CPU; total {t_total:.0f} s wall.",
    ]
    write_results(NAME, results, "\n".join(lines))
    return results


if __name__ == "__main__":
    main()
