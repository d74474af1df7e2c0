"""Coverage at a fixed nuisance value of an *exact* posterior that marginalises that nuisance.

A model trained with a nuisance drawn from a prior (e.g. [Fe/H] or R_V, :mod:`simulators.nuisance`)
is calibrated over that prior. Tested on clusters that all share one nuisance value it need not
be, even if it were exact: when the data barely constrain the nuisance, the posterior of the other
parameters spreads over every shift the nuisance could cause, so a truth made with a value near
the prior's middle lies inside more regions than their level says (over-coverage) and one made
with a value near an edge inside fewer (under-coverage). This module computes the size of that
effect in the simplest model that has it, as the reference a benchmark's fixed-nuisance cases are
read against:

    x = θ + ν + ε,   ε ~ N(0, σ²),   θ flat,   ν ~ U(−W/2, W/2).

Here W is the shift of the data the nuisance can cause across its prior, in units of σ, the
width the posterior would have if ν were known. The exact posterior of θ is x minus the offset
ν′ + ε′ (a uniform of width W convolved with a unit normal), symmetric and unimodal, so its HPD
regions are the intervals |θ − x| ≤ r_c with P(|ν′ + ε′| ≤ r_c) = c. For clusters made with one
value ν = u·W/2 (u = −1 at one edge, 0 in the middle, +1 at the other edge), the truth lies in
the level-c region with probability Φ(r_c − ν) − Φ(−r_c − ν), which averages to c over the prior
and differs from it at any fixed u once W > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from .coverage import CREDIBILITY_LEVELS

__all__ = ["fixed_nuisance_coverage", "fixed_nuisance_max_deviation"]


def _offset_cdf(t: np.ndarray | float, spread: float) -> np.ndarray:
    """CDF of ν′ + ε′ with ν′ ~ U(−spread/2, spread/2) and ε′ ~ N(0, 1)."""
    if spread == 0:
        return stats.norm.cdf(t)
    half = spread / 2

    def antiderivative(s):  # ∫ Φ(s) ds
        return s * stats.norm.cdf(s) + stats.norm.pdf(s)

    return (antiderivative(np.asarray(t) + half) - antiderivative(np.asarray(t) - half)) / spread


def _hpd_radius(level: float, spread: float) -> float:
    """Half-width r of the exact posterior's level-``level`` HPD interval (units of σ)."""
    content = lambda r: _offset_cdf(r, spread) - _offset_cdf(-r, spread) - level  # noqa: E731
    return float(optimize.brentq(content, 0.0, spread / 2 + 10.0, xtol=1e-12))


def fixed_nuisance_coverage(
    spread: float,
    position: float | Sequence[float] | np.ndarray,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
) -> np.ndarray:
    """Coverage of the exact marginalised posterior's HPD intervals at fixed nuisance values.

    Parameters
    ----------
    spread : float
        W: the shift of the data across the nuisance prior, in units of the posterior width σ
        the parameter would have with the nuisance known (≥ 0).
    position : float or array_like
        u: where each fixed nuisance value lies in its prior, −1 and +1 at the edges, 0 in the
        middle; shape () or (P,).
    levels : array_like
        Nominal credibility levels in (0, 1), shape (L,).

    Returns
    -------
    numpy.ndarray
        Probability that the truth lies inside the level-c region, shape (L,) for one position,
        (P, L) for several.

    Raises
    ------
    ValueError
        If ``spread`` is negative, a position outside [−1, 1], or a level outside (0, 1).
    """
    levels = np.asarray(levels, dtype=float)
    position = np.asarray(position, dtype=float)
    if not (np.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread must be a finite number >= 0, got {spread}")
    if not np.all(np.isfinite(position) & (np.abs(position) <= 1.0)):
        raise ValueError("position must lie in [-1, 1] (the prior's edges)")
    if levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError("levels must lie in (0, 1)")
    shift = (position * spread / 2)[..., None]
    radius = np.array([_hpd_radius(c, spread) for c in levels])
    return stats.norm.cdf(radius - shift) - stats.norm.cdf(-radius - shift)


def fixed_nuisance_max_deviation(
    spread: float,
    position: float,
    levels: Sequence[float] | np.ndarray = CREDIBILITY_LEVELS,
) -> float:
    """max over ``levels`` of |coverage − level| of :func:`fixed_nuisance_coverage`, at one
    ``position``."""
    levels = np.asarray(levels, dtype=float)
    return float(np.abs(fixed_nuisance_coverage(spread, float(position), levels) - levels).max())
