"""A temperature on a conditional flow's base distribution: the last layer of a recalibrated flow.

A flow posterior maps θ to base coordinates u = T(θ; x) with u ~ N(0, I). Scaling the base by a
temperature τ(x) > 0 that depends on the observation,

    q_τ(θ | x) = N(u; 0, τ(x)² I) · |det ∂T/∂θ|,   draws θ = T⁻¹(τ(x) ε; x), ε ~ N(0, I),

widens (τ > 1) or narrows (τ < 1) each observation's posterior along the flow's own geometry.
Written as one more flow layer, z = u / τ(x), it keeps everything a flow guarantees: ``log_prob``
and sampling describe one normalised density, and the draws stay on the flow's support (the
prior box). τ = 1 is the trained flow unchanged.

The layer can also carry a location μ(x), one shift per base dimension: z = (u − μ(x)) / τ(x),
draws θ = T⁻¹(μ(x) + τ(x) ε; x). It moves each observation's posterior along the flow's geometry
(a posterior whose medians sit off the truths on average, which no width can mend) and is still
one affine flow layer whose parameters depend on x only. μ = 0 is no shift.

The layer can also carry a coverage factor m(v̂) that multiplies τ: one value per bin of a linear
read-out v̂ of the context (the predicted log(1 + visibility)), 1 until fitted. It is still a function of the observation only, so the density stays normalised.

This module holds only the layer; :mod:`sbicluster.recalibration` fits τ on simulations and
:mod:`sbicluster.coverage_factor` fits m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Transform, constraints
from zuko.lazy import LazyTransform
from zuko.transforms import DependentTransform

__all__ = ["LOCATION_BOUND", "LOG_TEMPERATURE_BOUND", "BaseTemperature", "ShiftScaleTransform"]

LOG_TEMPERATURE_BOUND = math.log(10.0)
"""|log τ| is bounded smoothly by this (τ between 0.1 and 10): no fit can collapse or explode a
posterior."""

LOCATION_BOUND = 3.0
"""|μ| of each base coordinate is bounded smoothly by this (in units of the base distribution's
standard deviation): a location can correct a bias, not move a posterior off to the tails."""


class ShiftScaleTransform(Transform):
    r"""Elementwise ``y = exp(a) · (x − b)`` with a fixed log-scale ``a`` and an optional fixed
    shift ``b`` (both broadcast over x; no shift is b = 0)."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, log_scale: torch.Tensor, shift: torch.Tensor | None = None) -> None:
        super().__init__()
        self.log_scale = log_scale
        self.shift = shift

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            x = x - self.shift
        return x * self.log_scale.exp()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = y * (-self.log_scale).exp()
        return x if self.shift is None else x + self.shift

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.log_scale.expand(x.shape)

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call(x), self.log_scale.expand(x.shape)


class BaseTemperature(LazyTransform):
    r"""Flow layer ``z = (u − μ(c)) / τ(c)``, with ``log τ(c) = B · tanh(g(c̃) / B) + log m(v̂(c̃))``,
    B = :data:`LOG_TEMPERATURE_BOUND`, and μ = 0 unless the layer has a location.

    ``g`` is an MLP of the standardised context ``c̃ = (c − mean) / scale`` (the mean and scale
    are buffers, set when the layer is fitted); it gives one temperature for every base
    dimension, or one per dimension. Freshly built, the last layer is zero: τ = 1 exactly and the
    flow is unchanged.

    With ``factor_bins`` K ≥ 2 the layer also holds a coverage factor: ``v̂ = w · c̃ + b`` (a
    linear read-out of the standardised context, buffers ``readout_weight`` and
    ``readout_bias``) and one ``log m`` per bin of v̂ (buffer ``factor_log_values``, K values),
    the bins split at the K − 1 increasing values of ``factor_edges`` (a v̂ equal to an edge
    belongs to the bin above it). Freshly built, every ``log m`` is 0.

    With ``location`` the layer also holds ``μ(c) = L · tanh(h(c̃) / L)``, one shift per base
    dimension from an MLP ``h`` of the same widths as g, L = :data:`LOCATION_BOUND`. Freshly
    built, h's last layer is zero: μ = 0.

    Parameters
    ----------
    features : int
        Dimension D of the base space.
    context : int
        Dimension of the context (the embedding's feature vector).
    hidden_features : sequence of int
        Widths of g's hidden layers.
    per_dimension : bool
        One temperature per base dimension instead of one shared by all.
    factor_bins : int
        Bins of the coverage factor m(v̂) (0: no factor; otherwise at least 2).
    location : bool
        Also shift each base coordinate by μ(c).
    """

    def __init__(
        self,
        features: int,
        context: int,
        hidden_features: Sequence[int],
        *,
        per_dimension: bool = False,
        factor_bins: int = 0,
        location: bool = False,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.per_dimension = bool(per_dimension)
        self.location = bool(location)
        self.factor_bins = int(factor_bins)
        if self.factor_bins == 1 or self.factor_bins < 0:
            raise ValueError(f"factor_bins must be 0 or at least 2, got {factor_bins}")
        self.register_buffer("context_mean", torch.zeros(context))
        self.register_buffer("context_scale", torch.ones(context))
        if self.factor_bins:
            self.register_buffer("readout_weight", torch.zeros(context))
            self.register_buffer("readout_bias", torch.zeros(()))
            self.register_buffer(
                "factor_edges", torch.arange(1, self.factor_bins, dtype=torch.float32)
            )
            self.register_buffer("factor_log_values", torch.zeros(self.factor_bins))
        widths = [int(context), *(int(h) for h in hidden_features)]
        self.hyper = _zero_output_mlp(widths, self.features if per_dimension else 1)
        if self.location:
            self.location_net = _zero_output_mlp(widths, self.features)

    def readout(self, c: torch.Tensor) -> torch.Tensor:
        """v̂ = w · c̃ + b of each context (..., F) → (...,); needs ``factor_bins``."""
        standard = (c - self.context_mean) / self.context_scale
        return standard @ self.readout_weight + self.readout_bias

    def factor_bin(self, c: torch.Tensor) -> torch.Tensor:
        """Index of each context's bin of v̂ (..., F) → (...,) int64; needs ``factor_bins``."""
        return torch.bucketize(self.readout(c).contiguous(), self.factor_edges, right=True)

    def log_factor(self, c: torch.Tensor) -> torch.Tensor:
        """log m(v̂(c)) of each context, shape (..., 1); zeros without a coverage factor."""
        if not self.factor_bins:
            return torch.zeros((*c.shape[:-1], 1), dtype=c.dtype, device=c.device)
        return self.factor_log_values[self.factor_bin(c)].unsqueeze(-1)

    def log_temperature(self, c: torch.Tensor) -> torch.Tensor:
        """log τ of each context, shape (..., 1) or (..., D)."""
        raw = self.hyper((c - self.context_mean) / self.context_scale)
        return LOG_TEMPERATURE_BOUND * torch.tanh(raw / LOG_TEMPERATURE_BOUND) + self.log_factor(c)

    def shift(self, c: torch.Tensor) -> torch.Tensor | None:
        """μ of each context, shape (..., D); None for a layer without a location."""
        if not self.location:
            return None
        raw = self.location_net((c - self.context_mean) / self.context_scale)
        return LOCATION_BOUND * torch.tanh(raw / LOCATION_BOUND)

    def forward(self, c: torch.Tensor) -> DependentTransform:
        log_tau = self.log_temperature(c)
        log_tau = log_tau.expand(*log_tau.shape[:-1], self.features)
        return DependentTransform(ShiftScaleTransform(-log_tau, self.shift(c)), 1)


def _zero_output_mlp(widths: Sequence[int], outputs: int) -> nn.Sequential:
    """An MLP with SiLU hidden layers of ``widths`` (the first is the input) whose output layer
    starts at zero (its output is 0 for every input until fitted)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.SiLU()]
    last = nn.Linear(widths[-1], outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)
