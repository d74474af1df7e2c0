"""The model-independent diagnostics pipeline and its report on a problem with a known posterior."""

import json

import numpy as np
import pytest

from sbicluster.diagnostics.report import write_report
from sbicluster.diagnostics.run import AUC_GOAL, DETECTION_VISIBILITY, evaluate
from simulators.priors import DEFAULT_PRIOR

N, S, D, NOISE = 1200, 300, 4, 0.3


def _problem(scale: float, seed: int = 0):
    """Conjugate Gaussian stand-in for a cluster posterior, plus a synthetic classifier."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((N, D))
    x = theta + NOISE * rng.standard_normal((N, D))
    v = NOISE**2 / (1 + NOISE**2)
    mean, sd = x / (1 + NOISE**2), scale * np.sqrt(v)
    samples = mean[:, None, :] + sd * rng.standard_normal((N, S, D))

    def logq(t):
        return -0.5 * (((t - mean[:, None, :]) / sd) ** 2).sum(-1)

    vis = 10 ** rng.uniform(-0.5, 2.0, N)
    # backgrounds score ~U(0, 0.3); clusters above the detection threshold score ~U(0.6, 1)
    m = 2 * N
    label = np.r_[np.ones(N, bool), np.zeros(m - N, bool)]
    vis_all = np.r_[vis, np.zeros(m - N)]
    p = np.where(
        label,
        np.where(vis_all >= DETECTION_VISIBILITY, rng.uniform(0.6, 1, m), rng.uniform(0, 1, m)),
        rng.uniform(0, 0.3, m),
    )
    return dict(
        theta=theta,
        samples=samples,
        visibility=vis,
        log_prob_true=logq(theta[:, None])[:, 0],
        log_prob_samples=logq(samples),
        p_cluster=p,
        is_cluster=label,
        visibility_all=vis_all,
    )


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_report_states_goals_and_writes_files(tmp_path, scale):
    data = _problem(scale)
    metrics, figures = evaluate(
        names=DEFAULT_PRIOR.names, labels=DEFAULT_PRIOR.labels, seed=1, **data
    )
    path = write_report(tmp_path, metrics, figures)
    text = path.read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "coverage",
        "sbc_ranks",
        "sbc_ecdf",
        "tarp",
        "truth_vs_median",
        "roc",
        "reliability",
    ):
        assert (tmp_path / f"{key}.png").stat().st_size > 5000
        assert f"{key}.png" in text
    assert saved["classification"]["auc_detectable"] == 1.0 >= AUC_GOAL  # separable by construction
    assert saved["classification"]["auc"] < 1.0  # faint clusters overlap the backgrounds
    if scale == 1.0:
        assert saved["goals"]["coverage"] and saved["goals"]["sbc"]
        assert saved["coverage"]["joint"]["verdict"] == "calibrated"
        assert abs(saved["tarp"]["atc"]) < 0.03
        assert "**missed**" not in text
    else:
        assert not saved["goals"]["coverage"] and not saved["goals"]["sbc"]
        assert saved["coverage"]["joint"]["verdict"] == "overconfident"
        assert all(c["verdict"] == "overconfident" for c in saved["coverage"]["marginal"].values())
        assert saved["tarp"]["atc"] < -0.05  # TARP sees the narrow posterior too
        assert "**missed**" in text
    # accuracy of the posterior mean estimator: robust σ ≈ posterior σ = NOISE/√(1+NOISE²)
    sig = saved["accuracy"]["overall"]["log_age"]["robust_sigma"]
    assert abs(sig - NOISE / np.sqrt(1 + NOISE**2)) < 0.02
    # median width vs visibility table sums to all clusters
    assert sum(saved["width_vs_visibility"]["count"]) == N
