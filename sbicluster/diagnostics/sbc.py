"""Simulation-based calibration (SBC): rank statistics of the truth among posterior draws.

This module owns the rank computation, the uniformity tests (Kolmogorov–Smirnov and binned χ²,
with p-values) and the ECDF-difference curve with a simultaneous band. It works on numpy arrays
and must not know about models, simulators or plotting.

For a calibrated posterior, the rank r = #{s : θ_s < θ*} of the true value among S posterior draws
is uniform on {0, ..., S} for every parameter (Talts et al. 2018, arXiv:1804.06788). A ∪-shaped
histogram means overconfidence, a ∩-shape underconfidence, a slope bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = [
    "SBCResult",
    "sbc_ranks",
    "uniformity_tests",
    "rank_ecdf_difference",
    "run_sbc_checks",
    "sbc_from_ranks",
]


@dataclass
class SBCResult:
    """Ranks and their uniformity tests.

    Attributes
    ----------
    ranks : numpy.ndarray
        int, shape (N, D), in {0, ..., num_samples}.
    num_samples : int
        Number of posterior draws S each rank was taken among.
    names : tuple of str
        Parameter names, length D.
    ks_pvalue, chi2_pvalue : numpy.ndarray
        Per-parameter p-values of the KS and binned χ² tests of uniformity, shape (D,).
    num_bins : int
        Number of bins of the χ² test (and of the rank histograms).
    """

    ranks: np.ndarray
    num_samples: int
    names: tuple[str, ...]
    ks_pvalue: np.ndarray
    chi2_pvalue: np.ndarray
    num_bins: int
    extra: dict = field(default_factory=dict)

    def rejected(self, alpha: float = 0.01) -> np.ndarray:
        """Boolean (D,): uniformity rejected at level ``alpha`` by either test (Bonferroni over the two)."""
        return np.minimum(self.ks_pvalue, self.chi2_pvalue) < alpha / 2.0

    def to_dict(self, alpha: float = 0.01) -> dict:
        """JSON-serialisable summary (without the raw ranks)."""
        rej = self.rejected(alpha)
        return {
            "num_samples": self.num_samples,
            "num_objects": int(self.ranks.shape[0]),
            "num_bins": self.num_bins,
            "alpha": alpha,
            "per_parameter": {
                name: {
                    "ks_pvalue": float(self.ks_pvalue[d]),
                    "chi2_pvalue": float(self.chi2_pvalue[d]),
                    "uniformity_rejected": bool(rej[d]),
                }
                for d, name in enumerate(self.names)
            },
        }


def sbc_ranks(samples: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rank of each true parameter among its posterior draws.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D).
    theta : numpy.ndarray
        True parameters, shape (N, D), same units.

    Returns
    -------
    numpy.ndarray
        int64, shape (N, D): number of draws strictly below the truth, in {0, ..., S}.
    """
    samples = np.asarray(samples)
    theta = np.asarray(theta)
    if samples.ndim != 3 or theta.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(
            f"expected samples (N, S, D) and theta (N, D), got {samples.shape} and {theta.shape}"
        )
    return (samples < theta[:, None, :]).sum(axis=1).astype(np.int64)


def _chi2_bins(num_samples: int, num_bins: int) -> np.ndarray:
    # integer edges on the S + 1 possible rank values, so expected counts are exact
    return np.unique(np.round(np.linspace(0, num_samples + 1, num_bins + 1)).astype(int))


def uniformity_tests(
    ranks: np.ndarray, num_samples: int, num_bins: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """KS and χ² tests of discrete uniformity of ranks on {0, ..., S}.

    Parameters
    ----------
    ranks : numpy.ndarray
        Shape (N, D) or (N,).
    num_samples : int
        S, the number of draws the ranks were taken among.
    num_bins : int, optional
        χ² bins; default min(20, N // 10, S + 1), at least 2.

    Returns
    -------
    ks_pvalue, chi2_pvalue : numpy.ndarray
        Shape (D,).
    num_bins : int
        Bins actually used.

    Notes
    -----
    The KS test compares (r + U)/(S + 1), with U uniform jitter fixed to 0.5, against U(0, 1); for
    S ≳ 100 the discreteness is negligible. The χ² test uses exact expected counts on integer bins.
    """
    r = np.asarray(ranks, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    n = r.shape[0]
    if num_bins is None:
        num_bins = int(max(2, min(20, n // 10, num_samples + 1)))
    edges = _chi2_bins(num_samples, num_bins)
    expected = np.diff(edges) / (num_samples + 1) * n
    ks, chi2 = [], []
    for d in range(r.shape[1]):
        u = (r[:, d] + 0.5) / (num_samples + 1)
        ks.append(stats.kstest(u, "uniform").pvalue)
        counts = np.histogram(r[:, d], bins=edges - 0.5)[0]
        chi2.append(stats.chisquare(counts, expected).pvalue)
    return np.asarray(ks), np.asarray(chi2), len(edges) - 1


def rank_ecdf_difference(
    ranks: np.ndarray, num_samples: int, *, num_points: int = 101, band_prob: float = 0.99
) -> dict:
    """ECDF of normalised ranks minus the uniform CDF, with a simultaneous band.

    Parameters
    ----------
    ranks : numpy.ndarray
        Shape (N, D).
    num_samples : int
        S.
    num_points : int
        Evaluation points on [0, 1].
    band_prob : float
        Simultaneous probability content of the band (arviz's optimised ECDF band; Säilynoja et
        al. 2022, arXiv:2103.10522).

    Returns
    -------
    dict
        ``x`` (P,), ``difference`` (D, P), ``band_low`` and ``band_high`` (P,), all as fractions.
    """
    from arviz.stats.ecdf_utils import ecdf_confidence_band

    r = np.asarray(ranks, dtype=float)
    n = r.shape[0]
    u = (r + 0.5) / (num_samples + 1)
    x = np.linspace(0.0, 1.0, num_points)
    ecdf = (u[:, None, :] <= x[None, :, None]).mean(axis=0).T  # (D, P)
    try:
        low, high = ecdf_confidence_band(n, x, x, prob=band_prob, method="optimized")
    except Exception:  # noqa: BLE001 - fall back to pointwise binomial band
        low, high = (
            stats.binom.ppf((1 - band_prob) / 2, n, x) / n,
            stats.binom.ppf((1 + band_prob) / 2, n, x) / n,
        )
    return {"x": x, "difference": ecdf - x[None, :], "band_low": low - x, "band_high": high - x}


def run_sbc_checks(
    samples: np.ndarray,
    theta: np.ndarray,
    names: Sequence[str] | None = None,
    num_bins: int | None = None,
) -> SBCResult:
    """Ranks plus uniformity tests in one call.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D).
    theta : numpy.ndarray
        True parameters, shape (N, D).
    names : sequence of str, optional
        Parameter names (default ``theta_0`` ...).
    num_bins : int, optional
        χ² bins (see :func:`uniformity_tests`).

    Returns
    -------
    SBCResult
    """
    return sbc_from_ranks(sbc_ranks(samples, theta), np.asarray(samples).shape[1], names, num_bins)


def sbc_from_ranks(
    ranks: np.ndarray,
    num_samples: int,
    names: Sequence[str] | None = None,
    num_bins: int | None = None,
) -> SBCResult:
    """Uniformity tests of ranks computed elsewhere (e.g. chunk by chunk).

    Parameters
    ----------
    ranks : numpy.ndarray
        int, shape (N, D), in {0, ..., ``num_samples``} (:func:`sbc_ranks`).
    num_samples : int
        Number of posterior draws S the ranks were taken among.
    names : sequence of str, optional
        Parameter names (default ``theta_0`` ...).
    num_bins : int, optional
        χ² bins (see :func:`uniformity_tests`).

    Returns
    -------
    SBCResult
    """
    ranks = np.asarray(ranks)
    names = (
        tuple(names) if names is not None else tuple(f"theta_{d}" for d in range(ranks.shape[1]))
    )
    ks, chi2, bins = uniformity_tests(ranks, num_samples, num_bins)
    return SBCResult(
        ranks=ranks,
        num_samples=int(num_samples),
        names=names,
        ks_pvalue=ks,
        chi2_pvalue=chi2,
        num_bins=bins,
    )
