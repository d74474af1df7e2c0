"""Point-estimate accuracy and posterior width of parameter estimates.

This module owns bias, robust scatter (1.4826 × median absolute deviation) and RMSE of posterior
medians against the truth, per parameter, overall, inside the reference paper's reliable range,
and binned by visibility; the posterior width versus visibility; and the log score of the truth
(−log q(θ*|x), which compares posteriors of different form on one test set). It works on numpy
arrays and must not know about models, simulators or plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAD_TO_SIGMA",
    "PAPER_RELIABLE_RANGE",
    "robust_sigma",
    "point_accuracy",
    "reliable_range_mask",
    "posterior_width",
    "width_summary",
    "negative_log_density",
    "binned_by",
]

MAD_TO_SIGMA = 1.4826
"""Factor turning a median absolute deviation into a Gaussian-equivalent σ."""

PAPER_RELIABLE_RANGE: dict[str, tuple[float, float]] = {
    "log_age": (-math.inf, 8.0),  # age ≤ 100 Myr
    "log_mass": (math.log10(3e3), math.log10(3e5)),  # 3×10³–3×10⁵ M☉
    "log_rh": (math.log10(0.9), math.log10(8.7)),  # 0.9–8.7 pc
    "av": (0.0, 3.0),  # mag
}
"""Bialopetravičius & Narbutis (2020) range where their mock recovery is reliable, in θ units."""


def robust_sigma(x: np.ndarray, axis: int | None = 0) -> np.ndarray:
    """Robust standard deviation: 1.4826 × median(|x − median(x)|).

    Parameters
    ----------
    x : numpy.ndarray
        Values (any units; the result has the same units).
    axis : int or None
        Axis to reduce.

    Returns
    -------
    numpy.ndarray
        σ estimate, consistent for Gaussian data.
    """
    x = np.asarray(x, dtype=float)
    med = np.median(x, axis=axis, keepdims=True)
    return MAD_TO_SIGMA * np.median(np.abs(x - med), axis=axis)


def point_accuracy(
    estimate: np.ndarray, theta: np.ndarray, names: Sequence[str], mask: np.ndarray | None = None
) -> dict:
    """Bias, robust scatter and RMSE of point estimates, per parameter.

    Parameters
    ----------
    estimate : numpy.ndarray
        Point estimates (e.g. posterior medians), shape (N, D), in θ units.
    theta : numpy.ndarray
        Truth, shape (N, D).
    names : sequence of str
        Parameter names, length D.
    mask : numpy.ndarray of bool, optional
        Objects to include, shape (N,).

    Returns
    -------
    dict
        ``{"n": int, name: {"bias", "median_offset", "robust_sigma", "rmse"}}`` with values in the
        units of that parameter (``None`` when no object is selected). ``bias`` is the mean
        residual (estimate − truth), ``median_offset`` its median.
    """
    res = np.asarray(estimate, dtype=float) - np.asarray(theta, dtype=float)
    if mask is not None:
        res = res[np.asarray(mask, dtype=bool)]
    out: dict = {"n": int(res.shape[0])}
    for d, name in enumerate(names):
        r = res[:, d]
        if r.size == 0:
            out[name] = {"bias": None, "median_offset": None, "robust_sigma": None, "rmse": None}
            continue
        out[name] = {
            "bias": float(r.mean()),
            "median_offset": float(np.median(r)),
            "robust_sigma": float(robust_sigma(r)),
            "rmse": float(np.sqrt(np.mean(r**2))),
        }
    return out


def reliable_range_mask(
    theta: np.ndarray, names: Sequence[str], ranges: dict[str, tuple[float, float]] | None = None
) -> np.ndarray:
    """Objects whose true parameters lie inside a box (default: the paper's reliable range).

    Parameters
    ----------
    theta : numpy.ndarray
        Shape (N, D), θ units.
    names : sequence of str
        Parameter names, length D.
    ranges : dict, optional
        name → (low, high) in θ units; default :data:`PAPER_RELIABLE_RANGE`.

    Returns
    -------
    numpy.ndarray
        bool, shape (N,).
    """
    ranges = PAPER_RELIABLE_RANGE if ranges is None else ranges
    theta = np.asarray(theta, dtype=float)
    mask = np.ones(theta.shape[0], dtype=bool)
    for d, name in enumerate(names):
        if name in ranges:
            lo, hi = ranges[name]
            mask &= (theta[:, d] >= lo) & (theta[:, d] <= hi)
    return mask


def posterior_width(samples: np.ndarray) -> np.ndarray:
    """Half-width of the central 68 % interval of posterior draws, (q84 − q16)/2.

    Parameters
    ----------
    samples : numpy.ndarray
        Shape (N, S, D).

    Returns
    -------
    numpy.ndarray
        Shape (N, D), θ units (a Gaussian-equivalent σ).
    """
    q16, q84 = np.quantile(np.asarray(samples, dtype=float), [0.16, 0.84], axis=1)
    return 0.5 * (q84 - q16)


def width_summary(samples: np.ndarray, names: Sequence[str]) -> dict:
    """Median and mean over objects of the posterior half-width (q84 − q16)/2, per parameter.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D), θ units.
    names : sequence of str
        Parameter names, length D.

    Returns
    -------
    dict
        ``{name: {"median": float, "mean": float}}`` in the units of that parameter; ``median`` is
        :func:`~sbicluster.diagnostics.run.evaluate`'s ``median_width_overall``.
    """
    width = posterior_width(samples)
    return {
        name: {"median": float(np.median(width[:, j])), "mean": float(width[:, j].mean())}
        for j, name in enumerate(names)
    }


def negative_log_density(log_prob_true: np.ndarray) -> dict:
    """Log score of the truth: −log q(θ*|x) over the test objects.

    Parameters
    ----------
    log_prob_true : numpy.ndarray
        log q(θ*_i | x_i), shape (N,), N ≥ 2, nats in θ units (a density normalised over the
        prior box, so that posteriors of different form compare).

    Returns
    -------
    dict
        ``mean``, ``stderr`` (standard error of the mean, sample standard deviation / √N) and
        ``median`` of −log q(θ*|x), nats.
    """
    nlp = -np.asarray(log_prob_true, dtype=float)
    return {
        "mean": float(nlp.mean()),
        "stderr": float(nlp.std(ddof=1) / math.sqrt(len(nlp))),
        "median": float(np.median(nlp)),
    }


def binned_by(
    values: np.ndarray, key: np.ndarray, edges: Sequence[float], statistic=np.median
) -> dict:
    """A statistic of ``values`` in bins of ``key`` (e.g. posterior width vs visibility).

    Parameters
    ----------
    values : numpy.ndarray
        Shape (N,) or (N, D).
    key : numpy.ndarray
        Shape (N,), the binning variable.
    edges : sequence of float
        Bin edges, increasing; bins are [e_i, e_{i+1}).
    statistic : callable
        Reduction over axis 0 (default median).

    Returns
    -------
    dict
        ``edges`` (B+1,), ``count`` (B,), ``value`` (B,) or (B, D) with NaN for empty bins.
    """
    values = np.asarray(values, dtype=float)
    key = np.asarray(key, dtype=float)
    edges = np.asarray(edges, dtype=float)
    idx = np.digitize(key, edges) - 1
    nb = len(edges) - 1
    shape = (nb,) + values.shape[1:]
    out = np.full(shape, np.nan)
    count = np.zeros(nb, dtype=int)
    for b in range(nb):
        sel = idx == b
        count[b] = int(sel.sum())
        if count[b]:
            out[b] = statistic(values[sel], axis=0)
    return {"edges": edges, "count": count, "value": out}
