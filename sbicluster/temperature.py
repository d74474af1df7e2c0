"""A temperature on a conditional flow's base distribution: the last layer of a recalibrated flow.

A flow posterior maps θ to base coordinates u = T(θ; x) with u ~ N(0, I). Scaling the base by a
temperature τ(x) > 0 that depends on the observation,

    q_τ(θ | x) = N(u; 0, τ(x)² I) · |det ∂T/∂θ|,   draws θ = T⁻¹(τ(x) ε; x), ε ~ N(0, I),

widens (τ > 1) or narrows (τ < 1) each observation's posterior along the flow's own geometry.
Written as one more flow layer, z = u / τ(x), it keeps everything a flow guarantees: ``log_prob``
and sampling describe one normalised density, and the draws stay on the flow's support (the
prior box). τ = 1 is the trained flow unchanged.

This module holds only the layer; :mod:`sbicluster.recalibration` fits it on simulations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Transform, constraints
from zuko.lazy import LazyTransform
from zuko.transforms import DependentTransform

__all__ = ["LOG_TEMPERATURE_BOUND", "BaseTemperature", "ScaleTransform"]

LOG_TEMPERATURE_BOUND = math.log(10.0)
"""|log τ| is bounded smoothly by this (τ between 0.1 and 10): no fit can collapse or explode a
posterior."""


class ScaleTransform(Transform):
    r"""Elementwise ``y = exp(a) · x`` with a fixed log-scale ``a`` (broadcast over x)."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, log_scale: torch.Tensor) -> None:
        super().__init__()
        self.log_scale = log_scale

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.log_scale.expand(x.shape)

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call(x), self.log_scale.expand(x.shape)


class BaseTemperature(LazyTransform):
    r"""Flow layer ``z = u / τ(c)``, with ``log τ(c) = B · tanh(g(c̃) / B)`` and B =
    :data:`LOG_TEMPERATURE_BOUND`.

    ``g`` is an MLP of the standardised context ``c̃ = (c − mean) / scale`` (the mean and scale
    are buffers, set when the layer is fitted); it gives one temperature for every base
    dimension, or one per dimension. Freshly built, the last layer is zero: τ = 1 exactly and the
    flow is unchanged.

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
    """

    def __init__(
        self,
        features: int,
        context: int,
        hidden_features: Sequence[int],
        *,
        per_dimension: bool = False,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.per_dimension = bool(per_dimension)
        self.register_buffer("context_mean", torch.zeros(context))
        self.register_buffer("context_scale", torch.ones(context))
        widths = [int(context), *(int(h) for h in hidden_features)]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.SiLU()]
        last = nn.Linear(widths[-1], self.features if per_dimension else 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.hyper = nn.Sequential(*layers, last)

    def log_temperature(self, c: torch.Tensor) -> torch.Tensor:
        """log τ of each context, shape (..., 1) or (..., D)."""
        raw = self.hyper((c - self.context_mean) / self.context_scale)
        return LOG_TEMPERATURE_BOUND * torch.tanh(raw / LOG_TEMPERATURE_BOUND)

    def forward(self, c: torch.Tensor) -> DependentTransform:
        log_tau = self.log_temperature(c)
        log_tau = log_tau.expand(*log_tau.shape[:-1], self.features)
        return DependentTransform(ScaleTransform(-log_tau), 1)
