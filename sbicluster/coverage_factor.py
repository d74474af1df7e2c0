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

The criterion of step 3 can instead be read in bins of *true* visibility (``criterion="true"``),
the bins in which ``sbicluster diagnose`` states conditional coverage. The factor still depends on
the predicted bin only, but the factors of all bins are chosen together: every combination of
the grid is scored by its worst errors over the true-visibility bins, largest first, and the
smallest wins. The two views differ because a cluster scatters across bins: a faint cluster that looks
brighter than it is takes the brighter bin's factor, so a true bin collects the factors of its
neighbours.

The factor depends on x only, so the recalibrated posterior stays one normalised density whose
``log_prob`` and draws agree. The simulations use a random stream of their own
(:func:`coverage_factor_seed`), distinct from the temperature fit's, training's and
``sbicluster diagnose``'s.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .diagnostics.coverage import hpd_credibility_joint, marginal_credibility
from .errors import InputError

__all__ = [
    "CRITERIA",
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

CRITERIA = ("predicted", "true")
"""Bins in which the factor's coverage criterion is read: of predicted or of true visibility."""


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
    criterion : str
        ``"predicted"``: each bin's factor minimises its own worst error (bins of predicted
        visibility); ``"true"``: the factors together minimise the largest worst error over bins
        of true visibility with the same edges.
    """

    n_simulations: int = 10_000
    draws: int = 100
    grid: tuple[float, ...] = (0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3)
    edges: tuple[float, ...] = (0.0, 20.0, 100.0, math.inf)
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    min_clusters: int = 500
    chunk: int = 256
    criterion: str = "predicted"

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
        if self.criterion not in CRITERIA:
            raise InputError(f"criterion {self.criterion!r}: one of {', '.join(CRITERIA)}")

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


def _inside_counts(joint, marginal, predicted_bin, true_bin, bins, levels) -> np.ndarray:
    """Truths inside each region at each level, by predicted and true bin.

    Returns
    -------
    numpy.ndarray
        (bins, bins, 1 + D, L) counts: [predicted bin, true bin, column (joint first), level].
    """
    columns = np.column_stack([joint, marginal])  # (N, 1 + D)
    inside = (columns[:, :, None] < np.asarray(levels)[None, None, :]).astype(np.int64)
    counts = np.zeros((bins, bins, *inside.shape[1:]), dtype=np.int64)
    np.add.at(counts, (predicted_bin, true_bin), inside)
    return counts


def _worst_error(inside: np.ndarray, n: int, levels) -> float:
    """Worst |share inside − nominal| from (1 + D, L) counts over ``n`` clusters (NaN if none)."""
    if n == 0:
        return math.nan
    return float(np.abs(inside / n - np.asarray(levels)[None, :]).max())


def _inside_for_choice(counts: np.ndarray, choice) -> np.ndarray:
    """(true bins, 1 + D, L) truths inside when predicted bin b takes grid index ``choice[b]``."""
    return sum(counts[g, b] for b, g in enumerate(choice))


def _choose_for_true_bins(counts, n_clusters, factors, fixed, levels):
    """The factors, one per predicted bin, that minimise the largest worst error over true bins.

    Parameters
    ----------
    counts : numpy.ndarray
        (G, bins, bins, 1 + D, L) truths inside by factor, predicted bin and true bin.
    n_clusters : numpy.ndarray
        (bins, bins) clusters by predicted and true bin.
    factors : sequence of float
        The grid (G factors).
    fixed : dict of int to int
        Predicted bins held at a grid index.
    levels : sequence of float
        Nominal levels.

    Returns
    -------
    choice : tuple of int
        Grid index per predicted bin. Choices are ranked by their true bins' errors sorted from
        the largest (the largest error first, then the next, to 1e-6), then by nearness to 1
        (smallest sum of |log m|); where each true bin is one predicted bin, this is every bin's
        own best factor.
    errors : numpy.ndarray
        (bins,) worst error in each true bin under that choice (NaN for an empty bin).
    """
    grid_size, bins = counts.shape[:2]
    options = [[fixed[b]] if b in fixed else range(grid_size) for b in range(bins)]
    best_key, best = None, None
    for choice in itertools.product(*options):
        errors = _errors_for_choice(counts, n_clusters, choice, levels)
        ranked = sorted((round(float(e), 6) for e in errors if np.isfinite(e)), reverse=True)
        key = (ranked, sum(abs(math.log(factors[g])) for g in choice))
        if best_key is None or key < best_key:
            best_key, best = key, (choice, errors)
    return best


def _column_errors(inside: np.ndarray, n: int, levels, names) -> dict | None:
    """Worst |share inside − nominal| over the levels for each column (joint, then ``names``)."""
    if n == 0:
        return None
    errors = np.abs(inside / n - np.asarray(levels)[None, :]).max(1)
    return {name: float(e) for name, e in zip(("joint", *names), errors, strict=True)}


def _errors_for_choice(counts, n_clusters, choice, levels) -> np.ndarray:
    """(bins,) worst error in each true bin when predicted bin b takes grid index choice[b]."""
    inside = _inside_for_choice(counts, choice)
    n_true = n_clusters.sum(0)
    return np.array([_worst_error(inside[t], n_true[t], levels) for t in range(len(n_true))])


def fit_coverage_factor(
    model,
    theta: torch.Tensor,
    features: torch.Tensor,
    visibility: torch.Tensor,
    config: CoverageFactorConfig,
    *,
    seed: int = 0,
    fixed: dict[int, float] | None = None,
    names=None,
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
        Grid, bins, levels, draws and criterion.
    seed : int
        Seed of the base draws.
    fixed : dict of int to float, optional
        Bins (0 = faintest) held at a given factor of the grid; the factor the criterion would
        have chosen there is recorded as ``fitted_factor``.
    names : sequence of str, optional
        Parameter names, to label each bin's worst error per region (default θ0, θ1, …).
    progress : bool
        Show a progress bar over the grid.

    Returns
    -------
    dict
        ``bins``: per bin of predicted visibility its range, ``n``, the worst coverage error at
        m = 1 and at every factor of the grid (None for a bin without clusters), and the chosen
        ``factor`` with the worst error of each region (``errors_by_column_chosen``: joint and
        each marginal) under it; ``true_visibility``: per bin of true visibility its ``n``, worst
        error under the chosen factors (also per region) and under those each predicted bin would
        choose on its own;
        ``readout_r2``, the share of the variance of log(1 + visibility) the read-out explains.

    Raises
    ------
    InputError
        The model has no temperature layer with ``config.bins`` factor bins, or a fixed bin or
        factor is not one of the bins or of the grid.
    """
    from tqdm.auto import tqdm

    layer = model.base_temperature
    if layer is None or layer.factor_bins != config.bins:
        raise InputError(
            f"the model needs a temperature layer with {config.bins} factor bins "
            "(recalibrate with the coverage factor)"
        )
    fixed = dict(fixed or {})
    for b, factor in fixed.items():
        if not 0 <= b < config.bins:
            raise InputError(f"bin {b}: bins are 0 to {config.bins - 1}")
        if factor not in config.grid:
            raise InputError(f"bin {b} held at {factor:g}: not a factor of the grid {config.grid}")
    names = tuple(names) if names is not None else tuple(f"θ{j}" for j in range(theta.shape[1]))
    fit_visibility_readout(layer, features, visibility)
    edges = np.asarray(config.edges, dtype=float)
    with torch.no_grad():
        layer.factor_edges.copy_(torch.as_tensor(np.log1p(edges[1:-1]), dtype=torch.float32))
        context = features.to(layer.context_mean.device)
        predicted = layer.readout(context).cpu().double()
        which = layer.factor_bin(context).cpu().numpy()
    target = torch.log1p(visibility.double().clamp_min(0.0))
    readout_r2 = float(1.0 - (target - predicted).var() / target.var())
    true_bin = np.clip(np.digitize(visibility.double().numpy(), edges[1:-1]), 0, config.bins - 1)
    n_clusters = np.zeros((config.bins, config.bins), dtype=np.int64)
    np.add.at(n_clusters, (which, true_bin), 1)

    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((config.draws, len(theta), theta.shape[1]), generator=generator)
    counts = []
    for factor in tqdm(config.grid, desc="coverage factor", disable=not progress):
        with torch.no_grad():
            layer.factor_log_values.fill_(math.log(factor))
        joint, marginal = credibilities(model, theta, features, noise, chunk=config.chunk)
        counts.append(_inside_counts(joint, marginal, which, true_bin, config.bins, config.levels))
    counts = np.stack(counts)  # (G, predicted bin, true bin, 1 + D, L)
    n_predicted = n_clusters.sum(1)
    errors = np.array(
        [
            [
                _worst_error(counts[g, b].sum(0), n_predicted[b], config.levels)
                for b in range(config.bins)
            ]
            for g in range(len(config.grid))
        ]
    )  # (G, bins), each predicted bin on its own

    unit = config.grid.index(1.0)
    own = []  # each predicted bin's own choice (m = 1 where too few clusters)
    for b in range(config.bins):
        chosen = unit
        if n_predicted[b] >= config.min_clusters:
            # the smallest error; among equal ones, the factor nearest 1
            chosen = min(
                range(len(config.grid)),
                key=lambda g, b=b: (round(errors[g, b], 6), abs(math.log(config.grid[g]))),
            )
        own.append(chosen)
    # bins with too few clusters keep m = 1 unless the caller holds them elsewhere
    held = {b: unit for b in range(config.bins) if n_predicted[b] < config.min_clusters}
    held.update({b: config.grid.index(f) for b, f in fixed.items()})
    if config.criterion == "true":
        chosen, _ = _choose_for_true_bins(counts, n_clusters, config.grid, held, config.levels)
        fitted = chosen  # what the held bins would have taken, were they free
        if fixed:
            fitted, _ = _choose_for_true_bins(
                counts,
                n_clusters,
                config.grid,
                {b: unit for b in range(config.bins) if n_predicted[b] < config.min_clusters},
                config.levels,
            )
    else:
        fitted = tuple(own)
        chosen = tuple(held.get(b, own[b]) for b in range(config.bins))

    rows = []
    for b in range(config.bins):
        high = edges[b + 1]
        factor = config.grid[chosen[b]]
        row = {
            "predicted_visibility": [float(edges[b]), None if math.isinf(high) else float(high)],
            "n": int(n_predicted[b]),
            "worst_error_unit_factor": _finite_or_none(errors[unit, b]),
            "errors_by_factor": {
                f"{m:g}": _finite_or_none(errors[g, b]) for g, m in enumerate(config.grid)
            },
            "factor": float(factor),
            "worst_error_chosen": _finite_or_none(errors[chosen[b], b]),
            "errors_by_column_chosen": _column_errors(
                counts[chosen[b], b].sum(0), n_predicted[b], config.levels, names
            ),
        }
        if b in fixed:
            row["fitted_factor"] = float(config.grid[fitted[b]])
        rows.append(row)
    true_rows = []
    under_chosen = _errors_for_choice(counts, n_clusters, chosen, config.levels)
    under_own = _errors_for_choice(counts, n_clusters, own, config.levels)
    inside_chosen = _inside_for_choice(counts, chosen)
    for t in range(config.bins):
        high = edges[t + 1]
        true_rows.append(
            {
                "true_visibility": [float(edges[t]), None if math.isinf(high) else float(high)],
                "n": int(n_clusters[:, t].sum()),
                "worst_error_chosen": _finite_or_none(under_chosen[t]),
                "worst_error_per_bin_choice": _finite_or_none(under_own[t]),
                "errors_by_column_chosen": _column_errors(
                    inside_chosen[t], n_clusters[:, t].sum(), config.levels, names
                ),
            }
        )
    with torch.no_grad():
        layer.factor_log_values.copy_(
            torch.as_tensor([math.log(config.grid[g]) for g in chosen], dtype=torch.float32)
        )
    return {
        "method": "factor on the temperature by predicted visibility, fitted to HPD coverage"
        + (" in bins of true visibility" if config.criterion == "true" else ""),
        "config": config_record(config),
        "readout_r2": readout_r2,
        "bins": rows,
        "true_visibility": true_rows,
        "per_bin_choice": [float(config.grid[g]) for g in own],
    }
