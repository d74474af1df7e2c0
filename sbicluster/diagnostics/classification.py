"""Cluster-versus-background classification metrics from P(cluster).

This module owns ROC curves and AUC, precision/recall at a threshold, the reliability
(calibration) diagram with expected calibration error, and the Brier score — implemented in numpy
(no scikit-learn at run time). It must not know about models, simulators or plotting.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["roc_curve", "roc_auc", "precision_recall", "reliability_diagram", "brier_score"]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(
            f"scores and labels must have the same length, got {s.shape} and {y.shape}"
        )
    return s, y


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic.

    Parameters
    ----------
    scores : numpy.ndarray
        Classifier output (higher = more cluster-like), shape (N,).
    labels : numpy.ndarray
        1 for cluster, 0 for background, shape (N,).

    Returns
    -------
    fpr, tpr, thresholds : numpy.ndarray
        False- and true-positive rates when calling "cluster" for score ≥ threshold; starts at
        (0, 0) with threshold +inf and ends at (1, 1).
    """
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    npos, nneg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / npos]
    fpr = np.r_[0.0, fps / nneg]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random cluster > that of a random background).

    Parameters
    ----------
    scores, labels : numpy.ndarray
        As in :func:`roc_curve`.

    Returns
    -------
    float
        AUC in [0, 1] (ties count one half); NaN if either class is absent.
    """
    s, y = _check(scores, labels)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # average ranks handle ties (Mann–Whitney U)
    u = ranks[y].sum() - npos * (npos + 1) / 2.0
    return float(u / (npos * nneg))


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    """Confusion counts, precision, recall, F1 and accuracy calling "cluster" for score ≥ threshold.

    Parameters
    ----------
    scores, labels : numpy.ndarray
        As in :func:`roc_curve`.
    threshold : float
        Decision threshold on the score (a probability for P(cluster)).

    Returns
    -------
    dict
        ``threshold, tp, fp, tn, fn, precision, recall, f1, accuracy`` (NaN where undefined).
    """
    s, y = _check(scores, labels)
    pred = s >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    tn, fn = int((~pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else float("nan")
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / max(s.size, 1),
    }


def reliability_diagram(prob: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> dict:
    """Reliability (calibration) diagram of predicted probabilities.

    Parameters
    ----------
    prob : numpy.ndarray
        Predicted P(cluster) in [0, 1], shape (N,).
    labels : numpy.ndarray
        1 for cluster, 0 for background, shape (N,).
    num_bins : int
        Equal-width probability bins on [0, 1].

    Returns
    -------
    dict
        ``edges`` (B+1,), ``count`` (B,), ``mean_predicted`` (B,), ``fraction_positive`` (B,),
        ``fraction_low`` / ``fraction_high`` (B,) (Wilson 95 % interval on the observed fraction),
        NaN in empty bins; ``ece``: count-weighted mean |observed − predicted| (expected
        calibration error).
    """
    p, y = _check(prob, labels)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(idx, weights=p, minlength=num_bins) / count
        k = np.bincount(idx, weights=y.astype(float), minlength=num_bins)
        frac = k / count
        z = 1.959964
        denom = 1 + z**2 / count
        centre = (frac + z**2 / (2 * count)) / denom
        half = z * np.sqrt(frac * (1 - frac) / count + z**2 / (4 * count**2)) / denom
    ok = count > 0
    ece = float(np.sum(count[ok] * np.abs(frac[ok] - mean_pred[ok])) / max(count.sum(), 1))
    return {
        "edges": edges,
        "count": count,
        "mean_predicted": mean_pred,
        "fraction_positive": frac,
        "fraction_low": centre - half,
        "fraction_high": centre + half,
        "ece": ece,
    }


def brier_score(prob: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of predicted probabilities against 0/1 labels (lower is better)."""
    p, y = _check(prob, labels)
    return float(np.mean((p - y) ** 2))
