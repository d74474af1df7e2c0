"""Coverage conditional on what the cluster is: HPD coverage in regions of visibility and of each
true parameter, each read against the noise floor of its own count.

An averaged coverage curve can hide a posterior that is too narrow for faint clusters and too
wide for bright ones. This module splits the test objects into regions (visibility bins, terciles
of each true parameter) and computes, in each, the coverage of the joint and of every marginal
HPD region from the per-object credibility values, with binomial bands and the finite-sample
noise floor of max |empirical − nominal| for that region's count
(:func:`~sbicluster.diagnostics.coverage.calibrated_max_deviation`). It also bounds the chance
that an *exact* posterior would meet the tolerance in every region and column at once (a union
bound over them), so a report can say whether its test set is large enough for the goal to be
meaningful. It works on plain numpy arrays and must not know about models or plotting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .coverage import CREDIBILITY_LEVELS, calibrated_max_deviation, coverage_from_credibility

__all__ = ["VISIBILITY_REGIONS", "region_masks", "conditional_coverage"]

VISIBILITY_REGIONS = np.array([0.0, 20.0, 100.0, np.inf])
"""Visibility bins of the conditional coverage (faint, intermediate, bright)."""

MIN_REGION = 30
"""Fewest objects in a region for its coverage to be reported."""


def region_masks(visibility: np.ndarray, theta: np.ndarray, names: Sequence[str]) -> list[dict]:
    """The regions of the conditional coverage and their member masks.

    Parameters
    ----------
    visibility : numpy.ndarray
        True visibility of each object, shape (N,).
    theta : numpy.ndarray
        True parameters, shape (N, D), columns named by ``names``.
    names : sequence of str
        Parameter names.

    Returns
    -------
    list of dict
        One per region: ``by`` (``"visibility"`` or a parameter name), ``range`` [low, high)
        in that quantity's units, ``label`` (e.g. ``"tercile 1"``) and ``mask`` (N,) bool.
    """
    vis = np.asarray(visibility, dtype=float)
    theta = np.asarray(theta, dtype=float)
    regions = []
    for lo, hi in zip(VISIBILITY_REGIONS[:-1], VISIBILITY_REGIONS[1:], strict=True):
        regions.append(
            {
                "by": "visibility",
                "range": [float(lo), float(hi)],
                "label": f"{lo:g}–{hi:g}",
                "mask": (vis >= lo) & (vis < hi),
            }
        )
    for j, name in enumerate(names):
        edges = np.quantile(theta[:, j], [0.0, 1 / 3, 2 / 3, 1.0])
        for t in range(3):
            upper = theta[:, j] <= edges[t + 1] if t == 2 else theta[:, j] < edges[t + 1]
            regions.append(
                {
                    "by": name,
                    "range": [float(edges[t]), float(edges[t + 1])],
                    "label": f"tercile {t + 1}",
                    "mask": (theta[:, j] >= edges[t]) & upper,
                }
            )
    return regions


def conditional_coverage(
    credibility: Mapping[str, np.ndarray],
    regions: Sequence[dict],
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
    *,
    tolerance: float = 0.03,
    band_confidence: float = 0.99,
    min_count: int = MIN_REGION,
) -> dict:
    """HPD coverage per region and per column, against each region's noise floor.

    Parameters
    ----------
    credibility : mapping of str to numpy.ndarray
        Per-object smallest containing credibility, shape (N,) each, in [0, 1]: ``"joint"`` and
        one entry per parameter (the truth lies in the level-c region iff the value is < c).
    regions : sequence of dict
        From :func:`region_masks`.
    levels : array_like
        Nominal levels.
    tolerance : float
        The goal on max |empirical − nominal|.
    band_confidence : float
        Content of the per-level binomial bands.
    min_count : int
        Regions with fewer objects are listed with their count only.

    Returns
    -------
    dict
        ``regions``: one entry per region with ``by``, ``range``, ``label``, ``n`` and, when
        ``n ≥ min_count``, ``columns`` ({column: coverage dict}), ``noise_floor``
        (:func:`calibrated_max_deviation` for ``n``), ``meets`` ({column: bool}) and ``worst``
        (largest max |Δ| and its column); ``all_meet`` (every reported region and column within
        ``tolerance``); ``exact_meets_all_at_least`` (a lower bound, 1 − Σ P(exceed), on the
        probability that an exact posterior would meet the tolerance everywhere with these
        counts); ``worst`` over all regions; ``tolerance``; ``columns``.
    """
    columns = list(credibility)
    floors: dict[int, dict] = {}
    rows, p_exceed_sum, all_meet = [], 0.0, True
    worst = {"max_abs_deviation": 0.0}
    for region in regions:
        mask = np.asarray(region["mask"], dtype=bool)
        n = int(mask.sum())
        row = {k: region[k] for k in ("by", "range", "label")} | {"n": n}
        if n >= min_count:
            if n not in floors:
                floors[n] = calibrated_max_deviation(
                    n, levels, tolerance=tolerance, n_experiments=4000
                )
            row["noise_floor"] = floors[n]
            row["columns"], row["meets"] = {}, {}
            for column in columns:
                result = coverage_from_credibility(
                    np.asarray(credibility[column])[mask], levels, band_confidence=band_confidence
                )
                row["columns"][column] = result.to_dict()
                row["meets"][column] = result.meets(tolerance)
                all_meet &= row["meets"][column]
                p_exceed_sum += floors[n]["p_exceed"]
                if result.max_abs_deviation > worst["max_abs_deviation"]:
                    worst = {
                        "max_abs_deviation": result.max_abs_deviation,
                        "column": column,
                        "by": row["by"],
                        "label": row["label"],
                    }
            best = max(row["columns"].items(), key=lambda kv: kv[1]["max_abs_deviation"])
            row["worst"] = {"column": best[0], "max_abs_deviation": best[1]["max_abs_deviation"]}
        rows.append(row)
    return {
        "tolerance": tolerance,
        "columns": columns,
        "regions": rows,
        "all_meet": bool(all_meet),
        "exact_meets_all_at_least": float(max(0.0, 1.0 - p_exceed_sum)),
        "worst": worst,
    }
