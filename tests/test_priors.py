import math

import pytest
import torch

from simulators import DEFAULT_PRIOR, ClusterPrior, SimulatorError


def test_default_prior_bounds_are_the_documented_physical_ranges():
    low, high = DEFAULT_PRIOR.low(), DEFAULT_PRIOR.high()
    assert DEFAULT_PRIOR.names == ("log_age", "log_mass", "log_rh", "av")
    assert torch.allclose(low, torch.tensor([6.5, 3.0, math.log10(0.5), 0.0]))
    assert torch.allclose(high, torch.tensor([10.0, 5.5, 1.0, 3.0]))


def test_samples_are_uniform_inside_bounds_and_reproducible():
    theta = DEFAULT_PRIOR.sample(20000, torch.Generator().manual_seed(1))
    again = DEFAULT_PRIOR.sample(20000, torch.Generator().manual_seed(1))
    assert torch.equal(theta, again)
    assert DEFAULT_PRIOR.contains(theta).all()
    # the mean of a uniform is the mid-point; standard error ≈ width / sqrt(12 n)
    mid = 0.5 * (DEFAULT_PRIOR.low() + DEFAULT_PRIOR.high())
    width = DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()
    assert torch.all((theta.mean(0) - mid).abs() < 5 * width / math.sqrt(12 * 20000))


def test_round_trip_and_bad_bounds():
    assert ClusterPrior.from_dict(DEFAULT_PRIOR.to_dict()) == DEFAULT_PRIOR
    narrow = DEFAULT_PRIOR.with_bounds(av=(0.0, 1.0))
    assert narrow.high()[3] == 1.0
    with pytest.raises(SimulatorError, match="must exceed"):
        DEFAULT_PRIOR.with_bounds(av=(1.0, 1.0))
    with pytest.raises(SimulatorError, match="unknown parameter"):
        DEFAULT_PRIOR.with_bounds(metallicity=(0, 1))


def test_index_parameter_and_units_are_read_from_the_parameters():
    from astropy import units as u

    assert DEFAULT_PRIOR.dim == len(DEFAULT_PRIOR.parameters) == 4
    for j, name in enumerate(DEFAULT_PRIOR.names):
        assert DEFAULT_PRIOR.index(name) == j
        assert DEFAULT_PRIOR.parameter(name) is DEFAULT_PRIOR.parameters[j]
    assert DEFAULT_PRIOR.astropy_units == (u.dex(u.yr), u.dex(u.solMass), u.dex(u.pc), u.mag)
    assert DEFAULT_PRIOR.astropy_units == tuple(u.Unit(s) for s in DEFAULT_PRIOR.units)
    with pytest.raises(SimulatorError, match="unknown parameter 'metallicity'"):
        DEFAULT_PRIOR.index("metallicity")
