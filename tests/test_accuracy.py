"""Accuracy metrics against analytic values."""

import math

import numpy as np

from sbicluster.diagnostics.accuracy import (
    binned_by,
    point_accuracy,
    posterior_width,
    reliable_range_mask,
    robust_sigma,
)

NAMES = ("log_age", "log_mass", "log_rh", "av")


def test_robust_sigma_of_gaussian_and_outliers():
    rng = np.random.default_rng(0)
    x = 2.0 * rng.standard_normal(200000)
    assert abs(robust_sigma(x) - 2.0) < 0.02
    x[:5000] = 1e6  # 2.5 % gross outliers barely move the robust σ, but ruin the RMS
    assert abs(robust_sigma(x) - 2.0) < 0.1
    assert np.std(x) > 1e4


def test_point_accuracy_bias_scatter_rmse():
    rng = np.random.default_rng(1)
    theta = rng.random((50000, 4))
    est = (
        theta
        + np.array([0.1, 0.0, -0.2, 0.0])
        + np.array([0.3, 0.1, 0.05, 0.0]) * rng.standard_normal((50000, 4))
    )
    acc = point_accuracy(est, theta, NAMES)
    assert acc["n"] == 50000
    assert abs(acc["log_age"]["bias"] - 0.1) < 0.01 and abs(acc["log_rh"]["bias"] + 0.2) < 0.01
    assert abs(acc["log_age"]["robust_sigma"] - 0.3) < 0.01
    assert abs(acc["log_age"]["rmse"] - math.hypot(0.1, 0.3)) < 0.01
    assert acc["av"]["rmse"] == 0.0
    empty = point_accuracy(est, theta, NAMES, mask=np.zeros(50000, bool))
    assert empty["n"] == 0 and empty["av"]["bias"] is None


def test_reliable_range_mask_follows_paper_limits():
    theta = np.array(
        [
            [7.5, 4.0, 0.5, 1.0],  # inside
            [8.5, 4.0, 0.5, 1.0],  # too old (316 Myr)
            [7.0, 3.3, 0.5, 1.0],  # 2000 M☉: too light
            [7.0, 4.0, math.log10(0.8), 1.0],  # r_h 0.8 pc: too small
            [7.0, 5.4, 0.9, 2.9],  # inside (2.5e5 M☉, 7.9 pc)
        ]
    )
    assert reliable_range_mask(theta, NAMES).tolist() == [True, False, False, False, True]


def test_posterior_width_and_binning():
    rng = np.random.default_rng(2)
    sd = np.array([0.1, 0.5])
    samples = sd[:, None, None] * rng.standard_normal((2, 40000, 1))
    np.testing.assert_allclose(posterior_width(samples)[:, 0], sd, rtol=0.03)
    out = binned_by(np.array([1.0, 2.0, 3.0, 10.0]), np.array([0.5, 1.5, 1.7, 5.0]), [0, 1, 2, 3])
    assert out["count"].tolist() == [1, 2, 0]
    assert out["value"][1] == 2.5 and np.isnan(out["value"][2])
