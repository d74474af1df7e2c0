"""Expected coverage of highest-posterior-density (HPD) regions, joint and per parameter.

This module owns the coverage arithmetic: given posterior draws (and, for the joint region, the
log density of those draws and of the true parameters) it says how often the truth falls inside
the HPD region of each credibility level, with binomial uncertainty bands and a verdict
(calibrated / overconfident / underconfident). It works on plain numpy arrays and must not know
about models, simulators or plotting.

Construction
------------
For one test object with true parameters θ* and posterior draws θ_1..θ_S from q(θ | x), the joint
HPD region of credibility c is {θ : q(θ|x) ≥ q_c}, where q_c leaves a fraction c of the mass above
it. θ* lies inside it iff the fraction of draws with q(θ_s|x) > q(θ*|x) is below c (the "expected
coverage" construction of sbi's ``run_sbc`` with a log-probability reduce function; Hermans et al.
2022, arXiv:2110.06581). Per parameter, the 1-D HPD region is the
superlevel set of a kernel density estimate of the marginal draws (see
:func:`marginal_credibility` for why this is unbiased with finitely many draws).

Ties: when the density is piecewise constant (a binned posterior), draws in the truth's bin have
exactly the truth's density, and counting only strictly denser draws puts the truth in front of
all of them — credibility biased low, coverage biased high. :func:`hpd_credibility_ties` splits
such ties at a uniform random position (a randomised rank, uniform under calibration); for a
continuous density ties have probability 0 and it returns the strict count. :func:`joint_coverage`
uses it when given a generator.

For a calibrated posterior the empirical coverage at level c is Binomial(N, c)/N distributed over
N test objects; below the band means overconfident (too narrow or biased), above it
underconfident (too wide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = [
    "CREDIBILITY_LEVELS",
    "CoverageResult",
    "binomial_band",
    "calibrated_max_deviation",
    "hpd_credibility_joint",
    "hpd_credibility_ties",
    "marginal_credibility",
    "kde_credibility_joint",
    "coverage_from_credibility",
    "joint_coverage",
    "marginal_coverage",
]

CREDIBILITY_LEVELS: np.ndarray = np.round(np.arange(0.05, 0.951, 0.05), 2)
"""Nominal credibility levels 0.05, 0.10, ..., 0.95."""


@dataclass
class CoverageResult:
    """Empirical coverage of HPD regions at a set of nominal credibility levels.

    Attributes
    ----------
    levels : numpy.ndarray
        Nominal credibility levels, shape (L,), in (0, 1).
    empirical : numpy.ndarray
        Fraction of test objects whose truth lies inside the region, shape (L,).
    band_low, band_high : numpy.ndarray
        Central binomial band of ``empirical`` for a calibrated posterior, shape (L,).
    n : int
        Number of test objects.
    band_confidence : float
        Probability content of the band (per level).
    verdict : str
        ``"calibrated"``, ``"overconfident"``, ``"underconfident"`` or ``"mixed"`` (some levels
        significantly below the band, some above — typical of a biased posterior).
    max_abs_deviation : float
        max over levels of |empirical − nominal|.
    """

    levels: np.ndarray
    empirical: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    n: int
    band_confidence: float
    verdict: str
    max_abs_deviation: float

    def meets(self, tolerance: float = 0.03) -> bool:
        """Whether |empirical − nominal| ≤ ``tolerance`` at every level."""
        return bool(self.max_abs_deviation <= tolerance)

    def to_dict(self) -> dict:
        """JSON-serialisable form (arrays become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                out[key] = value.tolist()
        return out


def binomial_band(
    n: int, levels: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Central binomial interval of an empirical coverage fraction under perfect calibration.

    Parameters
    ----------
    n : int
        Number of test objects (trials).
    levels : array_like
        Nominal credibility levels (success probabilities), shape (L,).
    confidence : float
        Probability content of the central interval, e.g. 0.95.

    Returns
    -------
    low, high : numpy.ndarray
        Bounds on the fraction (dimensionless), shape (L,).
    """
    if n < 1:
        raise ValueError(f"binomial_band needs at least one test object, got n={n}")
    p = np.asarray(levels, dtype=float)
    tail = (1.0 - confidence) / 2.0
    low = stats.binom.ppf(tail, n, p) / n
    high = stats.binom.ppf(1.0 - tail, n, p) / n
    return low, high


def calibrated_max_deviation(
    n: int,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
    *,
    tolerance: float = 0.03,
    quantiles: Sequence[float] = (0.5, 0.95),
    n_experiments: int = 20_000,
    seed: int = 0,
) -> dict:
    """Finite-sample noise floor of ``max_abs_deviation`` for a perfectly calibrated posterior.

    With N test objects the empirical coverage of even an exact posterior scatters around the
    nominal levels (its credibility values are N uniform draws); the largest deviation over the
    levels is then of order 1/√N (Kolmogorov–Smirnov-like). This simulates that statistic so a
    measured deviation can be read against it.

    Parameters
    ----------
    n : int
        Number of test objects.
    levels : array_like
        Nominal credibility levels, increasing, in (0, 1).
    tolerance : float
        Threshold whose exceedance probability is reported.
    quantiles : sequence of float
        Quantiles of the statistic to report.
    n_experiments : int
        Simulated test sets.
    seed : int
        Seed of the numpy generator.

    Returns
    -------
    dict
        ``n``, ``quantiles`` ({q: value}), ``p_exceed`` (probability that max |Δ| > ``tolerance``)
        and ``tolerance``.
    """
    if n < 1:
        raise ValueError(f"calibrated_max_deviation needs n >= 1, got {n}")
    levels = np.asarray(levels, dtype=float)
    rng = np.random.default_rng(seed)
    cells = np.diff(np.concatenate([[0.0], levels, [1.0]]))
    counts = rng.multinomial(n, cells, size=n_experiments)[:, :-1]  # objects between levels
    deviation = np.abs(np.cumsum(counts, axis=1) / n - levels).max(axis=1)
    return {
        "n": int(n),
        "tolerance": float(tolerance),
        "quantiles": {f"{q:g}": float(np.quantile(deviation, q)) for q in quantiles},
        "p_exceed": float((deviation > tolerance).mean()),
    }


def hpd_credibility_joint(log_prob_true: np.ndarray, log_prob_samples: np.ndarray) -> np.ndarray:
    """Smallest joint HPD credibility level whose region contains the truth, per test object.

    Parameters
    ----------
    log_prob_true : numpy.ndarray
        log q(θ*_i | x_i), shape (N,).
    log_prob_samples : numpy.ndarray
        log q(θ_is | x_i) of posterior draws θ_is ~ q(θ | x_i), shape (N, S).

    Returns
    -------
    numpy.ndarray
        Fraction of draws denser than the truth, shape (N,), in [0, 1]. θ*_i lies in the HPD
        region of credibility c iff this value is < c. Uniform on [0, 1] for a calibrated
        posterior.
    """
    lp_true = np.asarray(log_prob_true, dtype=float)
    lp_s = np.asarray(log_prob_samples, dtype=float)
    if lp_s.ndim != 2 or lp_true.shape != lp_s.shape[:1]:
        raise ValueError(
            f"expected log_prob_true (N,) and log_prob_samples (N, S), got {lp_true.shape} and {lp_s.shape}"
        )
    return (lp_s > lp_true[:, None]).mean(axis=1)


def hpd_credibility_ties(
    log_prob_true: np.ndarray, log_prob_samples: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Smallest joint HPD credibility containing the truth, with ties split at random.

    Parameters
    ----------
    log_prob_true : numpy.ndarray
        log q(θ*_i | x_i), shape (N,), nats.
    log_prob_samples : numpy.ndarray
        log q(θ_is | x_i) of posterior draws θ_is ~ q(θ | x_i), shape (N, S), nats.
    rng : numpy.random.Generator
        Source of the tie-breaking uniforms (one per object, drawn whether or not it has ties).

    Returns
    -------
    numpy.ndarray
        Shape (N,), in [0, 1]: (#draws denser than the truth + U · #draws exactly as dense) / S,
        U ~ U(0, 1). Equals :func:`hpd_credibility_joint` wherever no draw ties with the truth
        (a continuous density); for a piecewise-constant density (every draw in the truth's bin
        ties with it) it stays uniform under calibration, where the strict count would be biased
        low (coverage biased high).
    """
    lp_true = np.asarray(log_prob_true, dtype=float)
    lp_s = np.asarray(log_prob_samples, dtype=float)
    if lp_s.ndim != 2 or lp_true.shape != lp_s.shape[:1]:
        raise ValueError(
            f"expected log_prob_true (N,) and log_prob_samples (N, S), got {lp_true.shape} and {lp_s.shape}"
        )
    greater = (lp_s > lp_true[:, None]).mean(axis=1)
    equal = (lp_s == lp_true[:, None]).mean(axis=1)
    return greater + rng.uniform(size=greater.shape) * equal


def _split_draws(samples, theta, num_kde: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked float arrays (N, S, D) and (N, D), and how many draws build the density."""
    samples = np.asarray(samples, dtype=float)
    theta = np.asarray(theta, dtype=float)
    if samples.ndim != 3 or theta.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(
            f"expected samples (N, S, D) and theta (N, D), got {samples.shape} and {theta.shape}"
        )
    k = min(num_kde, samples.shape[1] // 2)
    if k < 2:
        raise ValueError(
            f"coverage needs at least 4 posterior draws per object, got {samples.shape[1]}"
        )
    return samples, theta, k


def _robust_spread(draws: np.ndarray) -> np.ndarray:
    """Per object and dimension, min(σ, IQR / 1.349) of draws (c, k, D), σ where that is 0."""
    q75, q25 = np.percentile(draws, [75, 25], axis=1)
    spread = np.minimum(draws.std(axis=1), (q75 - q25) / 1.349)
    return np.where(spread > 0, spread, np.maximum(draws.std(axis=1), 1e-12))


def marginal_credibility(
    samples: np.ndarray, theta: np.ndarray, *, num_kde: int = 128, chunk: int = 128
) -> np.ndarray:
    """Smallest 1-D HPD credibility level whose region contains the truth, per object and parameter.

    The marginal density is estimated with a Gaussian kernel density estimate built from the first
    ``num_kde`` draws (Silverman bandwidth with a robust σ); the truth is then ranked by that
    density among the *remaining* draws. Because the density estimate is independent of the draws
    that are ranked, the truth and those draws are exchangeable under a calibrated posterior and
    the returned value is exactly uniform — a finite-sample-unbiased construction (the naive
    shortest interval of the same draws is biased towards overconfidence by a few per cent at
    S ≈ 500). The kernel estimate only decides how close the regions are to true HPD regions;
    multimodal marginals are handled.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D), S > ``num_kde``.
    theta : numpy.ndarray
        True parameters, shape (N, D), same units.
    num_kde : int
        Draws used for the density estimate (at most S // 2).
    chunk : int
        Objects processed at a time (bounds memory to chunk × num_kde × (S − num_kde) floats).

    Returns
    -------
    numpy.ndarray
        Shape (N, D), in [0, 1]; the truth lies in the level-c region iff the value is < c.
    """
    samples, theta, k = _split_draws(samples, theta, num_kde)
    n, s, d = samples.shape
    out = np.empty((n, d))
    for i0 in range(0, n, chunk):
        kde = samples[i0 : i0 + chunk, :k, :]  # (c, k, D)
        ranked = samples[i0 : i0 + chunk, k:, :]  # (c, s-k, D)
        spread = _robust_spread(kde).astype(np.float32)
        h = (np.float32(0.9 * k ** (-0.2)) * spread)[:, None, None, :]  # (c, 1, 1, D)

        def density(points: np.ndarray, kde=kde, h=h) -> np.ndarray:
            z = (points[:, :, None, :] - kde[:, None, :, :]) / h
            z *= z
            z *= np.float32(-0.5)
            return np.exp(z, out=z).mean(axis=2)  # (c, P, D), unnormalised (same h throughout)

        dens_true = density(theta[i0 : i0 + chunk, None, :])[:, 0, :]  # (c, D)
        dens_draws = density(ranked)  # (c, s-k, D)
        out[i0 : i0 + chunk] = (dens_draws > dens_true[:, None, :]).mean(axis=1)
    return out


def kde_credibility_joint(
    samples: np.ndarray, theta: np.ndarray, *, num_kde: int = 128, chunk: int = 64
) -> np.ndarray:
    """Joint HPD credibility of the truth under a density estimated from the draws themselves.

    For a posterior known only through draws, e.g. the marginal over some of a flow's
    parameters: a Gaussian product-kernel density estimate from the first ``num_kde`` draws
    (bandwidth per dimension: Silverman's multivariate factor times a robust σ) ranks the truth
    among the *remaining* draws, the construction of :func:`marginal_credibility` in D
    dimensions. The truth and the ranked draws are exchangeable under a calibrated posterior, so
    the result is exactly uniform then, however rough the density estimate; the estimate only
    decides how close the regions are to true HPD regions.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D), S > ``num_kde``.
    theta : numpy.ndarray
        True parameters, shape (N, D), same units.
    num_kde : int
        Draws used for the density estimate (at most S // 2).
    chunk : int
        Objects processed at a time (memory: chunk × num_kde × (S − num_kde) floats).

    Returns
    -------
    numpy.ndarray
        Shape (N,), in [0, 1]; the truth lies in the level-c region iff the value is < c.
    """
    samples, theta, k = _split_draws(samples, theta, num_kde)
    n, s, d = samples.shape
    factor = (4.0 / (d + 2)) ** (1 / (d + 4)) * k ** (-1 / (d + 4))
    out = np.empty(n)
    for i0 in range(0, n, chunk):
        kde = samples[i0 : i0 + chunk, :k, :]
        h = (factor * _robust_spread(kde))[:, None, None, :]

        def density(points: np.ndarray, kde=kde, h=h) -> np.ndarray:
            z = ((points[:, :, None, :] - kde[:, None, :, :]) / h).astype(np.float32)
            return np.exp(-0.5 * (z * z).sum(-1)).mean(axis=2)  # (c, P), unnormalised

        dens_true = density(theta[i0 : i0 + chunk, None, :])[:, 0]
        dens_draws = density(samples[i0 : i0 + chunk, k:, :])
        out[i0 : i0 + chunk] = (dens_draws > dens_true[:, None]).mean(axis=1)
    return out


def coverage_from_credibility(
    credibility: np.ndarray,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
    *,
    band_confidence: float = 0.99,
) -> CoverageResult:
    """Coverage curve from per-object smallest-containing credibility values.

    Parameters
    ----------
    credibility : numpy.ndarray
        Shape (N,), in [0, 1] (e.g. from :func:`hpd_credibility_joint`); the truth is inside the
        level-c region iff the value is < c.
    levels : array_like
        Nominal levels, shape (L,).
    band_confidence : float
        Content of the per-level binomial band used for the verdict.

    Returns
    -------
    CoverageResult
    """
    cred = np.asarray(credibility, dtype=float)
    levels = np.asarray(levels, dtype=float)
    inside = cred[:, None] < levels[None, :]
    return _result(inside, levels, band_confidence)


def joint_coverage(
    log_prob_true: np.ndarray,
    log_prob_samples: np.ndarray,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
    *,
    band_confidence: float = 0.99,
    tie_rng: np.random.Generator | None = None,
) -> CoverageResult:
    """Expected coverage of joint HPD regions (see module docstring).

    Parameters
    ----------
    log_prob_true : numpy.ndarray
        log q(θ*_i | x_i), shape (N,).
    log_prob_samples : numpy.ndarray
        log q of posterior draws for each object, shape (N, S).
    levels : array_like
        Nominal credibility levels, shape (L,).
    band_confidence : float
        Content of the per-level binomial band used for the verdict.
    tie_rng : numpy.random.Generator, optional
        With it, draws exactly as dense as the truth are split at random
        (:func:`hpd_credibility_ties`, for piecewise-constant densities); without it only strictly
        denser draws count (:func:`hpd_credibility_joint`).

    Returns
    -------
    CoverageResult
    """
    if tie_rng is None:
        cred = hpd_credibility_joint(log_prob_true, log_prob_samples)
    else:
        cred = hpd_credibility_ties(log_prob_true, log_prob_samples, tie_rng)
    return coverage_from_credibility(cred, levels, band_confidence=band_confidence)


def marginal_coverage(
    samples: np.ndarray,
    theta: np.ndarray,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
    *,
    band_confidence: float = 0.99,
) -> list[CoverageResult]:
    """Expected coverage of 1-D HPD intervals, one result per parameter.

    Parameters
    ----------
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D), in the units of ``theta``.
    theta : numpy.ndarray
        True parameters, shape (N, D).
    levels : array_like
        Nominal credibility levels, shape (L,).
    band_confidence : float
        Content of the per-level binomial band used for the verdict.

    Returns
    -------
    list of CoverageResult
        Length D, in parameter order.
    """
    cred = marginal_credibility(samples, theta)
    return [
        coverage_from_credibility(cred[:, j], levels, band_confidence=band_confidence)
        for j in range(cred.shape[1])
    ]


def _result(inside: np.ndarray, levels: np.ndarray, band_confidence: float) -> CoverageResult:
    n = inside.shape[0]
    empirical = inside.mean(axis=0)
    low, high = binomial_band(n, levels, band_confidence)
    below, above = empirical < low, empirical > high
    if below.any() and above.any():
        verdict = "mixed"
    elif below.any():
        verdict = "overconfident"
    elif above.any():
        verdict = "underconfident"
    else:
        verdict = "calibrated"
    return CoverageResult(
        levels=levels,
        empirical=empirical,
        band_low=low,
        band_high=high,
        n=n,
        band_confidence=band_confidence,
        verdict=verdict,
        max_abs_deviation=float(np.max(np.abs(empirical - levels))),
    )
