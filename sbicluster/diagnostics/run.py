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

Memory: :func:`run_diagnostics` simulates, samples and reduces the test set
:data:`DEFAULT_CHUNK` objects at a time and keeps only per-object statistics
(:mod:`sbicluster.diagnostics.objects`), so its memory grows by a few hundred bytes per object
rather than with the cutouts and the N × S draws (``benchmarks/results/diagnose_memory.md``).
Its results do not depend on the chunk size: the simulations run :data:`SIMULATION_BLOCK`
objects per call on one stream, and each block of :data:`DRAW_BLOCK` objects draws its posterior
samples from a generator seeded from (seed, block) (:func:`draw_generator`).
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..checks import is_whole_number
from .accuracy import binned_by, point_accuracy, reliable_range_mask
from .classification import brier_score, precision_recall, reliability_diagram, roc_auc
from .conditional import conditional_coverage, region_masks
from .coverage import CREDIBILITY_LEVELS, calibrated_max_deviation, coverage_from_credibility
from .objects import DrawStatistics, draw_statistics, tarp_coverage_values, tarp_from_values
from .plots import diagnostic_figures, plot_lc2st_pp
from .report import write_report
from .sbc import sbc_from_ranks

__all__ = [
    "run_diagnostics",
    "evaluate",
    "evaluate_statistics",
    "simulate_held_out",
    "held_out_seed",
    "draw_generator",
    "check_chunk",
    "truth_box_references",
    "SIMULATION_STREAM",
    "TARP_REFERENCE_STREAM",
    "POSTERIOR_DRAW_STREAM",
    "SIMULATION_BLOCK",
    "DRAW_BLOCK",
    "DEFAULT_CHUNK",
    "log_prob_of_draws",
    "model_log_prob",
    "features_log_prob",
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
"""Stream of :func:`held_out_seed` that seeds the posterior draws of the test objects (one
generator per block of :data:`DRAW_BLOCK` objects, :func:`draw_generator`)."""
LOCAL_TEST_STREAM = 3
"""Stream of :func:`held_out_seed` of the L-C2ST draws, evaluation points and classifiers."""

SIMULATION_BLOCK = 256
"""Held-out objects simulated per call (:func:`simulate_held_out`); the test set of a seed
depends on it, not on how many objects :func:`run_diagnostics` holds at once."""
DRAW_BLOCK = 256
"""Held-out objects whose posterior draws share one generator (:func:`draw_generator`)."""
DEFAULT_CHUNK = 2048
"""Held-out objects :func:`run_diagnostics` simulates, samples and reduces at a time."""


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


def simulate_held_out(
    simulator, n: int, seed: int, *, chunk: int = SIMULATION_BLOCK, progress: bool = False
):
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
        What ``log_prob`` conditions on, shape (N, ...): the observations, or their embedding
        features for :func:`features_log_prob`.
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


def truth_box_references(theta: np.ndarray, seed: int) -> tuple[np.ndarray, tuple]:
    """TARP reference points uniform in the bounding box of the truths, and that box.

    As sbi's ``get_tarp_references`` draws them, but reproducibly: from the test-set seed's
    :data:`TARP_REFERENCE_STREAM`.

    Parameters
    ----------
    theta : numpy.ndarray
        Truths, shape (N, D), θ units.
    seed : int
        Test-set seed.

    Returns
    -------
    references : numpy.ndarray
        float32 (N, D), θ units.
    box : tuple of numpy.ndarray
        (low, high), float32 (D,) each: the truths' minimum and maximum per parameter.
    """
    th = torch.as_tensor(np.asarray(theta), dtype=torch.float32)
    lo, hi = th.min(0).values, th.max(0).values
    gen = torch.Generator().manual_seed(held_out_seed(seed, TARP_REFERENCE_STREAM))
    refs = lo + (hi - lo) * torch.rand(th.shape, generator=gen)
    return refs.numpy(), (lo.numpy(), hi.numpy())


def tarp(samples: np.ndarray, theta: np.ndarray, seed: int) -> dict:
    """TARP expected coverage of precomputed draws, as sbi's implementation computes it.

    Parameters
    ----------
    samples : numpy.ndarray
        Draws, shape (N, S, D).
    theta : numpy.ndarray
        Truths, shape (N, D).
    seed : int
        Test-set seed; the reference points are drawn from its :data:`TARP_REFERENCE_STREAM`
        (:func:`truth_box_references`: uniform in the bounding box of ``theta``, which also
        scales the parameters, as sbi's ``run_tarp`` does).

    Returns
    -------
    dict
        ``ecp``, ``alpha`` (arrays), ``atc`` (area to curve, > 0 underconfident) and
        ``ks_pvalue``.
    """
    references, box = truth_box_references(theta, seed)
    return tarp_from_values(tarp_coverage_values(samples, theta, references, *box))


def _auc_above(p: np.ndarray, y: np.ndarray, visibility: np.ndarray, cut: float) -> float | None:
    """AUC of the clusters with visibility ≥ ``cut`` against every background (None if no such
    cluster)."""
    subset = ~y | (visibility >= cut)
    return roc_auc(p[subset], y[subset]) if (y & subset).any() else None


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
    theta, samples = np.asarray(theta, dtype=float), np.asarray(samples, dtype=float)
    references = box = None
    if len(theta) >= 20:
        references, box = truth_box_references(theta, seed)
    statistics = draw_statistics(
        theta,
        samples,
        log_prob_true=log_prob_true,
        log_prob_samples=log_prob_samples,
        tie_rng=tie_rng,
        tarp_references=references,
        tarp_box=box,
    )
    return evaluate_statistics(
        theta,
        statistics,
        names=names,
        visibility=visibility,
        p_cluster=p_cluster,
        is_cluster=is_cluster,
        visibility_all=visibility_all,
        background_kind=background_kind,
        levels=levels,
    )


def evaluate_statistics(
    theta: np.ndarray,
    statistics: DrawStatistics,
    *,
    names: Sequence[str],
    visibility: np.ndarray | None = None,
    p_cluster: np.ndarray | None = None,
    is_cluster: np.ndarray | None = None,
    visibility_all: np.ndarray | None = None,
    background_kind: np.ndarray | None = None,
    levels: np.ndarray = CREDIBILITY_LEVELS,
) -> dict:
    """All diagnostics of one posterior on one test set, from per-object statistics.

    What :func:`evaluate` returns, computed from the few numbers per object of
    :class:`~sbicluster.diagnostics.objects.DrawStatistics` instead of the draws, so that a test
    set reduced chunk by chunk never needs its N × S draws in memory.

    Parameters
    ----------
    theta : numpy.ndarray
        Truths of the cluster objects, shape (N, D), θ units.
    statistics : DrawStatistics
        Their per-object statistics (:func:`~sbicluster.diagnostics.objects.draw_statistics`);
        without ``joint_credibility`` the joint HPD coverage is skipped, without
        ``tarp_coverage`` TARP.
    names, visibility, p_cluster, is_cluster, visibility_all, background_kind, levels
        As for :func:`evaluate`.

    Returns
    -------
    dict
        As :func:`evaluate`.
    """
    names = tuple(names)
    theta = np.asarray(theta, dtype=float)
    n, s = len(statistics), statistics.num_samples
    metrics: dict = {
        "parameters": list(names),
        "num_samples": s,
        "n_clusters": n,
        "n_objects": n if p_cluster is None else int(np.size(p_cluster)),
    }

    # coverage
    marg_cred = statistics.marginal_credibility
    joint_cred = statistics.joint_credibility
    marg = [coverage_from_credibility(marg_cred[:, j], levels) for j in range(len(names))]
    cov_results = {}
    if joint_cred is not None:
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
    sbc = sbc_from_ranks(statistics.ranks, s, names)
    metrics["sbc"] = sbc.to_dict(SBC_ALPHA)

    # TARP
    if n >= 20 and statistics.tarp_coverage is not None:
        metrics["tarp"] = tarp_from_values(statistics.tarp_coverage)

    # accuracy and width
    median, width = statistics.median, statistics.width
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
    model, theta, features, visibility, n_probes, seed, notes, num_ensemble=1
) -> tuple[dict | None, list]:
    """L-C2ST at ``n_probes`` clusters spread over visibility (the others train it); ``(None,
    [])`` with a note when the model has no flow to invert or too few clusters are left."""
    from .local import MIN_CALIBRATION, local_c2st, probe_indices

    n_cal = len(theta) - min(n_probes, len(theta))
    reason = (
        "the model has no normalizing flow to invert"
        if not callable(getattr(model, "flow", None)) or features is None
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
        model,
        theta,
        None,
        probe,
        visibility,
        features=features,
        seed=held_out_seed(seed, LOCAL_TEST_STREAM),
        num_ensemble=num_ensemble,
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


def draw_generator(seed: int, block: int) -> torch.Generator:
    """The CPU generator of the posterior draws of held-out block ``block``.

    Objects ``block × DRAW_BLOCK`` … ``(block + 1) × DRAW_BLOCK − 1`` of a diagnostics run draw
    from a generator seeded from (the test-set seed's :data:`POSTERIOR_DRAW_STREAM`, ``block``)
    (:func:`sbicluster.inference.cutout_seed`), so the draws do not depend on how many objects a
    run holds in memory at once.

    Parameters
    ----------
    seed : int
        Test-set seed.
    block : int
        Index of the block of :data:`DRAW_BLOCK` consecutive held-out objects.

    Returns
    -------
    torch.Generator
    """
    from ..inference import cutout_seed

    draw_seed = cutout_seed(held_out_seed(seed, POSTERIOR_DRAW_STREAM), block)
    return torch.Generator().manual_seed(draw_seed)


def _held_out_chunks(simulator, n: int, seed: int, chunk: int):
    """Consecutive ``(start, SimulationBatch)`` chunks of the held-out set, on the CPU.

    Simulated :data:`SIMULATION_BLOCK` objects per call on the stream of
    :func:`simulate_held_out`, so the objects are the same whatever ``chunk`` (a multiple of
    :data:`SIMULATION_BLOCK`) is.
    """
    from simulators.base import iter_simulation_chunks
    from simulators.batch import SimulationBatch

    gen = torch.Generator(device=simulator.device).manual_seed(held_out_seed(seed))
    blocks = iter_simulation_chunks(simulator, n, gen, chunk=SIMULATION_BLOCK)
    start = 0
    while start < n:
        batch = SimulationBatch.concatenate(
            list(itertools.islice(blocks, chunk // SIMULATION_BLOCK))
        )
        yield start, batch
        start += len(batch.label)


def _predict_blocks(model, images: torch.Tensor, start: int, *, num_samples, seed, views):
    """:func:`sbicluster.inference.predict` on held-out objects ``start`` … ``start + len(images)
    − 1``, :data:`DRAW_BLOCK` at a time, each block with its :func:`draw_generator`."""
    from ..inference import Prediction, predict

    if start % DRAW_BLOCK:
        raise ValueError(f"chunks must start on a block boundary, got {start}")
    parts = [
        predict(
            model,
            images[b0 : b0 + DRAW_BLOCK],
            num_samples=num_samples,
            generator=draw_generator(seed, (start + b0) // DRAW_BLOCK),
            batch_size=DRAW_BLOCK,
            views=views,
            progress=False,
        )
        for b0 in range(0, len(images), DRAW_BLOCK)
    ]
    return Prediction(
        np.concatenate([p.samples for p in parts]),
        np.concatenate([p.p_cluster for p in parts]),
        np.concatenate([p.visibility for p in parts]),
    )


def check_chunk(chunk: int) -> int:
    """Objects per chunk of :func:`run_diagnostics`: ``chunk`` rounded up to a multiple of
    :data:`DRAW_BLOCK`; :class:`~sbicluster.errors.InputError` unless it is a positive integer."""
    from ..errors import InputError

    if not is_whole_number(chunk, numpy_integers=True):
        raise InputError(f"chunk must be a positive number of objects, got {chunk!r}")
    return int(-(-chunk // DRAW_BLOCK) * DRAW_BLOCK)


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
    lc2st_ensemble: int = 1,
    chunk: int = DEFAULT_CHUNK,
) -> dict:
    """Calibration, accuracy and classification diagnostics of a model on held-out simulations.

    The test set is simulated, embedded, sampled and reduced ``chunk`` objects at a time: of
    each chunk only a few numbers per object are kept (truths, visibility, label, P(cluster),
    the per-object statistics of :func:`~sbicluster.diagnostics.objects.draw_statistics` and,
    for L-C2ST, the clusters' F-dimensional features), never the cutouts or the N × S draws of
    the whole set, so memory grows by a few hundred bytes per object
    (``benchmarks/results/diagnose_memory.md``). The results do not depend on ``chunk``: the
    test set is simulated :data:`SIMULATION_BLOCK` objects per call on one stream (the same
    objects as :func:`simulate_held_out`), and the posterior draws of each block of
    :data:`DRAW_BLOCK` objects come from a generator seeded from (seed, block)
    (:func:`draw_generator`). TARP's reference points are drawn uniformly in the prior's box
    (one after the other, from the seed's :data:`TARP_REFERENCE_STREAM`), which also scales
    the parameters; sbi's default, the box of the truths, is only known once the whole set is
    simulated (for thousands of clusters the two boxes differ by a fraction of a per cent).

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
        Show a progress bar (only on a terminal).
    lc2st_probes : int
        Held-out clusters, spread over visibility, at which the local test L-C2ST
        (:func:`~sbicluster.diagnostics.local.local_c2st`) is run; the other clusters train its
        classifiers. 0 skips it.
    lc2st_ensemble : int
        Classifiers averaged in L-C2ST, for the observed data and each null trial alike
        (``num_ensemble`` of :func:`~sbicluster.diagnostics.local.local_c2st`).
    chunk : int
        Objects held in memory at once (rounded up to a multiple of :data:`DRAW_BLOCK`); bounds
        the cutouts and draws held (about 50 kB and 16 × S bytes per object for the default
        model) and does not change the results.

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
        If ``n`` or ``num_samples`` is too small to be meaningful, ``chunk`` is not a positive
        integer, or ``out_dir`` cannot be written.
    sbicluster.errors.OutputExistsError
        If ``out_dir`` holds a report and ``overwrite`` is false.
    """
    from ..errors import InputError

    if n < 20 or num_samples < 20:
        raise InputError(
            f"diagnostics need n >= 20 objects and num_samples >= 20 draws, got n={n}, "
            f"num_samples={num_samples}; use e.g. --n 2000 for the calibration goals"
        )
    for flag, value, least in (
        ("--lc2st-probes", lc2st_probes, 0),
        ("--lc2st-ensemble", lc2st_ensemble, 1),
    ):
        if not is_whole_number(value, least):
            raise InputError(f"{flag} must be an integer ≥ {least}, got {value!r}")
    chunk = check_chunk(chunk)
    check_report_dir(out_dir, overwrite)
    train_seed = (
        (model.card.get("training", {}) or {}).get("config", {}).get("seed")
        if isinstance(getattr(model, "card", None), dict)
        else None
    )
    notes: list[str] = []
    held = _reduce_test_set(
        model,
        simulator,
        n=n,
        num_samples=num_samples,
        seed=seed,
        views=views,
        chunk=chunk,
        keep_features=bool(lc2st_probes) and callable(getattr(model, "flow", None)),
        progress=progress,
        notes=notes,
    )
    timing = held.pop("timing")
    label, vis_all, theta = held["is_cluster"], held["visibility_all"], held["theta"]

    t0 = time.perf_counter()
    prior = model.prior
    metrics = evaluate_statistics(
        theta,
        held["statistics"],
        names=prior.names,
        visibility=vis_all[label],
        p_cluster=held["p_cluster"],
        is_cluster=label,
        visibility_all=vis_all,
        background_kind=held["background_kind"],
    )
    if views > 1 and "classification" in metrics:
        metrics["classification"]["auc_detectable_single_view"] = _auc_above(
            held["single_view_logit"], label, vis_all, DETECTION_VISIBILITY
        )
    timing["statistics"] += time.perf_counter() - t0
    pp = None
    if lc2st_probes:
        t1 = time.perf_counter()
        metrics["local"], pp = _local_test(
            model,
            theta,
            held["features"],
            vis_all[label],
            lc2st_probes,
            seed,
            notes,
            lc2st_ensemble,
        )
        timing["local_test"] = time.perf_counter() - t1
    t0 = time.perf_counter()
    figures = diagnostic_figures(
        metrics,
        theta,
        statistics=held["statistics"],
        labels=prior.labels,
        visibility=vis_all[label],
        p_cluster=held["p_cluster"],
        is_cluster=label,
        visibility_all=vis_all,
    )
    if pp:
        figures["lc2st_pp"] = plot_lc2st_pp(pp, metrics["local"]["alpha"])
    timing["statistics"] += time.perf_counter() - t0  # metrics and figures
    card = model.card if isinstance(getattr(model, "card", None), dict) else {}
    metrics.update(
        {
            "model": {
                "name": card.get("name", "model"),
                "card_keys": sorted(card),
                "recalibration": _recalibration_summary(card),
            },
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


def _recalibration_summary(card: dict) -> dict | None:
    """What the report says of a recalibrated model (:mod:`sbicluster.recalibration`), else None."""
    record = card.get("recalibration")
    if not isinstance(record, dict):
        return None
    config = record.get("config", {})
    factor = record.get("coverage_factor")
    return {
        "n_simulations": config.get("n_simulations"),
        "seed": config.get("seed"),
        "per_dimension": config.get("per_dimension"),
        "location": bool(config.get("location", False)),
        "coverage_factor": (
            None
            if not factor
            else {
                "n_simulations": factor.get("config", {}).get("n_simulations"),
                "bins": [
                    {"predicted_visibility": row["predicted_visibility"], "factor": row["factor"]}
                    for row in factor.get("bins", [])
                ],
            }
        ),
    }


def features_log_prob(model) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``log_prob(theta (S, B, D), features (B, F)) -> (S, B)`` of a model that embeds its cutouts
    (``embed`` + ``flow_log_prob``), on features computed once."""
    return lambda th, f: model.flow_log_prob(th, f.float())


@torch.no_grad()
def _chunk_features(model, images: torch.Tensor) -> torch.Tensor:
    """float32 (n, F) features of a chunk's cutouts on the CPU, embedded
    :data:`~sbicluster.inference.EMBED_ROWS` at a time from the chunk's first object (a block
    boundary), so each object is embedded in the same group whatever the chunk size."""
    from ..inference import embed_in_parts

    model.eval()
    return embed_in_parts(model, images.to(next(model.parameters()).device)).cpu()


@torch.no_grad()
def _single_view_logits(model, images: torch.Tensor, features: torch.Tensor | None) -> np.ndarray:
    """float64 (n,) classifier logits of the cutouts as given (one view), from their features
    when the caller has them."""
    from ..inference import classifier_logits

    if features is None:
        return classifier_logits(model, images, views=1)
    return model.heads(features.to(next(model.parameters()).device))[0].double().cpu().numpy()


def _reduce_test_set(
    model,
    simulator,
    *,
    n: int,
    num_samples: int,
    seed: int,
    views: int,
    chunk: int,
    keep_features: bool,
    progress: bool,
    notes: list[str],
) -> dict:
    """Simulate, sample and reduce the held-out set ``chunk`` objects at a time.

    Returns
    -------
    dict
        Per test object (M = ``n``): ``is_cluster`` bool (M,), ``visibility_all`` (M,),
        ``p_cluster`` (M,), ``single_view_logit`` (M,) or None (``views`` = 1),
        ``background_kind`` (M,) str or None; per cluster (N): ``theta`` (N, D),
        ``statistics`` (:class:`DrawStatistics`), ``features`` (N, F) float32 tensor or None
        (without ``keep_features``); and ``timing`` (s per phase).
    """
    from tqdm.auto import tqdm

    from simulators.background import HARD_NEGATIVE_KINDS

    device = next(model.parameters()).device
    # embed every object once (on block boundaries, so the features do not depend on the chunk)
    with_features = hasattr(model, "embed") and hasattr(model, "flow_log_prob")
    keep_features = keep_features and with_features
    low, high = model.prior.low().numpy(), model.prior.high().numpy()
    tarp_rng = np.random.default_rng(held_out_seed(seed, TARP_REFERENCE_STREAM))
    timing = {"simulate": 0.0, "predict": 0.0, "log_prob": 0.0, "statistics": 0.0}
    keys = ("is_cluster", "visibility_all", "p_cluster", "single_view_logit", "kind", "theta")
    kept: dict[str, list] = {k: [] for k in (*keys, "statistics", "features")}
    joint_ok = True
    bar = tqdm(total=n, desc="diagnose", unit="obj", disable=not (progress and sys.stderr.isatty()))
    chunks = _held_out_chunks(simulator, n, seed, chunk)
    while True:
        t0 = time.perf_counter()
        start, batch = next(chunks, (None, None))
        timing["simulate"] += time.perf_counter() - t0
        if batch is None:
            break
        t0 = time.perf_counter()
        pred = _predict_blocks(
            model, batch.images, start, num_samples=num_samples, seed=seed, views=views
        )
        label = batch.label.numpy().astype(bool)
        theta, samples = batch.theta.numpy()[label], pred.samples[label]
        features = _chunk_features(model, batch.images) if with_features else None
        if views > 1:
            kept["single_view_logit"].append(_single_view_logits(model, batch.images, features))
        if keep_features:
            kept["features"].append(features[label])
        timing["predict"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        lp_true = lp_samp = None
        if joint_ok:
            log_prob, condition = (
                (features_log_prob(model), features[label])
                if with_features
                else (model_log_prob(model), batch.images[label])
            )
            try:
                lp_true, lp_samp = log_prob_of_draws(
                    log_prob, samples, theta, condition, device=device
                )
            except Exception as err:  # noqa: BLE001 - the rest of the report is still worth writing
                joint_ok = False
                logger.warning("joint HPD coverage skipped: log q of draws failed (%s)", err)
                notes.append(
                    f"Joint HPD coverage skipped: evaluating log q of the draws failed ({err})."
                )
        timing["log_prob"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        references = low + (high - low) * tarp_rng.random(theta.shape).astype(np.float32)
        kept["statistics"].append(
            draw_statistics(
                theta,
                samples,
                log_prob_true=lp_true,
                log_prob_samples=lp_samp,
                tarp_references=references,
                tarp_box=(low, high),
            )
        )
        codes = batch.nuisances.get("hard_negative")
        kept["kind"].append(None if codes is None else codes.numpy())
        kept["is_cluster"].append(label)
        kept["visibility_all"].append(batch.visibility.numpy())
        kept["p_cluster"].append(pred.p_cluster)
        kept["theta"].append(theta)
        timing["statistics"] += time.perf_counter() - t0
        del pred, samples, features, batch, lp_samp
        bar.update(len(label))
        logger.info("diagnose: %d of %d held-out objects reduced", start + len(label), n)
    bar.close()

    statistics = DrawStatistics.concatenate(kept["statistics"])
    if not joint_ok:
        statistics.joint_credibility = None
    codes = None if any(c is None for c in kept["kind"]) else np.concatenate(kept["kind"])
    return {
        "is_cluster": np.concatenate(kept["is_cluster"]),
        "visibility_all": np.concatenate(kept["visibility_all"]),
        "p_cluster": np.concatenate(kept["p_cluster"]),
        "single_view_logit": (
            np.concatenate(kept["single_view_logit"]) if kept["single_view_logit"] else None
        ),
        "background_kind": (
            None
            if codes is None
            else np.array([HARD_NEGATIVE_KINDS.get(int(k), f"kind {int(k)}") for k in codes])
        ),
        "theta": np.concatenate(kept["theta"]),
        "statistics": statistics,
        "features": torch.cat(kept["features"]) if kept["features"] else None,
        "timing": timing,
    }
