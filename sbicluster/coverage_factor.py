"""A coverage factor on a recalibrated flow's temperature, fitted to HPD coverage by visibility.

The temperature of :mod:`sbicluster.recalibration` is fitted by maximum likelihood of the truths'
base coordinates. That makes balls in base space right, but the regions users read are highest-
posterior-density (HPD) regions in θ, and where a broad posterior meets the prior box the two
differ: the flow's map to the box compresses the outskirts, so a posterior of the right likelihood
can still give HPD regions that hold too few truths. This module fits what the likelihood cannot
see: a factor m that multiplies τ(x), a function of the observation's predicted visibility v̂(x)
(:class:`~sbicluster.temperature.BaseTemperature`'s read-out), chosen so that the joint and
marginal HPD regions of fresh simulated clusters hold their nominal share of truths in each bin
of predicted visibility.

Fit
---
1. v̂ = w · c̃ + b, the least-squares read-out of log(1 + visibility) from the standardised
   embedding features c̃ (true visibility is not known for a real cutout; v̂ is).
2. For each factor m of a grid, the same standard-normal base draws (common random numbers) give
   S posterior draws per cluster at temperature m · τ(x); the joint HPD credibility of each truth
   comes from the flow's density (:func:`~sbicluster.diagnostics.coverage.hpd_credibility_joint`),
   each marginal's from a kernel density of half the draws ranked on the other half
   (:func:`~sbicluster.diagnostics.coverage.marginal_credibility`).
3. In each bin of predicted visibility the factor with the smallest worst |coverage − nominal|
   over the joint region, every marginal and every level is kept. m is constant within a bin,
   the same rule as was fitted, so a posterior's width steps where its predicted visibility
   crosses a bin edge.

The factor depends on x only, so the recalibrated posterior stays one normalised density whose
``log_prob`` and draws agree. The simulations use a random stream of their own
(:func:`coverage_factor_seed`), distinct from the temperature fit's, training's and
``sbicluster diagnose``'s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .diagnostics.coverage import hpd_credibility_joint, marginal_credibility
from .errors import InputError

__all__ = [
    "MIN_FACTOR_SIMULATIONS",
    "CoverageFactorConfig",
    "config_record",
    "coverage_factor_seed",
    "credibilities",
    "fit_coverage_factor",
    "fit_visibility_readout",
    "worst_coverage_error",
]


MIN_FACTOR_SIMULATIONS = 2000
"""Fewest clusters a coverage-factor fit accepts (bins of a few hundred clusters each)."""


@dataclass(frozen=True)
class CoverageFactorConfig:
    """How the coverage factor is fitted.

    Attributes
    ----------
    n_simulations : int
        Fresh clusters simulated for the fit.
    draws : int
        Posterior draws per cluster and factor (half build each marginal's kernel density).
    grid : tuple of float
        Candidate factors m (dimensionless; 1 keeps the temperature).
    edges : tuple of float
        Bins of predicted visibility (increasing, from 0; the last may be ``inf``).
    levels : tuple of float
        Nominal credibility levels of the coverage criterion.
    min_clusters : int
        A bin with fewer clusters keeps m = 1.
    chunk : int
        Clusters pushed through the flow at a time.
    """

    n_simulations: int = 10_000
    draws: int = 100
    grid: tuple[float, ...] = (0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3)
    edges: tuple[float, ...] = (0.0, 20.0, 100.0, math.inf)
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    min_clusters: int = 500
    chunk: int = 256

    def __post_init__(self) -> None:
        if self.n_simulations < MIN_FACTOR_SIMULATIONS:
            raise InputError(
                f"--coverage-factor {self.n_simulations}: fitting the factor needs at least "
                f"{MIN_FACTOR_SIMULATIONS} clusters (0 for none)"
            )
        if self.draws < 8:
            raise InputError(f"draws {self.draws}: the coverage factor needs at least 8 draws")
        if 1.0 not in self.grid or min(self.grid) <= 0:
            raise InputError(f"grid {self.grid}: factors must be positive and include 1")
        if len(self.edges) < 3 or list(self.edges) != sorted(set(self.edges)):
            raise InputError(f"edges {self.edges}: need at least two increasing bins")

    @property
    def bins(self) -> int:
        """Number of visibility bins (one factor each)."""
        return len(self.edges) - 1


def config_record(config) -> dict:
    """A dataclass configuration as JSON-ready values: tuples as lists, infinities as None."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, float) and math.isinf(value):
            return None
        return value

    return plain(asdict(config))


def coverage_factor_seed(seed: int) -> int:
    """Seed of the coverage-factor simulations for ``seed``: a 63-bit integer from
    :class:`numpy.random.SeedSequence` of ``(seed, tag)``, distinct from the temperature fit's
    (:func:`~sbicluster.recalibration.recalibration_seed`), training's and diagnose's."""
    state = np.random.SeedSequence([int(seed), 0xC0F4C7]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> 1)


def fit_visibility_readout(layer, features: torch.Tensor, visibility: torch.Tensor) -> None:
    """Set the layer's read-out to the least-squares fit of log(1 + visibility) on its
    standardised features (in place).

    Parameters
    ----------
    layer : BaseTemperature
        A fitted temperature with ``factor_bins`` (its context standardisation is used as is).
    features : torch.Tensor
        (N, F) embedding features.
    visibility : torch.Tensor
        (N,) true visibility (S/N) of each cluster.
    """
    device = layer.context_mean.device
    standard = (features.to(device, torch.float64) - layer.context_mean.double()) / (
        layer.context_scale.double()
    )
    design = torch.cat(
        [standard, torch.ones(len(standard), 1, dtype=torch.float64, device=device)], 1
    )
    target = torch.log1p(visibility.to(device, torch.float64).clamp_min(0.0))
    solution = torch.linalg.lstsq(design.cpu(), target.cpu()[:, None]).solution[:, 0]
    with torch.no_grad():
        layer.readout_weight.copy_(solution[:-1].float())
        layer.readout_bias.fill_(float(solution[-1]))


@torch.no_grad()
def credibilities(
    model, theta: torch.Tensor, features: torch.Tensor, noise: torch.Tensor, *, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Joint and marginal HPD credibility of each truth under the model's posterior.

    Parameters
    ----------
    model : ClusterModel
        The model (its temperature layer as currently set).
    theta : torch.Tensor
        (N, D) true parameters, prior units.
    features : torch.Tensor
        (N, F) embedding features.
    noise : torch.Tensor
        (S, N, D) standard-normal base draws (reused across calls: common random numbers).
    chunk : int
        Clusters at a time.

    Returns
    -------
    joint : numpy.ndarray
        (N,) fraction of draws denser than the truth under the flow's density.
    marginal : numpy.ndarray
        (N, D) the same for each 1-D marginal, from a kernel density of half the draws.
    """
    draws = noise.shape[0]
    joint, marginal = [], []
    for start in range(0, len(theta), chunk):
        f = features[start : start + chunk].to(model.device, torch.float32)
        t = theta[start : start + chunk].to(model.device, torch.float32)
        samples = model.sample_from_features(
            f, draws, noise=noise[:, start : start + chunk], max_rows=65_536
        )
        log_q_draws = model.flow_log_prob(samples, f)  # (S, c)
        log_q_truth = model.flow_log_prob(t, f)  # (c,)
        joint.append(hpd_credibility_joint(log_q_truth.cpu().numpy(), log_q_draws.T.cpu().numpy()))
        marginal.append(
            marginal_credibility(
                samples.permute(1, 0, 2).cpu().numpy(), t.cpu().numpy(), num_kde=draws // 2
            )
        )
    return np.concatenate(joint), np.concatenate(marginal)


def worst_coverage_error(joint: np.ndarray, marginal: np.ndarray, levels) -> float:
    """Largest |share of truths inside − nominal| over the joint region, every marginal and
    every level, for credibilities from :func:`credibilities`."""
    levels = np.asarray(levels, dtype=float)
    columns = np.column_stack([joint, marginal])  # (N, 1 + D)
    inside = (columns[:, :, None] < levels[None, None, :]).mean(0)  # (1 + D, L)
    return float(np.abs(inside - levels[None, :]).max())


def _finite_or_none(value: float) -> float | None:
    """A float for the card, or None for an empty bin's NaN (strict JSON)."""
    return float(value) if np.isfinite(value) else None


def fit_coverage_factor(
    model,
    theta: torch.Tensor,
    features: torch.Tensor,
    visibility: torch.Tensor,
    config: CoverageFactorConfig,
    *,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Fit the coverage factor of ``model``'s temperature layer (in place).

    Parameters
    ----------
    model : ClusterModel
        A recalibrated model whose temperature layer has ``factor_bins == config.bins`` and a
        fitted temperature.
    theta, features, visibility : torch.Tensor
        (N, D) truths in prior units, (N, F) features and (N,) true visibility of fresh clusters
        (not those the temperature was fitted on).
    config : CoverageFactorConfig
        Grid, bins, levels and draws.
    seed : int
        Seed of the base draws.
    progress : bool
        Show a progress bar over the grid.

    Returns
    -------
    dict
        ``bins``: per bin of predicted visibility its range, ``n``, the worst coverage error at
        m = 1 and at every factor of the grid (None for a bin without clusters), and the chosen
        ``factor``; ``readout_r2``, the
        share of the variance of log(1 + visibility) the read-out explains.

    Raises
    ------
    InputError
        The model has no temperature layer with ``config.bins`` factor bins.
    """
    from tqdm.auto import tqdm

    layer = model.base_temperature
    if layer is None or layer.factor_bins != config.bins:
        raise InputError(
            f"the model needs a temperature layer with {config.bins} factor bins "
            "(recalibrate with the coverage factor)"
        )
    fit_visibility_readout(layer, features, visibility)
    edges = np.asarray(config.edges, dtype=float)
    with torch.no_grad():
        layer.factor_edges.copy_(torch.as_tensor(np.log1p(edges[1:-1]), dtype=torch.float32))
        context = features.to(layer.context_mean.device)
        predicted = layer.readout(context).cpu().double()
        which = layer.factor_bin(context).cpu().numpy()
    target = torch.log1p(visibility.double().clamp_min(0.0))
    readout_r2 = float(1.0 - (target - predicted).var() / target.var())

    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((config.draws, len(theta), theta.shape[1]), generator=generator)
    errors = np.full((len(config.grid), config.bins), np.nan)
    for g, factor in enumerate(tqdm(config.grid, desc="coverage factor", disable=not progress)):
        with torch.no_grad():
            layer.factor_log_values.fill_(math.log(factor))
        joint, marginal = credibilities(model, theta, features, noise, chunk=config.chunk)
        for b in range(config.bins):
            sel = which == b
            if sel.any():
                errors[g, b] = worst_coverage_error(joint[sel], marginal[sel], config.levels)

    unit = config.grid.index(1.0)
    rows, log_values = [], []
    for b in range(config.bins):
        n = int((which == b).sum())
        chosen = 1.0
        if n >= config.min_clusters:
            # the smallest error; among equal ones, the factor nearest 1
            best = min(
                range(len(config.grid)),
                key=lambda g, b=b: (round(errors[g, b], 6), abs(math.log(config.grid[g]))),
            )
            chosen = config.grid[best]
        log_values.append(math.log(chosen))
        high = edges[b + 1]
        rows.append(
            {
                "predicted_visibility": [
                    float(edges[b]),
                    None if math.isinf(high) else float(high),
                ],
                "n": n,
                "worst_error_unit_factor": _finite_or_none(errors[unit, b]),
                "errors_by_factor": {
                    f"{m:g}": _finite_or_none(errors[g, b]) for g, m in enumerate(config.grid)
                },
                "factor": float(chosen),
                "worst_error_chosen": _finite_or_none(errors[config.grid.index(chosen), b]),
            }
        )
    with torch.no_grad():
        layer.factor_log_values.copy_(torch.as_tensor(log_values, dtype=torch.float32))
    return {
        "method": "factor on the temperature by predicted visibility, fitted to HPD coverage",
        "config": config_record(config),
        "readout_r2": readout_r2,
        "bins": rows,
    }
