"""Classification metrics against analytic values."""

import numpy as np
from scipy import stats

from sbicluster.diagnostics.classification import (
    brier_score,
    precision_recall,
    reliability_diagram,
    roc_auc,
    roc_curve,
)


def test_auc_of_two_gaussians_matches_analytic():
    # scores N(d, 1) vs N(0, 1): AUC = Φ(d / √2)
    rng = np.random.default_rng(0)
    d, n = 1.0, 20000
    s = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
    y = np.r_[np.ones(n), np.zeros(n)]
    auc = roc_auc(s, y)
    assert abs(auc - stats.norm.cdf(d / np.sqrt(2))) < 0.01
    fpr, tpr, _ = roc_curve(s, y)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert abs(np.trapezoid(tpr, fpr) - auc) < 1e-6  # trapezoid area = Mann–Whitney AUC


def test_auc_extremes_and_ties():
    y = np.array([1, 1, 0, 0])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), y) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), y) == 0.0
    assert roc_auc(np.full(4, 0.5), y) == 0.5


def test_precision_recall_counts():
    pr = precision_recall(np.array([0.9, 0.6, 0.4, 0.7, 0.1]), np.array([1, 1, 1, 0, 0]), 0.5)
    assert (pr["tp"], pr["fp"], pr["tn"], pr["fn"]) == (2, 1, 1, 1)
    assert abs(pr["precision"] - 2 / 3) < 1e-12 and abs(pr["recall"] - 2 / 3) < 1e-12


def test_reliability_of_calibrated_and_overconfident_probabilities():
    rng = np.random.default_rng(1)
    p = rng.random(50000)
    y = rng.random(50000) < p  # calibrated by construction
    rel = reliability_diagram(p, y, 10)
    assert rel["ece"] < 0.02
    assert np.all(np.abs(rel["fraction_positive"] - rel["mean_predicted"]) < 0.03)
    # push probabilities to the extremes: same labels, badly calibrated
    q = np.clip(0.5 + 3 * (p - 0.5), 0, 1)
    assert reliability_diagram(q, y, 10)["ece"] > 0.1
    assert brier_score(q, y) > brier_score(p, y)
