"""Figures of the calibration and accuracy diagnostics.

This module owns the matplotlib rendering of coverage curves, SBC rank histograms and
ECDF-difference curves, the TARP curve, truth-vs-estimate scatter, posterior width versus
visibility, ROC curves and reliability diagrams. Every function takes the already-computed
statistics and returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
state, safe in threads and headless runs); :func:`diagnostic_figures` builds the whole set of the
diagnostics report from the metrics and the arrays behind them. It must not define statistics
itself: what a figure needs beyond the metrics comes from the statistics modules' functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from .classification import reliability_diagram, roc_curve
from .coverage import CoverageResult
from .objects import DrawStatistics, draw_statistics
from .sbc import SBCResult, rank_ecdf_difference, sbc_from_ranks

__all__ = [
    "diagnostic_figures",
    "plot_coverage",
    "plot_sbc_ranks",
    "plot_sbc_ecdf",
    "plot_tarp",
    "plot_truth_vs_estimate",
    "plot_width_vs_visibility",
    "plot_roc",
    "plot_reliability",
    "plot_conditional_coverage",
    "plot_lc2st_pp",
]


def _grid(n: int, size: float = 3.0) -> tuple[Figure, np.ndarray]:
    ncol = min(n, 5)
    nrow = int(np.ceil(n / ncol))
    fig = Figure(figsize=(size * ncol, 1.15 * size * nrow), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def plot_coverage(results: Mapping[str, CoverageResult], tolerance: float = 0.03) -> Figure:
    """Nominal vs empirical HPD coverage, one panel per region (e.g. joint and each marginal).

    Parameters
    ----------
    results : mapping of str to CoverageResult
        Panel title → coverage result.
    tolerance : float
        Half-width of the dashed goal band around the diagonal (coverage fraction).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = _grid(len(results))
    for ax, (title, res) in zip(axes, results.items(), strict=False):
        lv = res.levels
        ax.fill_between(
            lv,
            res.band_low,
            res.band_high,
            color="0.8",
            label=f"{res.band_confidence:.0%} binomial",
        )
        ax.plot([0, 1], [0, 1], "k-", lw=0.8)
        ax.plot([0, 1], [tolerance, 1 + tolerance], "k--", lw=0.5)
        ax.plot([0, 1], [-tolerance, 1 - tolerance], "k--", lw=0.5, label=f"±{tolerance}")
        ax.plot(lv, res.empirical, "o-", ms=3, color="C0", label="empirical")
        ax.set(
            xlim=(0, 1), ylim=(0, 1), xlabel="nominal credibility", title=f"{title}: {res.verdict}"
        )
        ax.set_aspect("equal")
    axes[0].set_ylabel("empirical coverage")
    axes[0].legend(fontsize=7, loc="upper left")
    return fig


def plot_sbc_ranks(
    sbc: SBCResult, labels: Sequence[str] | None = None, band: float = 0.99
) -> Figure:
    """SBC rank histograms with the band of a uniform histogram.

    Parameters
    ----------
    sbc : SBCResult
        Ranks and p-values.
    labels : sequence of str, optional
        Axis labels per parameter (default: names).
    band : float
        Probability content of the grey per-bin binomial band.

    Returns
    -------
    matplotlib.figure.Figure
    """
    d = sbc.ranks.shape[1]
    labels = labels or sbc.names
    fig, axes = _grid(d)
    n, s, b = sbc.ranks.shape[0], sbc.num_samples, sbc.num_bins
    edges = np.linspace(0, s + 1, b + 1)
    lo, hi = stats.binom.ppf([(1 - band) / 2, (1 + band) / 2], n, 1.0 / b)
    for j, ax in enumerate(axes[:d]):
        ax.axhspan(lo, hi, color="0.85")
        ax.axhline(n / b, color="k", lw=0.8)
        ax.hist(sbc.ranks[:, j], bins=edges, histtype="stepfilled", alpha=0.7, color="C0")
        ax.set(
            xlabel=f"rank of {labels[j]}",
            title=f"KS p={sbc.ks_pvalue[j]:.3g}  χ² p={sbc.chi2_pvalue[j]:.3g}",
        )
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("objects")
    return fig


def plot_sbc_ecdf(
    sbc: SBCResult, labels: Sequence[str] | None = None, band: float = 0.99
) -> Figure:
    """ECDF of normalised ranks minus the uniform CDF, with a simultaneous band.

    Parameters
    ----------
    sbc : SBCResult
        Ranks.
    labels : sequence of str, optional
        Legend labels per parameter.
    band : float
        Simultaneous probability content of the band.

    Returns
    -------
    matplotlib.figure.Figure
    """
    e = rank_ecdf_difference(sbc.ranks, sbc.num_samples, band_prob=band)
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(
        e["x"], e["band_low"], e["band_high"], color="0.85", label=f"{band:.0%} simultaneous"
    )
    for j, lab in enumerate(labels or sbc.names):
        ax.plot(e["x"], e["difference"][j], label=lab)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="normalised rank", ylabel="ECDF − uniform CDF", title="SBC rank ECDF difference")
    ax.legend(fontsize=7)
    return fig


def plot_tarp(ecp: np.ndarray, alpha: np.ndarray, atc: float, ks_pvalue: float) -> Figure:
    """TARP expected coverage probability versus credibility level (Lemos et al. 2023).

    Parameters
    ----------
    ecp, alpha : numpy.ndarray
        Outputs of sbi's TARP (expected coverage and credibility grid), shape (B+1,).
    atc : float
        Area-to-curve (> 0 underconfident, < 0 overconfident).
    ks_pvalue : float
        KS p-value of ecp vs alpha.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.plot(alpha, ecp, color="C1", label="TARP")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credibility level α", ylabel="expected coverage")
    ax.set_title(f"TARP: ATC={atc:+.3f}, KS p={ks_pvalue:.3g}", fontsize=9)
    ax.set_aspect("equal")
    return fig


def plot_truth_vs_estimate(
    estimate: np.ndarray, theta: np.ndarray, labels: Sequence[str], color: np.ndarray | None = None
) -> Figure:
    """Posterior medians against the truth, per parameter.

    Parameters
    ----------
    estimate, theta : numpy.ndarray
        Shape (N, D), θ units.
    labels : sequence of str
        Axis labels (with units).
    color : numpy.ndarray, optional
        Per-object colour value (e.g. log visibility), shape (N,).

    Returns
    -------
    matplotlib.figure.Figure
    """
    d = theta.shape[1]
    fig, axes = _grid(d)
    for j, ax in enumerate(axes[:d]):
        lo, hi = float(theta[:, j].min()), float(theta[:, j].max())
        sc = ax.scatter(
            theta[:, j], estimate[:, j], s=2, c=color, cmap="viridis", alpha=0.6, rasterized=True
        )
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set(xlabel=f"true {labels[j]}", ylabel="posterior median")
    if color is not None:
        fig.colorbar(sc, ax=axes[d - 1], label="log10 visibility")
    return fig


def plot_width_vs_visibility(
    width: np.ndarray, visibility: np.ndarray, labels: Sequence[str], edges: np.ndarray
) -> Figure:
    """Posterior 68 % half-width against visibility, with binned medians.

    Parameters
    ----------
    width : numpy.ndarray
        Shape (N, D), θ units.
    visibility : numpy.ndarray
        Shape (N,), > 0.
    labels : sequence of str
        Parameter labels.
    edges : numpy.ndarray
        Visibility bin edges for the medians.

    Returns
    -------
    matplotlib.figure.Figure
    """
    d = width.shape[1]
    fig, axes = _grid(d)
    idx = np.digitize(visibility, edges) - 1
    centres = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else 0.5 * (edges[:-1] + edges[1:])
    for j, ax in enumerate(axes[:d]):
        ax.scatter(visibility, width[:, j], s=2, alpha=0.3, rasterized=True)
        med = [
            np.median(width[idx == b, j]) if np.any(idx == b) else np.nan
            for b in range(len(edges) - 1)
        ]
        ax.plot(centres, med, "o-", color="C3", label="binned median")
        ax.set(xscale="log", xlabel="visibility", ylabel=f"68% half-width of {labels[j]}")
    axes[0].legend(fontsize=7)
    return fig


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]]) -> Figure:
    """ROC curves (log false-positive axis to show the high-purity end).

    Parameters
    ----------
    curves : mapping of str to (fpr, tpr, auc)
        One curve per subset (e.g. all clusters, clusters above the detection threshold).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.subplots()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"{name} (AUC={auc:.4f})")
    ax.set(
        xscale="log",
        xlim=(1e-4, 1),
        ylim=(0, 1.01),
        xlabel="false-positive rate",
        ylabel="true-positive rate",
    )
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_reliability(diagrams: Mapping[str, dict]) -> Figure:
    """Reliability diagram of P(cluster): observed cluster fraction vs mean prediction per bin.

    Parameters
    ----------
    diagrams : mapping of str to dict
        Outputs of :func:`sbicluster.diagnostics.classification.reliability_diagram`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for i, (name, rel) in enumerate(diagrams.items()):
        ok = np.asarray(rel["count"]) > 0
        mp, fr = np.asarray(rel["mean_predicted"])[ok], np.asarray(rel["fraction_positive"])[ok]
        err = np.vstack(
            [fr - np.asarray(rel["fraction_low"])[ok], np.asarray(rel["fraction_high"])[ok] - fr]
        )
        ax.errorbar(
            mp,
            fr,
            yerr=np.clip(err, 0, None),
            fmt="o-",
            ms=3,
            color=f"C{i}",
            label=f"{name} (ECE={rel['ece']:.3f})",
        )
    ax.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(cluster)", ylabel="observed cluster fraction"
    )
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _coverage_result(d: Mapping) -> CoverageResult:
    """A :class:`CoverageResult` back from its ``to_dict`` form."""
    return CoverageResult(
        **{k: np.asarray(v, dtype=float) if isinstance(v, list) else v for k, v in d.items()}
    )


def plot_conditional_coverage(conditional: Mapping) -> Figure:
    """max |empirical − nominal| HPD coverage per region (x) and column (markers), against the
    95th percentile of an exact posterior's at each region's count (grey bars) and the tolerance
    (dashed line); from :func:`~sbicluster.diagnostics.conditional.conditional_coverage`."""
    rows = [r for r in conditional["regions"] if "columns" in r]
    columns = list(conditional["columns"])
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2.0), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    floors = [r["noise_floor"]["quantiles"]["0.95"] for r in rows]
    ax.bar(x, floors, color="0.85", width=0.8, label="exact posterior, 95th percentile")
    markers = "osD^v<>p*"
    for k, column in enumerate(columns):
        ax.plot(
            x + (k - (len(columns) - 1) / 2) * 0.12,
            [r["columns"][column]["max_abs_deviation"] for r in rows],
            markers[k % len(markers)],
            ms=4,
            label=column,
        )
    ax.axhline(conditional["tolerance"], color="k", ls="--", lw=1, label="tolerance")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['by']}\n{r['label']}" for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("max |empirical − nominal| coverage")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_lc2st_pp(pp: Sequence[Mapping], alpha: float = 0.05) -> Figure:
    """PP-plots of L-C2ST at a few probes: the empirical CDF of the classifier's predicted
    probabilities on base-distribution points at the probe, against the band (1 − ``alpha``
    central) of the classifiers trained under the null; a calibrated posterior stays inside it.
    ``pp`` entries as :func:`~sbicluster.diagnostics.local.local_c2st` returns them."""
    fig, axes = _grid(len(pp))
    grid = np.linspace(0.0, 1.0, 201)
    for ax, probe in zip(axes.flat, pp, strict=False):
        observed = (np.asarray(probe["probs"])[:, None] <= grid).mean(axis=0)
        null = (np.asarray(probe["probs_null"])[:, :, None] <= grid).mean(axis=1)
        low, high = np.quantile(null, [alpha / 2, 1 - alpha / 2], axis=0)
        ax.fill_between(grid, low, high, color="0.8", label=f"null, {1 - alpha:.0%} band")
        ax.plot(grid, observed, color="C3", label="observed")
        ax.set_title(f"visibility {probe['visibility']:.3g}", fontsize=9)
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("empirical CDF")
    axes.flat[0].legend(fontsize=7)
    return fig


def diagnostic_figures(
    metrics: Mapping,
    theta: np.ndarray,
    samples: np.ndarray | None = None,
    *,
    statistics: DrawStatistics | None = None,
    labels: Sequence[str],
    visibility: np.ndarray | None = None,
    p_cluster: np.ndarray | None = None,
    is_cluster: np.ndarray | None = None,
    visibility_all: np.ndarray | None = None,
) -> dict[str, Figure]:
    """Every figure of the diagnostics report, from :func:`~sbicluster.diagnostics.run.evaluate`'s
    metrics and the arrays they were computed from.

    What a figure shows beyond the metrics (SBC ranks, posterior medians and widths, ROC curves)
    is taken from the statistics modules' functions on the same arrays, so the figures show the
    numbers the metrics report.

    Parameters
    ----------
    metrics : mapping
        The metrics dictionary of :func:`~sbicluster.diagnostics.run.evaluate` (before or after
        :func:`~sbicluster.diagnostics.report.to_jsonable`).
    theta : numpy.ndarray
        Truths of the cluster objects, shape (N, D), θ units.
    samples : numpy.ndarray, optional
        Their posterior draws, shape (N, S, D), θ units; or instead ``statistics``.
    statistics : DrawStatistics, optional
        Their per-object statistics (:func:`~sbicluster.diagnostics.objects.draw_statistics`:
        SBC ranks, posterior medians and widths), what the figures read of the draws; give
        these or ``samples``.
    labels : sequence of str
        Axis labels with units, one per parameter.
    visibility : numpy.ndarray, optional
        True visibility of the cluster objects, shape (N,) (colours the truth-vs-median panels;
        without it there is no width-vs-visibility figure).
    p_cluster, is_cluster, visibility_all : numpy.ndarray, optional
        P(cluster), true label and true visibility of all test objects, shape (M,); used only
        when the metrics have a ``classification`` entry.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        Keys ``coverage``, ``conditional_coverage`` (with conditional coverage), ``sbc_ranks``, ``sbc_ecdf``, ``tarp`` (when the metrics have TARP),
        ``width_vs_visibility`` (with a positive visibility), ``truth_vs_median``, ``roc`` and
        ``reliability`` (with classification); each is written as ``<key>.png``.
    """
    names = list(metrics["parameters"])
    theta = np.asarray(theta, dtype=float)
    if statistics is None:
        if samples is None:
            raise ValueError("diagnostic_figures needs the draws (samples) or their statistics")
        statistics = draw_statistics(theta, samples)
    figures: dict[str, Figure] = {}
    cov = metrics["coverage"]
    regions = {"joint": cov["joint"]} if cov.get("joint") else {}
    regions.update({k: cov["marginal"][k] for k in names})
    figures["coverage"] = plot_coverage(
        {k: _coverage_result(v) for k, v in regions.items()}, cov["tolerance"]
    )
    if cov.get("conditional") and any("columns" in r for r in cov["conditional"]["regions"]):
        figures["conditional_coverage"] = plot_conditional_coverage(cov["conditional"])

    sbc = sbc_from_ranks(statistics.ranks, statistics.num_samples, names)
    figures["sbc_ranks"] = plot_sbc_ranks(sbc, labels)
    figures["sbc_ecdf"] = plot_sbc_ecdf(sbc, labels)

    if metrics.get("tarp"):
        t = metrics["tarp"]
        figures["tarp"] = plot_tarp(
            np.asarray(t["ecp"]), np.asarray(t["alpha"]), t["atc"], t["ks_pvalue"]
        )

    median = statistics.median
    color = None
    if visibility is not None:
        vis = np.asarray(visibility, dtype=float)
        pos = vis > 0
        if pos.any():
            figures["width_vs_visibility"] = plot_width_vs_visibility(
                statistics.width[pos],
                vis[pos],
                labels,
                np.geomspace(max(vis[pos].min(), 1e-3), vis[pos].max() * 1.0001, 9),
            )
        color = np.log10(np.maximum(vis, 1e-3))
    figures["truth_vs_median"] = plot_truth_vs_estimate(median, theta, labels, color)

    cls = metrics.get("classification")
    if cls and p_cluster is not None and is_cluster is not None:
        p = np.asarray(p_cluster, dtype=float)
        y = np.asarray(is_cluster).astype(bool)
        va = (
            np.asarray(visibility_all, dtype=float)
            if visibility_all is not None
            else np.full(p.shape, np.inf)
        )
        threshold = cls["detection_threshold"]
        detectable = ~y | (va >= threshold)
        figures["roc"] = plot_roc(
            {
                "all clusters": (*roc_curve(p, y)[:2], cls["auc"]),
                f"visibility ≥ {threshold:g}": (
                    *roc_curve(p[detectable], y[detectable])[:2],
                    cls["auc_detectable"],
                ),
            }
        )
        rel = {"all": cls["reliability"]}
        if (y & detectable).any():
            rel[f"visibility ≥ {threshold:g}"] = reliability_diagram(p[detectable], y[detectable])
        figures["reliability"] = plot_reliability(rel)
    return figures
