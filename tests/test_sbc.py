"""SBC ranks and uniformity tests on a conjugate-Gaussian problem with a known exact posterior."""

import numpy as np

from sbicluster.diagnostics.sbc import rank_ecdf_difference, run_sbc_checks, sbc_ranks

N, S, D, NOISE = 1000, 200, 2, 0.5


def _problem(scale=1.0, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((N, D))
    x = theta + NOISE * rng.standard_normal((N, D))
    mean = x / (1 + NOISE**2) + shift
    sd = scale * NOISE / np.sqrt(1 + NOISE**2)
    return theta, mean[:, None, :] + sd * rng.standard_normal((N, S, D))


def test_ranks_count_draws_below_truth():
    samples = np.arange(10.0).reshape(1, 10, 1)
    assert sbc_ranks(samples, np.array([[-1.0]]))[0, 0] == 0
    assert sbc_ranks(samples, np.array([[4.5]]))[0, 0] == 5
    assert sbc_ranks(samples, np.array([[99.0]]))[0, 0] == 10


def test_exact_posterior_passes_uniformity():
    theta, samples = _problem()
    res = run_sbc_checks(samples, theta, names=("a", "b"))
    assert res.ranks.min() >= 0 and res.ranks.max() <= S
    assert np.all(res.ks_pvalue > 0.01) and np.all(res.chi2_pvalue > 0.01)
    assert not res.rejected(0.01).any()
    ecdf = rank_ecdf_difference(res.ranks, S)
    inside = (ecdf["difference"] >= ecdf["band_low"] - 1e-9) & (
        ecdf["difference"] <= ecdf["band_high"] + 1e-9
    )
    assert inside.all()


def test_biased_and_narrow_posteriors_fail_uniformity():
    theta, samples = _problem(shift=0.3)
    biased = run_sbc_checks(samples, theta)
    assert biased.rejected(0.01).all()
    # a positive shift puts the truth low among the draws: mean normalised rank well below 1/2
    assert np.all(biased.ranks.mean(0) / S < 0.4)
    theta, samples = _problem(scale=0.5)
    narrow = run_sbc_checks(samples, theta)
    assert narrow.rejected(0.01).all()
    # ∪-shaped: extreme ranks are over-represented
    extreme = ((narrow.ranks < 0.05 * S) | (narrow.ranks > 0.95 * S)).mean()
    assert extreme > 0.2
