"""Population distributions of cluster parameters given hyper-parameters Λ.

This module owns p(θ | Λ), the density of θ = (log10 τ/yr, log10 M/M☉, log10 r_h/pc, A_V/mag)
in a cluster population, normalised over the box of the training prior, and draws from it. It
must not read results, run a model or know about selection.

Components (independent; each normalised on the prior's bounds [lo, hi] of its parameter):

* **mass function** dN/dM ∝ M^β (optionally × exp(−M/M_c), a Schechter truncation) in linear
  mass. In x = log10 M this is p(x) ∝ 10^{(β+1) x} [× exp(−10^{x − log10 M_c})]. The power law is
  normalised analytically, the Schechter form by the trapezoid rule on a fixed grid of
  :data:`GRID_POINTS` nodes (differentiable in β and log10 M_c).
* **age distribution** dN/dτ ∝ τ^γ between the age bounds: p(t) ∝ 10^{(γ+1) t} in t = log10 τ.
  γ = −1 is flat in log age (a constant formation rate with cluster disruption ∝ 1/τ).
* **extinction** a truncated exponential p(A_V) ∝ exp(−A_V / λ) on the A_V bounds; hyper-parameter
  log10 λ (λ in mag). Large λ tends to the uniform training prior.
* **size** uniform in log10 r_h on its bounds: the training prior (no size–mass relation).

Hyper-parameters and their (broad, uniform) hyper-priors are in :data:`HYPER_PRIORS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from simulators.priors import ClusterPrior

__all__ = [
    "HYPER_PRIORS",
    "HYPER_LABELS",
    "GRID_POINTS",
    "MASS_FUNCTIONS",
    "PopulationModel",
    "log_power_law_norm",
]

LN10 = math.log(10.0)

GRID_POINTS = 2049
"""Nodes of the trapezoid rule that normalises (and samples) the Schechter mass function."""

MASS_FUNCTIONS = ("powerlaw", "schechter")

HYPER_PRIORS: dict[str, tuple[float, float]] = {
    "beta": (-3.0, 0.0),
    "gamma": (-2.0, 0.5),
    "log_av_scale": (-1.0, 1.0),
    "log_mc": (3.5, 7.0),
}
"""Uniform hyper-priors (low, high): mass-function slope β, age index γ, log10 of the A_V
scale λ (mag) and log10 of the Schechter mass M_c (M☉)."""

HYPER_LABELS = {
    "beta": r"$\beta$",
    "gamma": r"$\gamma$",
    "log_av_scale": r"$\log_{10}(\lambda_{A_V}/\mathrm{mag})$",
    "log_mc": r"$\log_{10}(M_c/M_\odot)$",
}


def _log_expm1_over(y: torch.Tensor) -> torch.Tensor:
    """log((e^y − 1) / y), stable for all y (→ y/2 at y = 0)."""
    small = y.abs() < 1e-6
    ys = torch.where(small, torch.ones_like(y), y)
    big = torch.where(ys > 0, ys + torch.log(-torch.expm1(-ys)), torch.log(-torch.expm1(ys)))
    return torch.where(small, y / 2, big - torch.log(ys.abs()))


def log_power_law_norm(k: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """log ∫_lo^hi exp(k x) dx, stable at k = 0 (k in 1/dex · ln 10 units, i.e. natural)."""
    return k * lo + math.log(hi - lo) + _log_expm1_over(k * (hi - lo))


def _sample_exp_segment(k: float, lo: float, hi: float, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of p(x) ∝ exp(k x) on [lo, hi] at uniform variates ``u``."""
    w = hi - lo
    if abs(k * w) < 1e-9:
        return lo + u * w
    return lo + np.log1p(u * np.expm1(k * w)) / k


@dataclass(frozen=True)
class PopulationModel:
    """p(θ | Λ) for a prior box and a choice of mass function.

    Parameters
    ----------
    prior : ClusterPrior
        The training prior: its bounds are the support of the population, its density π(θ) the
        denominator of the importance weights.
    mass_function : str
        ``"powerlaw"`` (hyper-parameters β, γ, log10 λ) or ``"schechter"`` (+ log10 M_c).

    Examples
    --------
    >>> from simulators.priors import DEFAULT_PRIOR
    >>> pop = PopulationModel(DEFAULT_PRIOR)
    >>> pop.hyper_names
    ('beta', 'gamma', 'log_av_scale')
    """

    prior: ClusterPrior
    mass_function: str = "powerlaw"

    def __post_init__(self) -> None:
        if self.mass_function not in MASS_FUNCTIONS:
            from ..errors import InputError

            raise InputError(
                f"mass function {self.mass_function!r}: expected one of {MASS_FUNCTIONS}"
            )

    @property
    def hyper_names(self) -> tuple[str, ...]:
        """Names of the hyper-parameters Λ, in the order of hyper-parameter vectors."""
        base = ("beta", "gamma", "log_av_scale")
        return (*base, "log_mc") if self.mass_function == "schechter" else base

    def _bounds(self, name: str) -> tuple[float, float]:
        p = self.prior.parameter(name)
        return float(p.low), float(p.high)

    def log_prior_density(self, theta: torch.Tensor) -> torch.Tensor:
        """log π(θ) of the training prior (−inf outside its box), float64 (...,)."""
        low = self.prior.low().double().to(theta.device)
        high = self.prior.high().double().to(theta.device)
        inside = ((theta >= low) & (theta <= high)).all(-1)
        value = -torch.log(high - low).sum()
        return torch.where(inside, value, torch.full_like(inside, -math.inf, dtype=theta.dtype))

    # -- log density: linear in features of θ ---------------------------------------------------
    def features(self, theta: torch.Tensor) -> torch.Tensor:
        """(..., F) features φ(θ) in which log p(θ | Λ) is linear: log10 M, log10 τ, A_V and,
        for the Schechter form, M/M☉ (float64)."""
        theta = theta.double()
        ix = self.prior.index
        cols = [theta[..., ix("log_mass")], theta[..., ix("log_age")], theta[..., ix("av")]]
        if self.mass_function == "schechter":
            cols.append(torch.pow(10.0, cols[0]))
        return torch.stack(cols, -1)

    def _terms(self, hyper: dict[str, torch.Tensor]) -> dict[str, tuple]:
        """Per parameter: (coefficients of its features, log normaliser)."""
        lo_m, hi_m = self._bounds("log_mass")
        k_m = (hyper["beta"] + 1.0) * LN10
        k_t = (hyper["gamma"] + 1.0) * LN10
        k_a = -torch.pow(10.0, -hyper["log_av_scale"])  # −1/λ
        if self.mass_function == "powerlaw":
            mass = ([k_m], log_power_law_norm(k_m, lo_m, hi_m))
        else:
            k_c = -torch.pow(10.0, -hyper["log_mc"])  # −1/M_c
            grid = torch.linspace(lo_m, hi_m, GRID_POINTS, dtype=torch.float64)
            log_f = k_m * grid + k_c * torch.pow(10.0, grid)
            shift = log_f.max().detach()
            log_z = shift + torch.log(torch.trapezoid(torch.exp(log_f - shift), grid))
            mass = ([k_m, k_c], log_z)
        lo_r, hi_r = self._bounds("log_rh")
        return {
            "log_mass": mass,
            "log_age": ([k_t], log_power_law_norm(k_t, *self._bounds("log_age"))),
            "av": ([k_a], log_power_law_norm(k_a, *self._bounds("av"))),
            "log_rh": ([], torch.tensor(math.log(hi_r - lo_r), dtype=torch.float64)),
        }

    def log_marginal(
        self, name: str, x: torch.Tensor, hyper: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """log of the 1-D density of parameter ``name`` at ``x`` (inside its bounds), in 1/unit."""
        ks, log_z = self._terms(hyper)[name]
        x = torch.as_tensor(x, dtype=torch.float64)
        out = -log_z + (ks[0] * x if ks else 0.0)
        if len(ks) > 1:
            out = out + ks[1] * torch.pow(10.0, x)
        return out

    def coefficients(self, hyper: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """κ(Λ) (F,) and c(Λ) with log p(θ | Λ) = φ(θ) · κ + c inside the prior box.

        The mass term is (β+1) ln10 · log10 M [− M / M_c], the age term (γ+1) ln10 · log10 τ,
        the A_V term −A_V/λ; c is minus the sum of the log normalisers (log r_h: its width).
        """
        terms = self._terms(hyper)
        (k_m, *k_c), z_m = terms["log_mass"]
        kappa = [k_m, terms["log_age"][0][0], terms["av"][0][0], *k_c]
        c = -(z_m + terms["log_age"][1] + terms["av"][1] + terms["log_rh"][1])
        return torch.stack([torch.as_tensor(k, dtype=torch.float64) for k in kappa]), c

    def log_density(self, theta: torch.Tensor, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(θ | Λ) (units 1/(dex³ mag)), float64 (...,); −inf outside the prior box.

        Parameters
        ----------
        theta : torch.Tensor
            (..., D) parameters in prior units (columns in the prior's order).
        hyper : dict of str to torch.Tensor
            Scalar hyper-parameters named as in :attr:`hyper_names`.
        """
        theta = theta.double()
        kappa, c = self.coefficients(hyper)
        out = self.features(theta) @ kappa + c
        inside = torch.isfinite(self.log_prior_density(theta))
        return torch.where(inside, out, torch.full_like(out, -math.inf))

    def log_weight(self, theta: torch.Tensor, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(θ | Λ) − log π(θ): the importance log weight of a draw from the training prior."""
        return self.log_density(theta, hyper) - self.log_prior_density(theta).clamp(min=-1e300)

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, n: int, hyper: dict[str, float], rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` θ from p(θ | Λ) by inverse CDFs.

        Parameters
        ----------
        n : int
            Number of clusters.
        hyper : dict of str to float
            Hyper-parameter values (:attr:`hyper_names`).
        rng : numpy.random.Generator
            Source of randomness.

        Returns
        -------
        numpy.ndarray
            float64 (n, D) in prior units, columns in the prior's order.
        """
        u = rng.random((n, self.prior.dim))
        theta = np.empty((n, self.prior.dim))
        ix = self.prior.index
        lo, hi = self._bounds("log_age")
        theta[:, ix("log_age")] = _sample_exp_segment(
            (hyper["gamma"] + 1) * LN10, lo, hi, u[:, ix("log_age")]
        )
        lo, hi = self._bounds("log_mass")
        k = (hyper["beta"] + 1) * LN10
        if self.mass_function == "powerlaw":
            theta[:, ix("log_mass")] = _sample_exp_segment(k, lo, hi, u[:, ix("log_mass")])
        else:
            grid = np.linspace(lo, hi, GRID_POINTS)
            log_f = k * grid - 10.0 ** (grid - hyper["log_mc"])
            f = np.exp(log_f - log_f.max())
            cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
            theta[:, ix("log_mass")] = np.interp(u[:, ix("log_mass")] * cdf[-1], cdf, grid)
        lo, hi = self._bounds("av")
        theta[:, ix("av")] = _sample_exp_segment(
            -(10.0 ** -hyper["log_av_scale"]), lo, hi, u[:, ix("av")]
        )
        lo, hi = self._bounds("log_rh")
        theta[:, ix("log_rh")] = lo + u[:, ix("log_rh")] * (hi - lo)
        return theta

    def sample_hyper(self, rng: np.random.Generator) -> dict[str, float]:
        """One draw of Λ from the hyper-priors :data:`HYPER_PRIORS`."""
        return {k: float(rng.uniform(*HYPER_PRIORS[k])) for k in self.hyper_names}
