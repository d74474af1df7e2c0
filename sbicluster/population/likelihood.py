"""Per-cluster likelihoods of population hyper-parameters from posterior draws.

This module owns the importance-weighted likelihood of Λ for a catalogue of clusters, each
represented by S draws θ_is from its posterior under the training prior π:

    L_i(Λ) ∝ ∫ p(x_i | θ) p(θ | Λ) dθ ∝ (1/S) Σ_s p(θ_is | Λ) / π(θ_is),

evaluated as a log-sum-exp over the draws, and the effective sample size (ESS) of those weights,
ESS_i = (Σ_s w_is)² / Σ_s w_is². A cluster with few effective draws has a noisy likelihood: it is
counted and reported, never silently dropped. Draws outside the prior box have π = 0 and carry
zero weight (p(θ | Λ) = 0 there too). Selection (α(Λ)) is added by :mod:`.fit`; this module must
not know about it, nor read files.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .distributions import PopulationModel

__all__ = ["ImportanceLikelihood", "ESS_WARNING"]

ESS_WARNING = 50.0
"""Clusters whose importance weights have fewer effective draws than this are reported."""


class _SumLogMeanExp(torch.autograd.Function):
    """Σ_i log Σ_s exp(φ_is · κ + o_is) in float32 with its gradient Σ_i E_w[φ_i] computed in
    the same pass (no autograd graph over the N × S weights)."""

    @staticmethod
    def forward(ctx, kappa, feats, offset, n, s):
        lw = (kappa.to(feats.dtype) @ feats).reshape(n, s)
        if offset is not None:
            lw = lw + offset
        m = lw.amax(1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(lw - m)
        total = e.sum(1)
        ctx.save_for_backward(feats, (e / total[:, None]).reshape(-1))
        return (m.squeeze(1).double() + torch.log(total.double())).sum()

    @staticmethod
    def backward(ctx, grad):
        feats, p = ctx.saved_tensors
        return grad * (feats @ p).double(), None, None, None, None


class ImportanceLikelihood:
    """Σ_i log L_i(Λ) for N clusters × S draws, vectorised (float64 torch, differentiable).

    Parameters
    ----------
    draws : numpy.ndarray or torch.Tensor
        (N, S, D) posterior draws in prior units (the columns of ``population.prior``). Non-finite
        draws are not allowed (filter such clusters out first).
    population : PopulationModel
        p(θ | Λ) and the training prior π.

    Examples
    --------
    >>> import numpy as np
    >>> from simulators.priors import DEFAULT_PRIOR
    >>> pop = PopulationModel(DEFAULT_PRIOR)
    >>> draws = pop.sample(200, {"beta": -2.0, "gamma": -0.8, "log_av_scale": 0.0},
    ...                    np.random.default_rng(0)).reshape(2, 100, 4)
    >>> lik = ImportanceLikelihood(draws, pop)
    >>> lik.log_likelihood(lik.hyper_tensor({"beta": -2.0, "gamma": -0.8,
    ...                                      "log_av_scale": 0.0})).shape
    torch.Size([2])
    """

    def __init__(self, draws, population: PopulationModel) -> None:
        theta = torch.as_tensor(np.asarray(draws), dtype=torch.float64)
        if theta.ndim != 3 or theta.shape[-1] != population.prior.dim:
            raise ValueError(f"draws must be (N, S, {population.prior.dim}), got {theta.shape}")
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("draws must be finite; drop clusters with NaN draws first")
        self.population = population
        self.n, self.s = theta.shape[0], theta.shape[1]
        log_pi = population.log_prior_density(theta)
        inside = torch.isfinite(log_pi)
        # log p(θ | Λ) = φ(θ)·κ(Λ) + c(Λ): features once; log π and the box mask in one offset
        self.features = population.features(theta).masked_fill(~inside[..., None], 0.0)
        self.offset = torch.where(inside, -log_pi, torch.full_like(log_pi, -math.inf))
        # fast path (float32, features centred per cluster so the float32 sums stay accurate):
        # Σ_i log mean_s w_is = Σ_i φ̄_i·κ + Σ_i log Σ_s exp((φ_is − φ̄_i)·κ + o_is) − N log S
        weights = inside.double()
        count = weights.sum(1, keepdim=True).clamp(min=1.0)
        self._mean = (self.features * weights[..., None]).sum(1) / count  # (N, F)
        centred = (self.features - self._mean[:, None, :]).masked_fill(~inside[..., None], 0.0)
        self._feats32 = centred.reshape(-1, centred.shape[-1]).T.contiguous().float()
        finite = self.offset[inside]
        if bool(inside.all()) and bool((finite == finite[0]).all()):
            self._offset_const, self._offset32 = float(finite[0]), None  # uniform prior
        else:
            self._offset_const, self._offset32 = 0.0, self.offset.float()

    def hyper_tensor(self, hyper: dict[str, float]) -> dict[str, torch.Tensor]:
        """Hyper-parameter values as float64 scalar tensors."""
        return {k: torch.as_tensor(float(v), dtype=torch.float64) for k, v in hyper.items()}

    def log_weights(self, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, S) log p(θ_is | Λ) − log π(θ_is); −inf for draws outside the prior box."""
        kappa, c = self.population.coefficients(hyper)
        return self.features @ kappa + (c + self.offset)

    def log_likelihood(self, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) log L_i(Λ) = log mean_s w_is (up to a Λ-independent constant per cluster)."""
        return torch.logsumexp(self.log_weights(hyper), dim=1) - math.log(self.s)

    def total_log_likelihood(self, hyper: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_i log L_i(Λ), the same value as ``log_likelihood(hyper).sum()`` (to float32
        rounding of the centred weights) in a single float32 pass with a hand-written gradient:
        the path NUTS uses (≈ 10× faster for 1,000 clusters × 1,000 draws)."""
        kappa, c = self.population.coefficients(hyper)
        lse = _SumLogMeanExp.apply(kappa, self._feats32, self._offset32, self.n, self.s)
        n = self.n
        return lse + (self._mean.sum(0) @ kappa) + n * (c + self._offset_const - math.log(self.s))

    def ess(self, hyper: dict[str, torch.Tensor]) -> np.ndarray:
        """(N,) effective sample size (Σ w)² / Σ w² of each cluster's importance weights."""
        with torch.no_grad():
            lw = self.log_weights(hyper)
            return torch.exp(
                2 * torch.logsumexp(lw, dim=1) - torch.logsumexp(2 * lw, dim=1)
            ).numpy()
