"""An exact posterior that marginalises an unidentified nuisance: calibrated over the nuisance
prior, over-covering at its middle and under-covering at its edges."""

import numpy as np
import pytest

from sbicluster.diagnostics.coverage import (
    CREDIBILITY_LEVELS,
    coverage_from_credibility,
    marginal_credibility,
)
from sbicluster.diagnostics.nuisance_limits import (
    fixed_nuisance_coverage,
    fixed_nuisance_max_deviation,
)


def test_a_known_nuisance_is_exactly_calibrated():
    cov = fixed_nuisance_coverage(0.0, 0.7)
    assert np.allclose(cov, CREDIBILITY_LEVELS, atol=1e-9)


@pytest.mark.parametrize("spread", [0.5, 1.0, 2.0, 4.0])
def test_calibrated_on_average_over_the_prior(spread):
    """Averaged over fixed values spread uniformly in the prior, coverage equals the level."""
    positions = (np.arange(2000) + 0.5) / 1000 - 1  # midpoints of a uniform grid on [-1, 1]
    mean = fixed_nuisance_coverage(spread, positions).mean(axis=0)
    assert np.allclose(mean, CREDIBILITY_LEVELS, atol=1e-5)


def test_over_covers_in_the_middle_and_under_covers_at_the_edges():
    for spread in (1.0, 2.0):
        middle = fixed_nuisance_coverage(spread, 0.0) - CREDIBILITY_LEVELS
        edge = fixed_nuisance_coverage(spread, 1.0) - CREDIBILITY_LEVELS
        assert (middle > 0).all() and (edge < 0).all()
        assert np.allclose(edge, fixed_nuisance_coverage(spread, -1.0) - CREDIBILITY_LEVELS)
    # the errors grow with the spread; a shift of one posterior width already misses 0.03 at an
    # edge (0.038) while the middle stays within it (0.020)
    edges = [fixed_nuisance_max_deviation(w, 1.0) for w in (0.5, 1.0, 1.5, 2.0)]
    assert edges == sorted(edges)
    assert fixed_nuisance_max_deviation(1.0, 1.0) == pytest.approx(0.038, abs=0.002)
    assert fixed_nuisance_max_deviation(1.0, 0.0) == pytest.approx(0.020, abs=0.002)


def test_matches_a_simulation_ranked_by_the_coverage_code():
    """Draws from the exact posterior, ranked by the kernel-density credibility the benchmarks
    use, give the predicted coverage at an edge of the prior (binomial noise on 4,000 objects)."""
    rng = np.random.default_rng(11)
    n, s, spread, position = 4000, 400, 2.0, 1.0
    theta = rng.uniform(-5, 5, n)
    x = theta + position * spread / 2 + rng.standard_normal(n)
    offsets = rng.uniform(-spread / 2, spread / 2, (n, s)) + rng.standard_normal((n, s))
    draws = (x[:, None] - offsets)[:, :, None]
    cred = marginal_credibility(draws, theta[:, None])[:, 0]
    empirical = coverage_from_credibility(cred).empirical
    predicted = fixed_nuisance_coverage(spread, position)
    sd = np.sqrt(predicted * (1 - predicted) / n)
    assert np.all(np.abs(empirical - predicted) < 4 * sd + 0.005)
    assert (empirical < CREDIBILITY_LEVELS).mean() > 0.9  # under-covered, as predicted


def test_refuses_meaningless_arguments():
    with pytest.raises(ValueError, match="spread"):
        fixed_nuisance_coverage(-1.0, 0.0)
    with pytest.raises(ValueError, match="position"):
        fixed_nuisance_coverage(1.0, 1.5)
    with pytest.raises(ValueError, match="levels"):
        fixed_nuisance_coverage(1.0, 0.0, [0.5, 1.0])
