"""The measurements of benchmarks/legus_deterministic.py: binned coverage and the grid fit."""

import numpy as np
import pytest
import torch

from benchmarks.legus_deterministic import _Subset, binned_coverage, grid_fit

NAMES = ["log_age", "log_mass", "log_rh", "av"]


def _gaussian_terms(rng, n, s, truth_scale):
    """Posteriors N(0, 1) in 4-D; truths N(0, truth_scale²)."""
    draws = rng.standard_normal((n, s, 4))
    theta = truth_scale * rng.standard_normal((n, 4))
    log_q = lambda x: -0.5 * (x**2).sum(-1)  # noqa: E731
    return (log_q(theta), log_q(draws), draws), theta


def test_binned_coverage_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    terms, theta = _gaussian_terms(rng, 1500, 200, 1.0)
    mass = rng.uniform(2.5, 6.5, 1500)
    theta_binned = theta.copy()
    theta_binned[:, 1] = mass  # only the binning reads it; the log_mass marginal is not checked
    ok = binned_coverage(terms, theta_binned, NAMES)
    assert ok["all"]["n"] == 1500 and sum(ok[k]["n"] for k in ok if k != "all") == 1500
    assert abs(ok["all"]["noise_floor"] - 1.96 * 0.5 / np.sqrt(1500)) < 1e-12
    assert ok["all"]["joint"]["max_abs_deviation"] < 0.05
    assert ok["all"]["av"]["max_abs_deviation"] < 0.05
    assert abs(ok["all"]["av"]["at_0.95"] - 0.95) < 0.025
    bad_terms, bad_theta = _gaussian_terms(rng, 1500, 200, 2.0)
    bad_theta[:, 1] = mass
    bad = binned_coverage(bad_terms, bad_theta, NAMES)
    assert bad["all"]["av"]["at_0.95"] < 0.75  # truths twice as wide: 95 % intervals hold ~68 %
    assert bad["all"]["joint"]["verdict"] == "overconfident"


@pytest.fixture(scope="module")
def populations():
    from simulators.population import StellarPopulation

    torch.set_num_threads(1)
    bands = (
        "WFC3_UVIS_F275W",
        "WFC3_UVIS_F336W",
        "WFC3_UVIS_F438W",
        "WFC3_UVIS_F555W",
        "WFC3_UVIS_F814W",
    )
    return StellarPopulation(bands), StellarPopulation(bands, extinction_law="CCM89")


def test_grid_fit_recovers_its_own_model_and_measures_the_law_shift(populations):
    base, ccm = populations
    ages = torch.tensor([6.8, 7.6, 8.5])
    av, mass = torch.ones(3), torch.full((3,), 4.0)
    cols = list(range(5))
    with torch.no_grad():
        own = base.integrated_magnitudes(ages, av, mass).numpy()
        mw = ccm.integrated_magnitudes(ages, av, mass).numpy()
    fit = grid_fit(_Subset(base, cols), own, log_age=ages.numpy())
    np.testing.assert_allclose(fit[:, 1], 4.0, atol=1e-3)
    np.testing.assert_allclose(fit[:, 2], 1.0, atol=1e-6)
    # CCM89 extinguishes F275W less than the default law: the default model sees less dust
    shifted = grid_fit(_Subset(base, cols), mw, log_age=ages.numpy())
    assert np.all((shifted[:, 2] - 1.0 > -0.2) & (shifted[:, 2] - 1.0 < -0.05))
