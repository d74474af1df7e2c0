"""Pictures of results: per-cutout corner plots with an RGB thumbnail, and the demo summary.

This module owns the figures a user looks at for individual cutouts. Calibration figures live in
:mod:`sbicluster.diagnostics.plots`. Labels, ranges and the number of panels come from the prior.
It must not run a model or read FITS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simulators.priors import ClusterPrior  # noqa: E402

from .files import atomic_path  # noqa: E402

__all__ = ["rgb_composite", "corner_figure", "save_figure", "summary_figure"]

_LEVELS = (0.68, 0.95)


def rgb_composite(
    image: np.ndarray, *, stretch: float = 5.0, percentile: float = 99.5
) -> np.ndarray:
    """Asinh-stretched RGB composite of a multi-band cutout (Lupton et al. 2004 style).

    Parameters
    ----------
    image : numpy.ndarray
        (C, H, W) e⁻/s per pixel, bands ordered blue to red. With three or more bands the
        bluest, middle and reddest become B, G, R; with two, G is their mean; with one, grey.
    stretch : float
        Softening of the asinh stretch, in units of each band's robust noise (larger = more linear).
    percentile : float
        Brightness percentile mapped to full scale.

    Returns
    -------
    numpy.ndarray
        float (H, W, 3) in [0, 1].
    """
    image = np.asarray(image, dtype=float)
    c = image.shape[0]
    picks = [c - 1, c // 2, 0] if c >= 3 else ([1, None, 0] if c == 2 else [0, 0, 0])
    planes = []
    for k in picks:
        plane = image[[0, 1]].mean(0) if k is None else image[k]
        sky = np.median(plane)
        noise = 1.4826 * np.median(np.abs(plane - sky)) + 1e-12
        planes.append(np.arcsinh((plane - sky) / (stretch * noise)))
    rgb = np.stack(planes, axis=-1)
    top = np.percentile(rgb, percentile)
    return np.clip(rgb / (top if top > 0 else 1.0), 0.0, 1.0)


def corner_figure(
    samples: np.ndarray,
    prior: ClusterPrior,
    *,
    image: np.ndarray | None = None,
    title: str = "",
    truth: Sequence[float] | None = None,
) -> Figure:
    """Corner plot of one cutout's posterior with 68 and 95% contours and an RGB thumbnail.

    Parameters
    ----------
    samples : numpy.ndarray
        (S, D) posterior draws, D = ``prior.dim``.
    prior : ClusterPrior
        Labels (with units) and plot ranges.
    image : numpy.ndarray, optional
        (C, H, W) cutout shown as an RGB thumbnail in the upper right.
    title : str
        Figure title (e.g. id, P(cluster) and visibility).
    truth : sequence of float, optional
        True parameter values, drawn as lines.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import corner

    low, high = prior.low().numpy(), prior.high().numpy()
    fig = corner.corner(
        np.asarray(samples, dtype=float),
        labels=list(prior.labels),
        range=list(zip(low, high, strict=True)),
        levels=_LEVELS,
        quantiles=(0.16, 0.5, 0.84),
        show_titles=True,
        title_fmt=".2f",
        truths=None if truth is None else list(truth),
        truth_color="tab:red",
        plot_datapoints=False,
        fill_contours=True,
        smooth=1.0,
        bins=30,
    )
    if image is not None:
        ax = fig.add_axes([0.63, 0.63, 0.33, 0.33])
        ax.imshow(rgb_composite(image), origin="lower", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("cutout (R, G, B = red → blue bands)", fontsize=8)
    if title:
        fig.suptitle(title, y=1.02, fontsize=11)
    return fig


def save_figure(
    fig: Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Save ``fig`` atomically as ``stem.<fmt>`` for each format, then close it."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def summary_figure(
    samples: np.ndarray,
    truth: np.ndarray,
    label: np.ndarray,
    p_cluster: np.ndarray,
    prior: ClusterPrior,
) -> Figure:
    """One-page summary of a mock field: recovered vs true per parameter, and P(cluster).

    Parameters
    ----------
    samples : numpy.ndarray
        (N, S, D) posterior draws for every cutout, D = ``prior.dim``.
    truth : numpy.ndarray
        (N, D) true parameters (meaningful where ``label == 1``).
    label : numpy.ndarray
        (N,) 1 for a simulated cluster, 0 for background only.
    p_cluster : numpy.ndarray
        (N,) predicted probability of being a cluster.
    prior : ClusterPrior
        Labels and ranges.

    Returns
    -------
    matplotlib.figure.Figure
    """
    dim = prior.dim
    fig, axes = plt.subplots(1, dim + 1, figsize=(4 * (dim + 1), 4.2))
    is_cluster = np.asarray(label) == 1
    median = np.median(samples, axis=1)
    lo, hi = np.percentile(samples, [16, 84], axis=1)
    for j, ax in enumerate(axes[:dim]):
        t, m = truth[is_cluster, j], median[is_cluster, j]
        err = np.stack([m - lo[is_cluster, j], hi[is_cluster, j] - m])
        ax.errorbar(t, m, yerr=err, fmt="o", ms=3, alpha=0.7, elinewidth=0.8)
        a, b = float(prior.low()[j]), float(prior.high()[j])
        ax.plot([a, b], [a, b], "k--", lw=0.8)
        ax.set_xlim(a, b)
        ax.set_ylim(a, b)
        ax.set_xlabel("true " + prior.labels[j])
        ax.set_ylabel("posterior median (16–84%)")
    bins = np.linspace(0, 1, 21)
    axes[dim].hist(p_cluster[is_cluster], bins=bins, alpha=0.7, label="clusters")
    axes[dim].hist(p_cluster[~is_cluster], bins=bins, alpha=0.7, label="background only")
    axes[dim].set_xlabel("P(cluster)")
    axes[dim].set_ylabel("cutouts")
    axes[dim].legend()
    fig.suptitle(
        f"Mock field: {is_cluster.sum()} clusters, {(~is_cluster).sum()} background cutouts"
    )
    fig.tight_layout()
    return fig
