"""Local recalibration: fit a per-cutout temperature on the trained flow's base distribution.

A posterior trained by NPE is calibrated on average over the prior, yet can be too narrow for
some observations and too wide for others: the shipped model's joint regions are too narrow for
faint clusters and too wide for bright ones (``benchmarks/results/calibration.md``). This module
adds the layer of :mod:`sbicluster.temperature`, ``q_τ(θ | x) = N(u; 0, τ(x)² I) |∂u/∂θ|`` with
``u = T(θ; x)`` the trained flow's base coordinates, and fits τ(x) on fresh simulations with
everything else frozen.

Fit
---
Maximum likelihood of held-out truths, a proper scoring rule: for each observation the fitted
τ(x) is the one that brings q_τ closest (in expected Kullback–Leibler divergence) to the true
posterior within this one-parameter family. With ``u_i = T(θ_i; x_i)`` computed once, the
negative log likelihood per cluster is, up to terms that do not depend on τ,

    Σ_d [ log τ_d(x_i) + u_id² / (2 τ_d(x_i)²) ],

which needs no pass through the flow while fitting (seconds on a CPU). The simulations are
clusters drawn from the model's own simulator (from its card), on a random stream of their own
(:func:`recalibration_seed`), distinct from training's and from ``sbicluster diagnose``'s for the
same seed. A quarter of them is kept for validation; the fit stops when the validation
likelihood stops improving and keeps the best state.

A temperature changes the width of a posterior along the flow's own geometry, not its centre or
shape, so a biased posterior stays biased (the diagnostics' SBC and accuracy sections show bias).
With ``location`` the layer also fits a shift μ(x) of each base coordinate by the same
likelihood,

    Σ_d [ log τ_d(x_i) + (u_id − μ_d(x_i))² / (2 τ_d(x_i)²) ],

which moves each posterior towards where the truths fall for observations like it: it corrects a
bias of the posterior's centre, still along the flow's geometry, and still cannot change its
shape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .checks import is_whole_number
from .coverage_factor import (
    CoverageFactorConfig,
    config_record,
    coverage_factor_seed,
    fit_coverage_factor,
)
from .errors import InputError

__all__ = [
    "MIN_SIMULATIONS",
    "RecalibrationConfig",
    "base_coordinates",
    "fit_temperature",
    "recalibrate",
    "recalibration_seed",
    "simulate_and_embed",
    "temperature_nll",
    "with_base_temperature",
]

MIN_SIMULATIONS = 1000
"""Fewest simulated clusters a recalibration accepts (a quarter of them validates the fit)."""

VISIBILITY_EDGES = (0.0, 5.0, 20.0, 100.0, math.inf)
"""Visibility bins of the fitted temperature's summary in the model card."""


@dataclass(frozen=True)
class RecalibrationConfig:
    """How the temperature is fitted.

    Attributes
    ----------
    n_simulations : int
        Clusters simulated for the fit (≥ :data:`MIN_SIMULATIONS`).
    seed : int
        Seed of the simulations (mapped by :func:`recalibration_seed`) and of the fit.
    per_dimension : bool
        One temperature per base dimension instead of one shared by all.
    location : bool
        Also fit a shift μ(x) of each base coordinate (corrects biased posterior centres).
    hidden_features : tuple of int
        Widths of the temperature network's hidden layers.
    validation_fraction : float
        Share of the simulations that validates the fit (early stopping).
    learning_rate : float
        Adam's step size.
    weight_decay : float
        Adam's L2 penalty on the temperature network.
    batch_size : int
        Clusters per gradient step.
    max_epochs : int
        Passes over the training share at most.
    patience : int
        Epochs without a better validation likelihood before the fit stops.
    chunk : int
        Clusters simulated and embedded at a time (bounds memory).
    coverage_factor : CoverageFactorConfig, optional
        Also fit a factor on τ by predicted visibility to the HPD coverage of further fresh
        clusters (:mod:`sbicluster.coverage_factor`).
    """

    n_simulations: int = 40_000
    seed: int = 0
    per_dimension: bool = False
    location: bool = False
    hidden_features: tuple[int, ...] = (64, 64)
    validation_fraction: float = 0.25
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    max_epochs: int = 300
    patience: int = 30
    chunk: int = 512
    coverage_factor: CoverageFactorConfig | None = None

    def __post_init__(self) -> None:
        if not is_whole_number(self.n_simulations, least=None):
            raise InputError(f"--n must be an integer, got {self.n_simulations!r}")
        if self.n_simulations < MIN_SIMULATIONS:
            raise InputError(
                f"--n {self.n_simulations}: a recalibration needs at least {MIN_SIMULATIONS} "
                "simulated clusters (a quarter of them validates the fit)"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise InputError(f"validation_fraction {self.validation_fraction}: must be in (0, 1)")


def recalibration_seed(seed: int) -> int:
    """Seed of the recalibration simulations for ``seed``: a 63-bit integer from
    :class:`numpy.random.SeedSequence` of ``(seed, tag)``, so that the set differs from training's
    (``torch.manual_seed(seed)``) and from ``sbicluster diagnose --seed`` with the same number."""
    state = np.random.SeedSequence([int(seed), 0x7E3A7C]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> 1)


def with_base_temperature(
    model,
    *,
    hidden_features=(64, 64),
    per_dimension: bool = False,
    seed: int = 0,
    factor_bins: int = 0,
    location: bool = False,
):
    """A copy of ``model`` whose flow ends with a :class:`~sbicluster.temperature.BaseTemperature`
    at τ = 1 (the same density as ``model`` until the layer is fitted).

    Parameters
    ----------
    model : ClusterModel
        A trained model without a temperature layer.
    hidden_features : sequence of int
        Widths of the temperature network's hidden layers.
    per_dimension : bool
        One temperature per base dimension.
    seed : int
        Seed of the temperature network's initial hidden weights (its output layer starts at 0).
    factor_bins : int
        Bins of the layer's coverage factor (0: none; it starts at m = 1).
    location : bool
        The layer also shifts each base coordinate (it starts at μ = 0).

    Returns
    -------
    ClusterModel
        On ``model``'s device, in evaluation mode, with ``model``'s card and weights.

    Raises
    ------
    InputError
        ``model`` already has a temperature layer.
    """
    from .model import ClusterModel

    if model.base_temperature is not None:
        raise InputError(
            "the model is already recalibrated (its flow ends with a base temperature); "
            "recalibrate the model it was made from instead"
        )
    architecture = copy.deepcopy(model.architecture)
    architecture["flow"]["base_temperature"] = {
        "hidden_features": [int(h) for h in hidden_features],
        "per_dimension": bool(per_dimension),
        "formula": ("z = (u - mu(x)) / tau(x)" if location else "z = u / tau(x)")
        + ", log tau = log(10) tanh(g(standardised features) / log(10))"
        + (" + log m(readout(standardised features))" if factor_bins else "")
        + (", mu = 3 tanh(h(standardised features) / 3)" if location else ""),
    }
    if factor_bins:
        architecture["flow"]["base_temperature"]["factor_bins"] = int(factor_bins)
    if location:
        architecture["flow"]["base_temperature"]["location"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the new layer's initial weights; the rest is loaded
        new = ClusterModel(
            model.prior,
            model.bands,
            model.image_shape,
            architecture,
            card=copy.deepcopy(model.card),
        )
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    layer_prefix = f"flow.transform.transforms.{len(new.flow.transform.transforms) - 1}."
    if unexpected or any(not key.startswith(layer_prefix) for key in missing):
        raise RuntimeError(f"weights do not carry over: missing {missing}, unexpected {unexpected}")
    return new.to(model.device).eval()


@torch.no_grad()
def base_coordinates(model, theta: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """u = T(θ; x): the flow's base coordinates of parameters θ (N, D) given features (N, F),
    through every layer but a base temperature (float32 (N, D), on the CPU)."""
    transforms = list(model.flow.transform.transforms)
    if model.base_temperature is not None:
        transforms = transforms[:-1]
    device = model.device
    x = theta.to(device, torch.float32)
    c = features.to(device, torch.float32)
    for layer in transforms:
        x = layer(c)(x)
    return x.cpu()


def temperature_nll(
    log_tau: torch.Tensor, u: torch.Tensor, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-object negative log likelihood of base coordinates u (N, D) under N(μ, τ² I), less the
    constant D/2 · log 2π; ``log_tau`` (N, 1) or (N, D), ``shift`` μ (N, D) or None (μ = 0).
    Returns (N,)."""
    log_tau = log_tau.expand_as(u)
    residual = u if shift is None else u - shift
    return (log_tau + 0.5 * residual.square() * torch.exp(-2.0 * log_tau)).sum(-1)


def _layer_nll(layer, features: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """:func:`temperature_nll` of u under the layer's τ and μ for these features."""
    return temperature_nll(layer.log_temperature(features), u, layer.shift(features))


def fit_temperature(
    layer,
    features: torch.Tensor,
    u: torch.Tensor,
    config: RecalibrationConfig,
    *,
    progress: bool = False,
) -> dict:
    """Fit a :class:`~sbicluster.temperature.BaseTemperature` (its τ, and its μ if it has a
    location) by maximum likelihood of u.

    Parameters
    ----------
    layer : BaseTemperature
        The layer to fit (in place; on the CPU or any device).
    features : torch.Tensor
        (N, F) context of each cluster.
    u : torch.Tensor
        (N, D) base coordinates of each cluster's true θ (:func:`base_coordinates`).
    config : RecalibrationConfig
        Split, optimiser and stopping rule (and the seed of the split and of the batches).
    progress : bool
        Show a progress bar (epochs).

    Returns
    -------
    dict
        ``n_fit``, ``n_validation``, ``epochs``, ``best_epoch`` and the validation negative log
        likelihood per cluster (nats, less D/2 · log 2π) at τ = 1 (``validation_nll_before``)
        and after (``validation_nll_after``); also ``validation_index`` (int64 (N_val,)) for
        summaries.
    """
    from tqdm.auto import tqdm

    device = layer.context_mean.device
    features = features.to(device, torch.float32)
    u = u.to(device, torch.float32)
    n = len(u)
    generator = torch.Generator().manual_seed(int(config.seed))
    order = torch.randperm(n, generator=generator)
    n_val = max(1, int(round(config.validation_fraction * n)))
    val, fit = order[:n_val], order[n_val:]
    with torch.no_grad():
        layer.context_mean.copy_(features[fit].mean(0))
        layer.context_scale.copy_(features[fit].std(0).clamp_min(1e-6))

    def validation_nll() -> float:
        with torch.no_grad():
            return float(_layer_nll(layer, features[val], u[val]).mean())

    before = validation_nll()
    best, best_epoch, best_state = before, 0, copy.deepcopy(layer.state_dict())
    optimiser = torch.optim.Adam(
        layer.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    epoch = 0
    bar = tqdm(range(1, config.max_epochs + 1), desc="fit temperature", disable=not progress)
    for epoch in bar:
        layer.train()
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(config.batch_size):
            loss = _layer_nll(layer, features[batch], u[batch]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        layer.eval()
        current = validation_nll()
        bar.set_postfix(val_nll=f"{current:.4f}")
        if current < best - 1e-5:
            best, best_epoch, best_state = current, epoch, copy.deepcopy(layer.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    layer.load_state_dict(best_state)
    layer.eval()
    return {
        "n_fit": int(len(fit)),
        "n_validation": int(n_val),
        "epochs": int(epoch),
        "best_epoch": int(best_epoch),
        "validation_nll_before": before,
        "validation_nll_after": validation_nll(),
        "validation_index": val.cpu(),
    }


@torch.no_grad()
def simulate_and_embed(
    model,
    simulator,
    config: RecalibrationConfig,
    progress: bool = False,
    *,
    n: int | None = None,
    stream_seed: int | None = None,
):
    """Fresh clusters of ``simulator`` on the recalibration stream of ``config.seed``
    (``config.n_simulations`` of them, ``config.chunk`` at a time), embedded by ``model``.

    ``n`` and ``stream_seed`` replace the count and the generator's seed (the coverage factor's
    own simulations).

    Returns
    -------
    theta : torch.Tensor
        (N, D) true parameters, prior units, on the CPU.
    features : torch.Tensor
        float32 (N, F) embedding features, on the CPU.
    u : torch.Tensor
        float32 (N, D) base coordinates of the true θ (:func:`base_coordinates`).
    visibility : torch.Tensor
        (N,) true visibility.
    """
    from simulators.base import iter_simulation_chunks

    n = config.n_simulations if n is None else int(n)
    generator = torch.Generator(device=simulator.device).manual_seed(
        recalibration_seed(config.seed) if stream_seed is None else int(stream_seed)
    )
    theta, features, coordinates, visibility = [], [], [], []
    for batch in iter_simulation_chunks(
        simulator,
        n,
        generator,
        chunk=config.chunk,
        label=torch.ones(n, dtype=torch.long, device=simulator.device),
        progress=progress,
        desc="simulate and embed" if stream_seed is None else "simulate and embed (factor)",
    ):
        feats = model.embed(batch.images.to(model.device)).float()
        theta.append(batch.theta.cpu())
        features.append(feats.cpu())
        coordinates.append(base_coordinates(model, batch.theta, feats))
        visibility.append(batch.visibility.cpu())
    return torch.cat(theta), torch.cat(features), torch.cat(coordinates), torch.cat(visibility)


def _temperature_summary(layer, features, visibility, index) -> list[dict]:
    """Median and 10–90 % range of τ (geometric mean over dimensions) in visibility bins, and
    the mean μ of each base dimension there for a layer with a location."""
    with torch.no_grad():
        context = features[index].to(layer.context_mean.device)
        log_tau = layer.log_temperature(context)
        shift = layer.shift(context)
    tau = log_tau.mean(-1).exp().cpu().numpy()
    shift = None if shift is None else shift.cpu().numpy()
    vis = visibility[index].numpy()
    rows = []
    for lo, hi in zip(VISIBILITY_EDGES[:-1], VISIBILITY_EDGES[1:], strict=True):
        sel = (vis >= lo) & (vis < hi)
        if not sel.any():
            continue
        q10, q50, q90 = np.quantile(tau[sel], [0.1, 0.5, 0.9])
        rows.append(
            {
                "visibility": [lo, None if math.isinf(hi) else hi],
                "n": int(sel.sum()),
                "tau_median": float(q50),
                "tau_p10": float(q10),
                "tau_p90": float(q90),
            }
        )
        if shift is not None:
            rows[-1]["shift_mean"] = [float(v) for v in shift[sel].mean(0)]
    return rows


def recalibrate(
    model,
    simulator,
    config: RecalibrationConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
):
    """A recalibrated copy of ``model``: its flow ends with a temperature fitted on simulations.

    Parameters
    ----------
    model : ClusterModel
        A trained model without a temperature layer (unchanged by this call).
    simulator : simulators.base.Simulator
        The model's forward model (e.g. ``simulator_from_card(model.card["simulator"])``).
    config : RecalibrationConfig
        Simulations and fit.
    progress : bool
        Show progress bars.
    log : callable, optional
        Receives one line per stage.

    Returns
    -------
    ClusterModel
        The recalibrated model; its card gains ``recalibration`` (the configuration, the fit's
        record and the fitted τ by visibility) and its ``name`` is unchanged.
    """
    factor = config.coverage_factor
    new = with_base_temperature(
        model,
        hidden_features=config.hidden_features,
        per_dimension=config.per_dimension,
        seed=config.seed,
        factor_bins=factor.bins if factor is not None else 0,
        location=config.location,
    )
    layer = new.base_temperature
    _, features, u, visibility = simulate_and_embed(model, simulator, config, progress)
    if log:
        log(f"{len(u)} clusters simulated and embedded; fitting the temperature")
    with torch.enable_grad():
        record = fit_temperature(layer, features, u, config, progress=progress)
    index = record.pop("validation_index")
    new.card["recalibration"] = {
        "method": ("temperature and location" if config.location else "temperature")
        + " on the flow's base distribution, maximum likelihood",
        "config": config_record(config),
        **record,
        "temperature_by_visibility": _temperature_summary(layer, features, visibility, index),
    }
    if factor is not None:
        theta_f, features_f, _, visibility_f = simulate_and_embed(
            model,
            simulator,
            config,
            progress,
            n=factor.n_simulations,
            stream_seed=coverage_factor_seed(config.seed),
        )
        if log:
            log(
                f"{len(theta_f)} further clusters simulated and embedded; fitting the coverage factor"
            )
        new.card["recalibration"]["coverage_factor"] = fit_coverage_factor(
            new, theta_f, features_f, visibility_f, factor, seed=config.seed, progress=progress
        )
    return new
