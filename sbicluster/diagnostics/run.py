"""The diagnostics pipeline: held-out simulations → posterior draws → statistics → report.

This module owns :func:`run_diagnostics` (what ``sbicluster diagnose`` calls) and
:func:`evaluate`, the model-independent part that turns truths, posterior draws, log densities and
P(cluster) into the metrics dictionary — so that other posteriors (the binned baseline, the
integrated-photometry posterior, ensembles) are judged by exactly the same code. Figures are built
by :func:`sbicluster.diagnostics.plots.diagnostic_figures` and written by
:mod:`sbicluster.diagnostics.report`. This module must not train models, change how the simulator
draws data or draw figures.

Held-out data: every random stream of a diagnostics run (the test simulations, the TARP reference
points, the posterior draws) is seeded by :func:`held_out_seed` from the test-set seed through
:class:`numpy.random.SeedSequence`, distinct from the ``torch.manual_seed(seed)`` stream a training
run with the same integer seed would use, so the test set is never a training batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .accuracy import binned_by, point_accuracy, posterior_width, reliable_range_mask
from .classification import brier_score, precision_recall, reliability_diagram, roc_auc
from .conditional import conditional_coverage, region_masks
from .coverage import (
    CREDIBILITY_LEVELS,
    calibrated_max_deviation,
    coverage_from_credibility,
    hpd_credibility_joint,
    hpd_credibility_ties,
    marginal_credibility,
)
from .plots import diagnostic_figures, plot_lc2st_pp
from .report import write_report
from .sbc import run_sbc_checks

__all__ = [
    "run_diagnostics",
    "evaluate",
    "simulate_held_out",
    "held_out_seed",
    "SIMULATION_STREAM",
    "TARP_REFERENCE_STREAM",
    "POSTERIOR_DRAW_STREAM",
    "log_prob_of_draws",
    "model_log_prob",
    "tarp",
    "COVERAGE_TOLERANCE",
    "SBC_ALPHA",
    "AUC_GOAL",
    "DETECTION_VISIBILITY",
    "VISIBILITY_EDGES",
]

logger = logging.getLogger(__name__)

COVERAGE_TOLERANCE = 0.03
"""Goal: |empirical − nominal| coverage at every level, joint and per marginal."""
SBC_ALPHA = 0.01
"""Goal: SBC uniformity not rejected at this level."""
AUC_GOAL = 0.99
"""Goal: AUC of clusters above the detection threshold against all backgrounds."""
DETECTION_VISIBILITY = 5.0
"""Detection threshold on the simulator's visibility (a signal-to-noise measure): clusters at or
above it are called detectable and the AUC goal applies to them."""
VISIBILITY_EDGES = np.array([0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, np.inf])
"""Visibility bins of the binned accuracy, width and classification tables."""
COVERAGE_VISIBILITY_EDGES = np.array([0.0, 20.0, 100.0, np.inf])
"""Coarser visibility bins of the joint coverage table (coverage needs many objects per bin)."""
MIN_COVERAGE_BIN = 30
"""Fewest clusters in a visibility bin for its joint coverage to be reported."""


SIMULATION_STREAM = 0
"""Stream of :func:`held_out_seed` that drives the held-out simulations."""
TARP_REFERENCE_STREAM = 1
"""Stream of :func:`held_out_seed` that draws the TARP reference points."""
POSTERIOR_DRAW_STREAM = 2
"""Stream of :func:`held_out_seed` that draws the posterior samples of the test objects."""
LOCAL_TEST_STREAM = 3
"""Stream of :func:`held_out_seed` of the L-C2ST draws, evaluation points and classifiers."""


def held_out_seed(seed: int, stream: int = SIMULATION_STREAM) -> int:
    """Seed of one random stream of a diagnostics run, distinct from training's.

    Parameters
    ----------
    seed : int
        Test-set seed (``sbicluster diagnose --seed``).
    stream : int
        Which stream: :data:`SIMULATION_STREAM` (0), :data:`TARP_REFERENCE_STREAM` (1) or
        :data:`POSTERIOR_DRAW_STREAM` (2). Stream k is seeded with the stream-0 seed + k.

    Returns
    -------
    int
        A non-negative 63-bit integer for ``torch.Generator.manual_seed``, derived from
        ``(seed, 0x5B1D1A6)`` by :class:`numpy.random.SeedSequence`; it differs from ``seed``
        itself, so a held-out set never replays the stream ``torch.manual_seed(seed)`` gives
        a training run.
    """
    base = int(
        np.random.SeedSequence([int(seed), 0x5B1D1A6]).generate_state(1, dtype=np.uint64)[0] >> 1
    )
    return base + int(stream)


def simulate_held_out(simulator, n: int, seed: int, *, chunk: int = 256, progress: bool = False):
    """Fresh simulations for testing, on a random stream distinct from training's.

    Parameters
    ----------
    simulator : simulators.base.Simulator
        The forward model (the generator is made on ``simulator.device``).
    n : int
        Number of objects (clusters and backgrounds, in the simulator's proportion).
    seed : int
        Test-set seed (mapped to a stream distinct from ``torch.manual_seed(seed)``).
    chunk : int
        Objects simulated per call (bounds memory).
    progress : bool
        Show a progress bar.

    Returns
    -------
    SimulationBatch
        On the CPU.
    """
    from simulators.base import simulate_in_chunks

    gen = torch.Generator(device=simulator.device).manual_seed(held_out_seed(seed))
    return simulate_in_chunks(simulator, n, gen, chunk=chunk, progress=progress)


def log_prob_of_draws(
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    samples: np.ndarray,
    theta: np.ndarray,
    images: torch.Tensor,
    *,
    chunk: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """log q(θ | x) of the truths and of each object's own posterior draws.

    Parameters
    ----------
    log_prob : callable
        ``log_prob(theta, x)`` with θ (S, B, D) and x (B, ...) on ``device`` → (S, B) log
        densities; a per-object additive constant (e.g. a truncation normaliser) is harmless, it
        cancels in HPD ranks.
    samples : numpy.ndarray
        Draws, shape (N, S, D).
    theta : numpy.ndarray
        Truths, shape (N, D).
    images : torch.Tensor
        Observations, shape (N, ...).
    chunk : int
        Objects per call.
    device : str or torch.device
        Device of the density network.
    progress : bool
        Show a progress bar.

    Returns
    -------
    log_prob_true : numpy.ndarray
        Shape (N,).
    log_prob_samples : numpy.ndarray
        Shape (N, S).
    """
    from tqdm.auto import tqdm

    n, s, _ = samples.shape
    lp_true, lp_samp = np.empty(n), np.empty((n, s))
    for i0 in tqdm(range(0, n, chunk), desc="log q", disable=not progress):
        sl = slice(i0, i0 + chunk)
        x = images[sl].to(device)
        th = np.concatenate([theta[sl][:, None, :], samples[sl]], axis=1)  # (B, S+1, D)
        th = torch.as_tensor(th, dtype=torch.float32).transpose(0, 1).contiguous().to(device)
        with torch.no_grad():
            lp = log_prob(th, x).detach().double().cpu().numpy().T  # (B, S+1)
        lp_true[sl], lp_samp[sl] = lp[:, 0], lp[:, 1:]
    return lp_true, lp_samp


def model_log_prob(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``log_prob(theta (S, B, 4), images (B, C, H, W)) -> (S, B)`` for a :class:`ClusterModel`.

    Embeds each cutout once (``embed`` + ``flow_log_prob``) when the model offers it, otherwise
    falls back to the sbi posterior's ``log_prob_batched`` without leakage normalisation.
    """
    if hasattr(model, "embed") and hasattr(model, "flow_log_prob"):
        return lambda th, x: model.flow_log_prob(th, model.embed(x).float())
    posterior = model.posterior()
    return lambda th, x: posterior.log_prob_batched(th, x=x, norm_posterior=False)


def _sbi_tarp_on_draws(
    posterior_samples: torch.Tensor, theta: torch.Tensor, references: torch.Tensor, num_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """sbi's TARP expected coverage of precomputed draws (the one use of a private sbi function).

    sbi's public ``run_tarp`` takes a posterior object and observations and draws the samples
    itself; it cannot score draws made elsewhere (our ``predict`` with its symmetric views and
    seeded generator, the binned baseline, an ensemble mixture). The private ``_run_tarp`` that
    ``run_tarp`` delegates to computes the same statistic from given draws. Checked against sbi
    0.27 (``_run_tarp(posterior_samples (S, N, D), thetas (N, D), references (N, D), distance,
    num_bins, z_score_theta)``), the range ``pyproject.toml`` pins; re-check it when that pin moves.
    """
    from sbi.diagnostics.tarp import _run_tarp

    return _run_tarp(posterior_samples, theta, references, num_bins=num_bins, z_score_theta=True)


def tarp(samples: np.ndarray, theta: np.ndarray, seed: int) -> dict:
    """TARP expected coverage with sbi's implementation on precomputed draws.

    Parameters
    ----------
    samples : numpy.ndarray
        Draws, shape (N, S, D).
    theta : numpy.ndarray
        Truths, shape (N, D).
    seed : int
        Test-set seed; the reference points are drawn from its :data:`TARP_REFERENCE_STREAM`
        (uniform in the bounding box of ``theta``, as sbi's ``get_tarp_references`` draws them,
        but reproducibly).

    Returns
    -------
    dict
        ``ecp``, ``alpha`` (arrays), ``atc`` (area to curve, > 0 underconfident) and
        ``ks_pvalue``.
    """
    from sbi.diagnostics.tarp import check_tarp

    th = torch.as_tensor(theta, dtype=torch.float32)
    lo, hi = th.min(0).values, th.max(0).values
    gen = torch.Generator().manual_seed(held_out_seed(seed, TARP_REFERENCE_STREAM))
    refs = lo + (hi - lo) * torch.rand(th.shape, generator=gen)
    post = torch.as_tensor(np.moveaxis(samples, 1, 0), dtype=torch.float32)  # (S, N, D)
    ecp, alpha = _sbi_tarp_on_draws(post, th, refs, num_bins=max(th.shape[0] // 10, 2))
    atc, ks = check_tarp(ecp, alpha)
    return {"ecp": ecp.numpy(), "alpha": alpha.numpy(), "atc": float(atc), "ks_pvalue": float(ks)}


def _auc_above(p: np.ndarray, y: np.ndarray, visibility: np.ndarray, cut: float) -> float | None:
    """AUC of the clusters with visibility ≥ ``cut`` against every background (None if no such
    cluster)."""
    subset = ~y | (visibility >= cut)
    return roc_auc(p[subset], y[subset]) if (y & subset).any() else None


def _single_view_auc(
    model, images: torch.Tensor, is_cluster: np.ndarray, visibility: np.ndarray
) -> float | None:
    """AUC above the detection threshold of P(cluster) from the cutouts as given (one view)."""
    from ..inference import classifier_logits

    logits = classifier_logits(model, images, views=1)
    return _auc_above(logits, is_cluster, visibility, DETECTION_VISIBILITY)


def _bins(edges: np.ndarray, key: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (key >= lo) & (key < hi)
        if sel.any():
            out.append((float(lo), float(hi), sel))
    return out


def evaluate(
    theta: np.ndarray,
    samples: np.ndarray,
    *,
    names: Sequence[str],
    visibility: np.ndarray | None = None,
    log_prob_true: np.ndarray | None = None,
    log_prob_samples: np.ndarray | None = None,
    p_cluster: np.ndarray | None = None,
    is_cluster: np.ndarray | None = None,
    visibility_all: np.ndarray | None = None,
    background_kind: np.ndarray | None = None,
    seed: int = 0,
    levels: np.ndarray = CREDIBILITY_LEVELS,
    tie_rng: np.random.Generator | None = None,
) -> dict:
    """All diagnostics of one posterior on one test set (model-independent), as metrics.

    Parameters
    ----------
    theta : numpy.ndarray
        Truths of the cluster objects, shape (N, D), θ units.
    samples : numpy.ndarray
        Their posterior draws, shape (N, S, D), θ units.
    names : sequence of str
        Parameter names.
    visibility : numpy.ndarray, optional
        True visibility of the cluster objects, shape (N,).
    log_prob_true, log_prob_samples : numpy.ndarray, optional
        log q of the truths (N,) and of the draws (N, S), nats; without them the joint HPD
        coverage is skipped (TARP still gives a joint calibration check).
    p_cluster, is_cluster, visibility_all : numpy.ndarray, optional
        P(cluster), true label and true visibility of *all* test objects (clusters and
        backgrounds), shape (M,); without them classification is skipped.
    background_kind : numpy.ndarray, optional
        A name per test object, shape (M,), saying what kind of background it is (e.g. the
        simulator's hard-negative kinds, :data:`simulators.background.HARD_NEGATIVE_KINDS`); only
        the backgrounds' entries are read. With it the classification is also broken down by kind
        of background: AUC of the detectable clusters against each kind, and each kind's
        false-positive rate at P(cluster) ≥ 0.5.
    seed : int
        Test-set seed; the TARP reference points come from its :data:`TARP_REFERENCE_STREAM`.
    levels : numpy.ndarray
        Credibility levels of the coverage curves.
    tie_rng : numpy.random.Generator, optional
        For piecewise-constant densities (the binned baseline): draws exactly as dense as the
        truth are split at random in the joint HPD credibility
        (:func:`~sbicluster.diagnostics.coverage.hpd_credibility_ties`, one uniform per cluster
        object). Without it only strictly denser draws count, which is the same for a continuous
        density.

    Returns
    -------
    dict
        The metrics, see :func:`run_diagnostics` (without its run-level entries ``model``,
        ``seed``, ``timing``...). Arrays (TARP's curve, the visibility edges) stay numpy arrays;
        :func:`sbicluster.diagnostics.report.to_jsonable` converts them.
    """
    names = tuple(names)
    theta, samples = np.asarray(theta, dtype=float), np.asarray(samples, dtype=float)
    n, s, _ = samples.shape
    metrics: dict = {
        "parameters": list(names),
        "num_samples": s,
        "n_clusters": n,
        "n_objects": n if p_cluster is None else int(np.size(p_cluster)),
    }

    # coverage
    marg_cred = marginal_credibility(samples, theta)
    marg = [coverage_from_credibility(marg_cred[:, j], levels) for j in range(len(names))]
    cov_results = {}
    joint_cred = None
    if log_prob_true is not None and log_prob_samples is not None:
        if tie_rng is None:
            joint_cred = hpd_credibility_joint(log_prob_true, log_prob_samples)
        else:
            joint_cred = hpd_credibility_ties(log_prob_true, log_prob_samples, tie_rng)
        cov_results["joint"] = coverage_from_credibility(joint_cred, levels)
    cov_results.update(dict(zip(names, marg, strict=True)))
    all_meet = all(r.meets(COVERAGE_TOLERANCE) for r in cov_results.values())
    metrics["coverage"] = {
        "tolerance": COVERAGE_TOLERANCE,
        "calibrated_reference": calibrated_max_deviation(n, levels, tolerance=COVERAGE_TOLERANCE),
        "joint": cov_results["joint"].to_dict() if "joint" in cov_results else None,
        "marginal": {k: cov_results[k].to_dict() for k in names},
    }
    if joint_cred is not None and visibility is not None:
        vis = np.asarray(visibility, dtype=float)
        metrics["coverage"]["joint_by_visibility"] = [
            {"range": [lo, hi], **coverage_from_credibility(joint_cred[sel], levels).to_dict()}
            for lo, hi, sel in _bins(COVERAGE_VISIBILITY_EDGES, vis)
            if sel.sum() >= MIN_COVERAGE_BIN
        ]

    if visibility is not None:
        credibility = {} if joint_cred is None else {"joint": joint_cred}
        credibility.update({name: marg_cred[:, j] for j, name in enumerate(names)})
        metrics["coverage"]["conditional"] = conditional_coverage(
            credibility,
            region_masks(visibility, theta, names),
            levels,
            tolerance=COVERAGE_TOLERANCE,
        )

    # SBC
    sbc = run_sbc_checks(samples, theta, names)
    metrics["sbc"] = sbc.to_dict(SBC_ALPHA)

    # TARP
    if n >= 20:
        metrics["tarp"] = tarp(samples, theta, seed)

    # accuracy and width
    median = np.median(samples, axis=1)
    width = posterior_width(samples)
    acc = {
        "overall": point_accuracy(median, theta, names),
        "reliable_range": point_accuracy(median, theta, names, reliable_range_mask(theta, names)),
        "by_visibility": [],
    }
    if visibility is not None:
        vis = np.asarray(visibility, dtype=float)
        for lo, hi, sel in _bins(VISIBILITY_EDGES, vis):
            acc["by_visibility"].append(
                {"range": [lo, hi], **point_accuracy(median, theta, names, sel)}
            )
        wb = binned_by(width, vis, VISIBILITY_EDGES)
        metrics["width_vs_visibility"] = {
            "edges": wb["edges"],
            "count": wb["count"],
            "median_width": {name: wb["value"][:, j] for j, name in enumerate(names)},
        }
    else:
        metrics["width_vs_visibility"] = {
            "edges": [],
            "count": [],
            "median_width": {k: [] for k in names},
        }
    metrics["accuracy"] = acc
    metrics["median_width_overall"] = {
        name: float(np.median(width[:, j])) for j, name in enumerate(names)
    }

    # classification
    auc_ok = None
    if p_cluster is not None and is_cluster is not None:
        metrics["classification"] = _classification(
            p_cluster, is_cluster, visibility_all, background_kind
        )
        auc_ok = bool(metrics["classification"]["auc_detectable"] >= AUC_GOAL)

    metrics["goals"] = {
        "coverage": bool(all_meet),
        "sbc": bool(not sbc.rejected(SBC_ALPHA).any()),
        "auc": auc_ok,
    }
    return metrics


def _classification(
    p_cluster: np.ndarray,
    is_cluster: np.ndarray,
    visibility_all: np.ndarray | None,
    background_kind: np.ndarray | None,
) -> dict:
    """The ``classification`` entry of :func:`evaluate` (arguments as there)."""
    p = np.asarray(p_cluster, dtype=float)
    y = np.asarray(is_cluster).astype(bool)
    va = (
        np.asarray(visibility_all, dtype=float)
        if visibility_all is not None
        else np.full(p.shape, np.inf)
    )
    detectable = ~y | (va >= DETECTION_VISIBILITY)
    cls = {
        "detection_threshold": DETECTION_VISIBILITY,
        "auc": roc_auc(p, y),
        "auc_detectable": roc_auc(p[detectable], y[detectable]),
        "n_detectable": int((y & detectable).sum()),
        "precision_recall": precision_recall(p, y, 0.5),
        "precision_recall_detectable": precision_recall(p[detectable], y[detectable], 0.5),
        "brier": brier_score(p, y),
        "reliability": reliability_diagram(p, y),
        "by_visibility": [],
    }
    for lo, hi, sel in _bins(VISIBILITY_EDGES, np.where(y, va, -1.0)):
        subset = sel | ~y
        cls["by_visibility"].append(
            {
                "range": [lo, hi],
                "n": int(sel.sum()),
                "auc": roc_auc(p[subset], y[subset]),
                "recall": float((p[sel] >= 0.5).mean()),
                "reliability_ece": reliability_diagram(p[subset], y[subset])["ece"],
                "auc_at_or_above": _auc_above(p, y, va, lo),
            }
        )
    cls["visibility_meeting_auc_goal"] = next(
        (
            b["range"][0]
            for b in cls["by_visibility"]
            if b["auc_at_or_above"] is not None and b["auc_at_or_above"] >= AUC_GOAL
        ),
        None,
    )
    if background_kind is not None:
        kind = np.asarray(background_kind).astype(str)
        if kind.shape != y.shape:
            raise ValueError(
                f"background_kind needs one entry per test object, got {kind.shape} for {y.shape}"
            )
        cls["by_background"] = []
        for name in sorted(set(kind[~y])):
            neg = ~y & (kind == name)
            subset = (y & detectable) | neg
            cls["by_background"].append(
                {
                    "kind": str(name),
                    "n": int(neg.sum()),
                    "auc_detectable": roc_auc(p[subset], y[subset]),
                    "false_positive_rate": float((p[neg] >= 0.5).mean()),
                }
            )
    return cls


REPORT_FILES = ("report.md", "metrics.json")
"""The files that mark a folder as holding a diagnostics report."""


def _local_test(
    model, theta, images, visibility, n_probes, seed, notes
) -> tuple[dict | None, list]:
    """L-C2ST at ``n_probes`` clusters spread over visibility (the others train it); ``(None,
    [])`` with a note when the model has no flow to invert or too few clusters are left."""
    from .local import MIN_CALIBRATION, local_c2st, probe_indices

    n_cal = len(theta) - min(n_probes, len(theta))
    reason = (
        "the model has no normalizing flow to invert"
        if not callable(getattr(model, "flow", None))
        else f"{n_cal} clusters left to train it, fewer than {MIN_CALIBRATION} (raise --n)"
        if n_cal < MIN_CALIBRATION
        else None
    )
    if reason:
        logger.warning("L-C2ST skipped: %s", reason)
        notes.append(f"L-C2ST skipped: {reason}.")
        return None, []
    probe = np.zeros(len(theta), bool)
    probe[probe_indices(visibility, n_probes)] = True
    result = local_c2st(
        model, theta, images, probe, visibility, seed=held_out_seed(seed, LOCAL_TEST_STREAM)
    )
    return {k: v for k, v in result.items() if k != "pp"}, result["pp"]


def check_report_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check, before any work, that a diagnostics report may be written to ``out_dir``.

    Nothing is created.

    Parameters
    ----------
    out_dir : str or Path
        Report folder.
    overwrite : bool
        Allow replacing an existing report.

    Returns
    -------
    Path
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises
    ------
    sbicluster.errors.InputError
        ``out_dir`` is a file, lies under a file or cannot be written.
    sbicluster.errors.OutputExistsError
        ``out_dir`` holds a report (``report.md`` or ``metrics.json``) and ``overwrite`` is false.
    """
    from ..errors import OutputExistsError
    from ..files import check_writable_dir

    out_dir = check_writable_dir(out_dir, what="--out")
    existing = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"--out {out_dir}: holds a diagnostics report ({', '.join(existing)}); pass "
            "--overwrite to replace it or choose another --out"
        )
    return out_dir


def run_diagnostics(
    model,
    simulator,
    *,
    n: int = 2000,
    num_samples: int = 1000,
    seed: int = 12345,
    views: int = 8,
    out_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    lc2st_probes: int = 50,
) -> dict:
    """Calibration, accuracy and classification diagnostics of a model on held-out simulations.

    Parameters
    ----------
    model : ClusterModel
        Trained model (``posterior()``, ``prior``, ``card``) usable by :func:`sbicluster.inference.predict`.
    simulator : ClusterSimulator or compatible
        Source of fresh test simulations (``simulate(n, generator)``); should match the model card.
    n : int
        Number of held-out objects (clusters and backgrounds).
    num_samples : int
        Posterior draws per object.
    seed : int
        Test-set seed; the stream is distinct from a training run's with the same seed.
    views : int
        Symmetric views over which P(cluster) is averaged (as in
        :func:`sbicluster.inference.predict`); the classification metrics also report the
        single-view AUC, so the gain is measured in every report.
    out_dir : str or Path
        Report directory: ``report.md``, PNG figures and ``metrics.json`` are written there.
    overwrite : bool
        Replace a report already in ``out_dir``; without it such a folder is refused before any
        work.
    progress : bool
        Show progress bars (only on a terminal).
    lc2st_probes : int
        Held-out clusters, spread over visibility, at which the local test L-C2ST
        (:func:`~sbicluster.diagnostics.local.local_c2st`) is run; the other clusters train its
        classifiers. 0 skips it.

    Returns
    -------
    dict
        The metrics (as written to ``metrics.json``): ``coverage`` (joint and per-parameter HPD
        coverage curves with binomial bands and verdicts; the joint one also per visibility bin of
        :data:`COVERAGE_VISIBILITY_EDGES`; ``conditional``: by visibility and by tercile of each
        true parameter), ``local`` (L-C2ST at the probes), ``sbc`` (KS and χ² p-values), ``tarp``, ``accuracy``
        (bias, robust σ, RMSE overall, in the paper's reliable range and by visibility),
        ``width_vs_visibility``, ``classification`` (AUC, precision/recall, reliability, by
        visibility and, when the simulator records its hard negatives, by kind of background),
        ``goals`` (which of the project's calibration goals are met) and ``timing``.

    Raises
    ------
    sbicluster.errors.InputError
        If ``n`` or ``num_samples`` is too small to be meaningful, or ``out_dir`` cannot be
        written.
    sbicluster.errors.OutputExistsError
        If ``out_dir`` holds a report and ``overwrite`` is false.
    """
    from simulators.background import HARD_NEGATIVE_KINDS

    from ..errors import InputError
    from ..inference import predict

    if n < 20 or num_samples < 20:
        raise InputError(
            f"diagnostics need n >= 20 objects and num_samples >= 20 draws, got n={n}, "
            f"num_samples={num_samples}; use e.g. --n 2000 for the calibration goals"
        )
    if isinstance(lc2st_probes, bool) or not isinstance(lc2st_probes, int) or lc2st_probes < 0:
        raise InputError(f"--lc2st-probes must be an integer ≥ 0, got {lc2st_probes!r}")
    check_report_dir(out_dir, overwrite)
    train_seed = (
        (model.card.get("training", {}) or {}).get("config", {}).get("seed")
        if isinstance(getattr(model, "card", None), dict)
        else None
    )
    timing = {}
    t0 = time.perf_counter()
    batch = simulate_held_out(simulator, n, seed, progress=progress)
    timing["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(held_out_seed(seed, POSTERIOR_DRAW_STREAM))
    pred = predict(
        model,
        batch.images,
        num_samples=num_samples,
        generator=gen,
        views=views,
        progress=progress,
    )
    timing["predict"] = time.perf_counter() - t0

    label = batch.label.numpy().astype(bool)
    theta = batch.theta.numpy()[label]
    samples = np.asarray(pred.samples)[label]
    vis_all = batch.visibility.numpy()
    kind_codes = batch.nuisances.get("hard_negative")
    background_kind = (
        None
        if kind_codes is None
        else np.array([HARD_NEGATIVE_KINDS.get(int(k), f"kind {int(k)}") for k in kind_codes])
    )

    t0 = time.perf_counter()
    lp_true = lp_samp = None
    notes = []
    try:
        device = next(model.parameters()).device
        lp_true, lp_samp = log_prob_of_draws(
            model_log_prob(model),
            samples,
            theta,
            batch.images[label],
            device=device,
            progress=progress,
        )
    except Exception as err:  # noqa: BLE001 - the rest of the report is still worth writing
        logger.warning("joint HPD coverage skipped: log q of draws failed (%s)", err)
        notes.append(f"Joint HPD coverage skipped: evaluating log q of the draws failed ({err}).")
    timing["log_prob"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prior = model.prior
    metrics = evaluate(
        theta,
        samples,
        names=prior.names,
        visibility=vis_all[label],
        log_prob_true=lp_true,
        log_prob_samples=lp_samp,
        p_cluster=np.asarray(pred.p_cluster),
        is_cluster=label,
        visibility_all=vis_all,
        background_kind=background_kind,
        seed=seed,
    )
    if views > 1 and "classification" in metrics:
        metrics["classification"]["auc_detectable_single_view"] = _single_view_auc(
            model, batch.images, label, vis_all
        )
    pp = None
    if lc2st_probes:
        t1 = time.perf_counter()
        metrics["local"], pp = _local_test(
            model, theta, batch.images[label], vis_all[label], lc2st_probes, seed, notes
        )
        timing["local_test"] = time.perf_counter() - t1
    figures = diagnostic_figures(
        metrics,
        theta,
        samples,
        labels=prior.labels,
        visibility=vis_all[label],
        p_cluster=np.asarray(pred.p_cluster),
        is_cluster=label,
        visibility_all=vis_all,
    )
    if pp:
        figures["lc2st_pp"] = plot_lc2st_pp(pp, metrics["local"]["alpha"])
    timing["statistics"] = time.perf_counter() - t0  # metrics and figures
    card = model.card if isinstance(getattr(model, "card", None), dict) else {}
    metrics.update(
        {
            "model": {"name": card.get("name", "model"), "card_keys": sorted(card)},
            "n_objects": int(n),
            "seed": int(seed),
            "symmetry_views": int(views),
            "training_seed": train_seed,
            "notes": notes,
            "timing": timing,
        }
    )
    write_report(out_dir, metrics, figures)
    return metrics
