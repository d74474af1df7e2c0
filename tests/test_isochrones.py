"""Tests of the shipped isochrone tables and their log-age interpolation (no lachesis-grids needed)."""

import numpy as np
import pytest

from simulators.errors import OutOfGridError, SimulatorError
from simulators.isochrones import IsochroneGrid, get_isochrone_grid


@pytest.fixture(scope="module")
def mist():
    return get_isochrone_grid("mist")


def test_shipped_nodes(mist):
    assert np.allclose(mist.age_values[[0, -1]], [6.0, 10.1])
    assert np.allclose(np.diff(mist.age_values), 0.05)
    assert {-1.0, -0.75, -0.5, 0.0, 0.25, 0.5} <= set(np.round(mist.feh_values, 2))
    assert 0.0 in get_isochrone_grid("parsec").feh_values


# the PARSEC late-phase warning is tested in test_late_phases.py
@pytest.mark.filterwarnings("ignore::simulators.errors.IncompletePhasesWarning")
@pytest.mark.parametrize("family", ["mist", "parsec"])
def test_monotone_in_initial_mass(family):
    grid = get_isochrone_grid(family)
    rng = np.random.default_rng(1)
    for la in rng.uniform(6.0, 10.1, 25):
        iso = grid.isochrone(float(la))
        assert np.all(np.diff(iso.initial_mass) > 0), la
        assert np.all(np.isfinite(iso.log_Teff)) and np.all(np.isfinite(iso.log_L))
        assert iso.max_live_mass == pytest.approx(iso.initial_mass[-1])


def test_interpolation_is_continuous_not_snapped(mist):
    """Between two nodes the turn-off mass moves smoothly: at the midpoint it lies strictly between the nodes' values."""

    def turnoff(iso):  # most massive main-sequence star
        return iso.initial_mass[np.round(iso.phase) == 0].max()

    a, b = mist.isochrone(8.0), mist.isochrone(8.05)
    ts = [turnoff(mist.isochrone(x)) for x in (8.0, 8.01, 8.025, 8.04, 8.05)]
    assert turnoff(a) > ts[2] > turnoff(b)
    assert np.all(np.diff(ts) < 0)  # monotone decline with age
    # the midpoint is close to the log-age-linear interpolation of the node values (not to either node)
    assert ts[2] == pytest.approx(0.5 * (turnoff(a) + turnoff(b)), rel=0.01)
    # node values are reproduced exactly
    assert np.array_equal(mist.isochrone(8.0).initial_mass, a.initial_mass)


def test_max_live_mass_decreases_with_age(mist):
    ages = np.arange(6.6, 10.1001, 0.05)
    m = np.array([mist.isochrone(float(a)).max_live_mass for a in ages])
    assert np.all(np.diff(m) <= 1e-9)
    # MIST solar turn-off/live limits: ~5 Msun at 100 Myr, ~2.3 at 1 Gyr, ~1.05 at 10 Gyr
    assert 4.5 < mist.isochrone(8.0).max_live_mass < 6.0
    assert 2.0 < mist.isochrone(9.0).max_live_mass < 2.6
    assert 0.95 < mist.isochrone(10.0).max_live_mass < 1.15


def test_sun_on_solar_isochrone(mist):
    """A 1 Msun star at 4.57 Gyr: L within 0.05 dex of L_sun and Teff within 100 K of 5772 K (MIST is solar-calibrated)."""
    iso = mist.isochrone(np.log10(4.57e9), feh=0.0)
    lt, ll = (
        np.interp(1.0, iso.initial_mass, iso.log_Teff),
        np.interp(1.0, iso.initial_mass, iso.log_L),
    )
    assert abs(ll) < 0.05
    assert abs(10**lt - 5772) < 100


def test_remnants_removed(mist):
    iso = mist.isochrone(9.5)
    assert set(np.unique(np.round(iso.phase)).astype(int)) <= {-1, 0, 2, 3, 4, 5, 9}
    assert iso.log_g.max() < 6.5  # no white dwarfs


def test_errors_name_valid_range(mist):
    with pytest.raises(OutOfGridError, match="6.0"):
        mist.isochrone(5.5)
    with pytest.raises(OutOfGridError, match="10.1"):
        mist.isochrone(10.2)
    with pytest.raises(OutOfGridError, match="shipped values"):
        mist.isochrone(8.0, feh=0.33)
    with pytest.raises(SimulatorError, match="supported"):
        IsochroneGrid("basti-unknown")
