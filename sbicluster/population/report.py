"""``sbicluster population``: from an ``infer`` results folder to a population report.

This module owns the population run as the user sees it: checking the inputs before any work,
choosing the selection function, running the fit, the posterior predictive check and writing
the outputs as one unit (:func:`sbicluster.files.atomic_folder`):

* ``population.nc`` — arviz InferenceData: ``posterior`` (hyper-parameters, chain × draw),
  ``sample_stats`` (divergences), ``posterior_predictive`` (predicted posterior medians of
  log M and log τ of a catalogue like the observed one, per hyper-posterior draw);
* ``corner.png`` — the hyper-posterior;
* ``ppc.png`` — observed vs predicted distributions of the posterior-median log M and log τ;
* ``selection.json`` — the selection function used (with provenance);
* ``metrics.json`` — the numbers of the report;
* ``report.md`` — one page: catalogue counts, hyper-posterior table, ESS warnings, checks.

Selection (``selection="auto"``, the default): the selection function shipped for the
catalogue's model when it was made with the same P(cluster) threshold, visibility cut and
symmetric views; otherwise one is estimated by simulation with the model (``selection_sims``
clusters, minutes on a CPU) and written beside the results. A JSON file may be given instead;
``"none"`` ignores selection (α = 1), which biases the slopes of any flux-limited catalogue.

Predictive check: for K hyper-posterior draws, N clusters are drawn from p(θ | Λ) p_det(θ) and
given the scatter of the observed posteriors (a random observed cluster's draw minus its median,
reversed), so they are comparable with the observed posterior medians. The p-values are the
fractions of replicated catalogues whose mean (or standard deviation) of the medians exceeds
the observed one; values near 0 or 1 point to a misfit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..checks import is_whole_number
from ..errors import InputError
from ..files import atomic_folder, check_output_folder
from .distributions import HYPER_LABELS, MASS_FUNCTIONS, PopulationModel
from .fit import NutsConfig, PopulationFit, fit_population
from .likelihood import ESS_WARNING
from .results import Catalogue, check_cuts, check_results_dir, read_results
from .selection import (
    SelectionFunction,
    SelectionNormaliser,
    estimate_selection,
    load_selection,
    shipped_selection,
)

__all__ = ["run_population", "posterior_predictive", "POPULATION_OUTPUTS", "PPC_DRAWS"]

log = logging.getLogger(__name__)

POPULATION_OUTPUTS = (
    "population.nc",
    "corner.png",
    "ppc.png",
    "selection.json",
    "metrics.json",
    "report.md",
)
"""Entries of a population output folder (an overwrite replaces these)."""

PPC_DRAWS = 200
"""Hyper-posterior draws used by the posterior predictive check."""

_PPC_PARAMS = ("log_mass", "log_age")


def _check_nuts(config: NutsConfig) -> None:
    for name in ("num_samples", "warmup", "chains"):
        value = getattr(config, name)
        least = 0 if name == "warmup" else 1
        if not is_whole_number(value, least):
            flag = {"num_samples": "--samples", "warmup": "--warmup", "chains": "--chains"}[name]
            raise InputError(f"{flag} {value!r}: must be an integer ≥ {least}")


def resolve_selection(
    selection: str | Path,
    catalogue: Catalogue,
    *,
    model=None,
    selection_sims: int = 4000,
    seed: int = 0,
    progress: bool = False,
) -> SelectionFunction:
    """The selection function of a catalogue (see the module notes).

    Raises
    ------
    InputError
        A file for other cuts, or a catalogue of a model that is not available to simulate.
    """
    if str(selection) == "none":
        return SelectionFunction.none(catalogue.prior)
    cuts = (catalogue.threshold, catalogue.visibility_cut, catalogue.views)
    if str(selection) != "auto":
        fn = load_selection(selection)
        if not fn.matches(*cuts):
            raise InputError(
                f"--selection {selection}: made for P(cluster) ≥ {fn.threshold}, visibility ≥ "
                f"{fn.visibility_cut}, views {fn.views}, but the catalogue uses "
                f"{catalogue.threshold}, {catalogue.visibility_cut}, {catalogue.views}; give "
                "a matching file or --selection auto to estimate one"
            )
        return fn
    name = catalogue.card.get("name", "unnamed")
    if model is None:
        fn = shipped_selection(catalogue.card, *cuts)
        if fn is not None:
            return fn
    from simulators.registry import simulator_from_card

    from ..artifact import load_model

    loaded = load_model(model)
    if loaded.card.get("name") != name or loaded.card.get("prior") != catalogue.card.get("prior"):
        raise InputError(
            f"the results were made with model {name!r}, not {loaded.card.get('name')!r}; pass "
            "its folder with --model to estimate the selection function, or --selection FILE"
        )
    log.warning(
        "no selection function for P(cluster) ≥ %s, visibility ≥ %s, views %s: estimating it "
        "from %d simulated clusters",
        *cuts,
        selection_sims,
    )
    return estimate_selection(
        loaded,
        simulator_from_card(loaded.card.get("simulator")),
        threshold=catalogue.threshold,
        visibility_cut=catalogue.visibility_cut,
        views=catalogue.views or 8,
        n=selection_sims,
        seed=seed,
        progress=progress,
    )


def posterior_predictive(
    fit: PopulationFit,
    catalogue_draws: np.ndarray,
    population: PopulationModel,
    selection: SelectionFunction,
    *,
    draws: int = PPC_DRAWS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Predicted posterior medians of a replicated catalogue, per hyper-posterior draw.

    Returns
    -------
    dict
        ``<name>_median`` (1, K, N) for the parameters of :data:`_PPC_PARAMS`, prior units.
    """
    rng = np.random.default_rng(seed)
    n, s, _ = catalogue_draws.shape
    median = np.median(catalogue_draws, axis=1)  # (N, D)
    flat = {k: v.reshape(-1) for k, v in fit.samples.items()}
    total = len(next(iter(flat.values())))
    pick = rng.choice(total, size=min(draws, total), replace=False)
    normaliser = SelectionNormaliser(selection, population, points=1024, seed=seed)
    low, high = population.prior.low().numpy(), population.prior.high().numpy()
    cols = [population.prior.index(p) for p in _PPC_PARAMS]
    out = np.empty((len(pick), n, len(cols)))
    for k, j in enumerate(pick):
        theta = normaliser.sample_detected(n, {h: float(flat[h][j]) for h in flat}, selection, rng)
        i, d = rng.integers(0, n, n), rng.integers(0, s, n)
        pred = np.clip(theta + median[i] - catalogue_draws[i, d], low, high)
        out[k] = pred[:, cols]
    return {f"{p}_median": out[None, :, :, c] for c, p in enumerate(_PPC_PARAMS)}


def _ppc_pvalues(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Fractions of replications whose mean / sd of the medians exceed the observed ones."""
    return {
        "mean": float(np.mean(predicted.mean(-1) > observed.mean())),
        "sd": float(np.mean(predicted.std(-1) > observed.std())),
    }


def _figures(folder: Path, fit, ppc, observed, prior) -> None:
    import corner
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..corner import save_figure

    data = np.stack([fit.samples[k].reshape(-1) for k in fit.names], -1)
    fig = corner.corner(
        data,
        labels=[HYPER_LABELS[k] for k in fit.names],
        quantiles=(0.16, 0.5, 0.84),
        show_titles=True,
        title_fmt=".3f",
        plot_datapoints=False,
        fill_contours=True,
        smooth=1.0,
    )
    save_figure(fig, folder / "corner", formats=("png",))
    fig, axes = plt.subplots(1, len(_PPC_PARAMS), figsize=(10, 3.8))
    for ax, name in zip(axes, _PPC_PARAMS, strict=True):
        p = prior.parameter(name)
        bins = np.linspace(p.low, p.high, 26)
        pred = ppc[f"{name}_median"][0]
        hist = np.stack([np.histogram(row, bins)[0] for row in pred])
        lo, mid, hi = np.percentile(hist, [5, 50, 95], axis=0)
        centres = 0.5 * (bins[1:] + bins[:-1])
        ax.fill_between(centres, lo, hi, step="mid", alpha=0.35, label="predicted 5–95 %")
        ax.step(centres, mid, where="mid", color="tab:blue", lw=1)
        ax.step(
            centres, np.histogram(observed[name], bins)[0], where="mid", color="k", label="observed"
        )
        ax.set_xlabel(f"posterior median {p.label}")
        ax.set_ylabel("clusters per bin")
    axes[0].legend(fontsize=8)
    fig.suptitle("Posterior predictive check of the catalogue", fontsize=10)
    save_figure(fig, folder / "ppc", formats=("png",))


def _report(metrics: dict) -> str:
    c = metrics["catalogue"]
    lines = [
        "# Population inference",
        "",
        f"Results folder `{metrics['results_dir']}` (model `{metrics['model']}`): "
        f"{c['cutouts']} cutouts; **{c['selected']} clusters** with P(cluster) ≥ "
        f"{metrics['threshold']} and visibility ≥ {metrics['visibility_cut']} "
        f"({c['below_threshold']} below the threshold, {c['below_visibility_cut']} below the "
        f"visibility cut, {c['out_of_range']} out of range and {c['non_finite_draws']} with "
        "non-finite draws left out).",
        "",
        f"Mass function: **{metrics['mass_function']}**. Selection: {metrics['selection']['text']}.",
        "",
        "| hyper-parameter | mean | sd | 3 % | 97 % | R̂ | ESS |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, v in metrics["hyper"].items():
        lines.append(
            f"| {k} | {v['mean']:.3f} | {v['sd']:.3f} | {v['hdi_3%']:.3f} | {v['hdi_97%']:.3f} "
            f"| {v['r_hat']:.3f} | {v['ess_bulk']:.0f} |"
        )
    n = metrics["nuts"]
    e = metrics["importance_ess"]
    lines += [
        "",
        "β: slope of dN/dM ∝ M^β; γ: index of dN/dτ ∝ τ^γ; log_av_scale: log10 of the A_V "
        "scale λ (mag) of p(A_V) ∝ exp(−A_V/λ); log_mc: log10 of the Schechter mass (M☉).",
        "",
        f"NUTS: {n['chains']} chains × {n['num_samples']} draws after {n['warmup']} warm-up, "
        f"seed {n['seed']}, {n['divergences']} divergences, {metrics['runtime_s']:.1f} s.",
        "",
        f"Importance weights at the median hyper-parameters: median ESS {e['median']:.0f} of "
        f"{e['draws']} draws, smallest {e['min']:.1f}; **{e['below_warning']} clusters below "
        f"{e['warning']:.0f}**"
        + (
            " — their likelihoods are noisy (more draws per cutout, `infer --samples`, help)."
            if e["below_warning"]
            else "."
        ),
        "",
        f"Detected fraction α at the median: {metrics['alpha_median']:.3f}.",
        "",
        "Posterior predictive check (`ppc.png`): p-values of the mean and sd of the "
        "posterior-median log M "
        f"{metrics['ppc']['log_mass']['mean']:.2f} / {metrics['ppc']['log_mass']['sd']:.2f}, "
        f"of log τ {metrics['ppc']['log_age']['mean']:.2f} / "
        f"{metrics['ppc']['log_age']['sd']:.2f} (near 0 or 1: misfit).",
        "",
        "![hyper-posterior](corner.png)",
        "",
        "![predictive check](ppc.png)",
    ]
    return "\n".join(lines) + "\n"


def run_population(
    results_dir: str | Path,
    out: str | Path,
    *,
    threshold: float = 0.5,
    visibility_cut: float = 0.0,
    mass_function: str = "powerlaw",
    selection: str | Path = "auto",
    model: str | Path | None = None,
    selection_sims: int = 4000,
    nuts: NutsConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Fit the population of the clusters in an ``sbicluster infer`` folder; write the report.

    Parameters
    ----------
    results_dir : str or Path
        Folder written by ``sbicluster infer`` (``summary.ecsv``, ``posterior.nc``).
    out : str or Path
        Output folder (see the module notes for its files).
    threshold : float
        Least P(cluster) of a catalogue member (default 0.5).
    visibility_cut : float
        Least visibility (signal-to-noise measure) of a catalogue member (default 0: none).
    mass_function : str
        ``"powerlaw"`` (default) or ``"schechter"``.
    selection : str or Path
        ``"auto"`` (default), ``"none"`` or a selection-function JSON file.
    model : str or Path, optional
        Model folder to estimate a selection function with (default: the shipped model).
    selection_sims : int
        Simulated clusters when a selection function is estimated (default 4000).
    nuts : NutsConfig
        Sampler settings (default: 2 chains × 500 draws after 300 warm-up steps, seed 0).
    overwrite : bool
        Replace an ``out`` that holds files.
    progress : bool
        Progress bars (on a terminal).

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.

    Raises
    ------
    InputError, OutputExistsError
        Before any work: bad options, a missing or unreadable results folder, no cluster
        passing the cuts, an ``out`` that holds files without ``overwrite``.
    """
    nuts = NutsConfig() if nuts is None else nuts
    check_results_dir(results_dir)
    check_cuts(threshold, visibility_cut)
    if mass_function not in MASS_FUNCTIONS:
        raise InputError(f"--mass-function {mass_function!r}: expected one of {MASS_FUNCTIONS}")
    _check_nuts(nuts)
    if not is_whole_number(selection_sims, 100):
        raise InputError(f"--selection-sims {selection_sims!r}: must be an integer ≥ 100")
    if str(selection) not in ("auto", "none"):
        load_selection(selection)
    check_output_folder(out, overwrite=overwrite)
    catalogue = read_results(results_dir, threshold=threshold, visibility_cut=visibility_cut)
    population = PopulationModel(catalogue.prior, mass_function)
    fn = resolve_selection(
        selection, catalogue, model=model, selection_sims=selection_sims, progress=progress
    )
    fit = fit_population(catalogue.draws, population, fn, nuts, progress=progress)
    ppc = posterior_predictive(fit, catalogue.draws, population, fn, seed=nuts.seed)
    import arviz as az

    idata = fit.to_inference_data(ppc, attrs={"created_by": "sbicluster population"})
    summary = az.summary(idata, var_names=list(fit.names), hdi_prob=0.94)
    medians = np.median(catalogue.draws, axis=1)
    observed = {p: medians[:, catalogue.prior.index(p)] for p in ("log_mass", "log_age")}
    selection_text = (
        "ignored (α = 1): slopes are biased for any incomplete catalogue"
        if fn.ignored
        else f"p_det(θ) from {fn.provenance.get('n_simulations', '?')} simulated clusters of "
        f"model `{fn.provenance.get('model', '?')}` (detected fraction "
        f"{fn.provenance.get('detected_fraction', float('nan')):.2f}, held-out accuracy "
        f"{fn.provenance.get('heldout_accuracy', float('nan')):.2f})"
    )
    metrics = {
        "results_dir": str(results_dir),
        "model": catalogue.card.get("name", "unnamed"),
        "threshold": threshold,
        "visibility_cut": visibility_cut,
        "mass_function": mass_function,
        "catalogue": catalogue.counts,
        "selection": {"text": selection_text, **fn.to_dict()["provenance"]},
        "hyper": {
            k: {
                c: float(summary.loc[k, c])
                for c in ("mean", "sd", "hdi_3%", "hdi_97%", "r_hat", "ess_bulk")
            }
            for k in fit.names
        },
        "nuts": {
            **{k: getattr(nuts, k) for k in ("num_samples", "warmup", "chains", "seed")},
            "max_tree_depth": nuts.max_tree_depth,
            "divergences": int(fit.divergences.sum()),
        },
        "importance_ess": {
            "median": float(np.median(fit.ess)),
            "min": float(fit.ess.min()),
            "draws": int(catalogue.draws.shape[1]),
            "warning": ESS_WARNING,
            "below_warning": fit.low_ess,
        },
        "alpha_median": float(np.exp(fit.log_alpha_median)),
        "ppc": {
            p: _ppc_pvalues(observed[p], ppc[f"{p}_median"][0]) for p in ("log_mass", "log_age")
        },
        "runtime_s": fit.runtime_s,
    }
    with atomic_folder(out, overwrite=overwrite, owned=POPULATION_OUTPUTS) as tmp:
        idata.to_netcdf(str(tmp / "population.nc"), engine="h5netcdf")
        fn.save(tmp / "selection.json")
        _figures(tmp, fit, ppc, observed, catalogue.prior)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        (tmp / "report.md").write_text(_report(metrics))
    return metrics
