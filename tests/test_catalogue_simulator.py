"""The catalogue simulator: integrated stochastic photometry, the observation encoding, missing
bands, determinism and its card."""

import math

import pytest
import torch

from simulators.base import Simulator
from simulators.catalogue import LEGUS_PRIOR, CatalogueSimulator
from simulators.errors import SimulatorError
from simulators.registry import is_catalogue_preset, simulator_for_preset, simulator_from_card


@pytest.fixture(scope="module")
def sim():
    torch.set_num_threads(1)
    return simulator_for_preset("legus-uvis")


def theta_of(log_age, log_mass, av, n):
    t = torch.empty(n, 4)
    t[:, LEGUS_PRIOR.index("log_age")] = log_age
    t[:, LEGUS_PRIOR.index("log_mass")] = log_mass
    t[:, LEGUS_PRIOR.index("log_rh")] = 0.3
    t[:, LEGUS_PRIOR.index("av")] = av
    return t


def test_presets_and_contract(sim):
    assert is_catalogue_preset("legus-uvis") and is_catalogue_preset("legus-acs-uvis")
    assert not is_catalogue_preset("m83-wfc3")
    assert isinstance(sim, Simulator)
    assert sim.observation_shape == (7, 4)
    batch = sim.simulate(64, torch.Generator().manual_seed(3))
    assert batch.images.shape == (64, 7, 4) and batch.images.dtype == torch.float32
    again = sim.simulate(64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(batch.images, again.images)
    rebuilt = simulator_from_card(sim.card())
    assert isinstance(rebuilt, CatalogueSimulator)
    torch.testing.assert_close(
        rebuilt.simulate(64, torch.Generator().manual_seed(3)).images, batch.images
    )


def test_integrated_magnitude_is_the_sum_of_star_fluxes(sim):
    theta = theta_of(7.5, 4.0, 0.5, 8)
    sidx, mags, smooth = sim.draw_stars(theta, torch.Generator().manual_seed(5))
    total = sim.integrated_magnitudes(theta, torch.Generator().manual_seed(5))
    for k in range(8):
        flux = smooth[k] + (10 ** (-0.4 * mags[sidx == k].double())).nan_to_num(0.0).sum(0)
        torch.testing.assert_close(total[k].double(), -2.5 * torch.log10(flux), atol=1e-4, rtol=0)
    assert len(sidx) > 0  # a 1e4 Msun, 30 Myr cluster has individually drawn stars


def test_mean_light_is_the_imf_expected_light(sim):
    """Averaged over stochastic draws, the flux equals the IMF-expected (smooth) population's."""
    n = 400
    theta = theta_of(8.0, 4.0, 0.0, n)
    mags = sim.integrated_magnitudes(theta, torch.Generator().manual_seed(11)).double()
    mean_flux = (10 ** (-0.4 * mags)).mean(0)
    smooth = sim.population.integrated_magnitudes(
        torch.tensor([8.0]), torch.tensor([0.0]), torch.tensor([4.0])
    )[0].double()
    err = (-2.5 * torch.log10(mean_flux) - smooth).abs()
    # standard error of the mean of n stochastic 1e4 Msun clusters is well below 0.05 mag here
    assert float(err.max()) < 0.05, err


def test_more_massive_clusters_are_brighter(sim):
    g = torch.Generator().manual_seed(2)
    v = sim.bands.index("WFC3_UVIS_F555W")
    medians = [
        float(sim.integrated_magnitudes(theta_of(7.0, lm, 0.3, 64), g)[:, v].median())
        for lm in (3.0, 4.0, 5.0)
    ]
    # 1 dex more mass is 2.5 mag brighter for the IMF-expected light; stochastic medians are close
    assert medians[0] > medians[1] > medians[2]
    assert medians[1] - medians[2] == pytest.approx(2.5, abs=0.3)


def test_observations_are_absolute_magnitudes_with_missing_bands(sim):
    n = 1500
    batch = sim.simulate(n, torch.Generator().manual_seed(7))
    x, nuis = batch.images, batch.nuisances
    measured, nondet = x[..., 2].bool(), x[..., 3].bool()
    available = measured | nondet
    assert not bool((measured & nondet).any())
    # missing bands are all-zero rows; F555W (reference band) is always observed
    assert bool((x[~available] == 0).all())
    assert bool(available[:, sim.bands.index("WFC3_UVIS_F555W")].all())
    # band sets: F438W only in the UVIS layout, F435W only in the ACS one, never both
    b438, b435 = sim.bands.index("WFC3_UVIS_F438W"), sim.bands.index("ACS_WFC_F435W")
    assert not bool((available[:, b438] & available[:, b435]).any())
    assert float(nuis["layout"].mean()) == pytest.approx(0.5, abs=0.05)
    # UV pair outside the footprint about uv_missing_probability of the time
    uv = sim.bands.index("WFC3_UVIS_F275W")
    assert 1 - float(available[:, uv].float().mean()) == pytest.approx(0.3, abs=0.04)
    # measured values scatter about the true absolute magnitudes by the reported errors
    sel = measured & (x[..., 1] < math.log10(0.1))
    pull = (x[..., 0] - nuis["abs_mag_true"])[sel] / 10 ** x[..., 1][sel]
    assert float(pull.median()) == pytest.approx(0.0, abs=0.05)
    assert float(pull.std()) == pytest.approx(1.0, abs=0.2)
    # not-detected bands carry the absolute nominal limit, m_lim - mu
    lim = sim.nominal_limit[None, :] - nuis["distance_modulus"][:, None]
    torch.testing.assert_close(x[..., 0][nondet], lim.expand_as(nondet)[nondet])


def test_acs_preset_has_only_the_acs_band_set():
    acs = simulator_for_preset("legus-acs-uvis")
    x = acs.simulate(200, torch.Generator().manual_seed(1)).images
    avail = (x[..., 2] + x[..., 3]) > 0
    assert not bool(avail[:, acs.bands.index("WFC3_UVIS_F438W")].any())
    assert bool(avail[:, acs.bands.index("ACS_WFC_F435W")].float().mean() > 0.9)


@pytest.fixture(scope="module")
def det_sim(sim):
    return CatalogueSimulator("legus-uvis", stochastic_imf=False, population=sim.population)


@pytest.mark.parametrize("log_age", [6.6, 7.5])
def test_deterministic_photometry_is_the_mean_at_high_mass(sim, det_sim, log_age):
    """At 10^5.5 Msun the IMF is well sampled: stochastic magnitudes average to the
    IMF-expected ones (within 0.05 mag in every band) and scatter by ≤ 0.2 mag."""
    theta = theta_of(log_age, 5.5, 0.5, 100)
    stoch = sim.integrated_magnitudes(theta, torch.Generator().manual_seed(21)).double()
    det = det_sim.integrated_magnitudes(theta, torch.Generator().manual_seed(21)).double()
    assert torch.all(det == det[0])  # no draw enters the deterministic light
    assert (stoch.mean(0) - det[0]).abs().max() < 0.05
    assert stoch.std(0).max() < 0.2


def test_deterministic_scatter_is_only_photometric_error_at_low_mass(sim, det_sim):
    """At 10^3 Msun and 10 Myr a few massive stars dominate: the stochastic F555W scatter is
    several times the deterministic one, which is the reported photometric error alone."""
    n = 300
    theta = theta_of(7.0, 3.0, 0.5, n)
    j = sim.bands.index("WFC3_UVIS_F555W")
    spread = {}
    for name, s in (("stochastic", sim), ("deterministic", det_sim)):
        batch = s.simulate(n, torch.Generator().manual_seed(4), theta=theta)
        measured = batch.images[:, j, 2] > 0
        assert measured.float().mean() > 0.9
        spread[name] = batch.images[measured, j, 0].std().item()
        if name == "deterministic":
            true = batch.nuisances["abs_mag_true"][:, j]
            assert torch.all(true == true[0])
            pull = (batch.images[measured, j, 0] - true[measured]) / 10 ** batch.images[
                measured, j, 1
            ]
            assert 0.7 < pull.std().item() < 1.4  # the error model's scatter, nothing more
    assert spread["stochastic"] > 3 * spread["deterministic"]


def test_deterministic_option_is_in_the_card(det_sim):
    card = det_sim.card()
    assert card["options"]["stochastic_imf"] is False
    rebuilt = simulator_from_card(card)
    assert rebuilt.options.stochastic_imf is False
    torch.testing.assert_close(
        rebuilt.simulate(16, torch.Generator().manual_seed(8)).images,
        det_sim.simulate(16, torch.Generator().manual_seed(8)).images,
    )
    old = {**card, "options": {k: v for k, v in card["options"].items() if k != "stochastic_imf"}}
    assert simulator_from_card(old).options.stochastic_imf is True  # earlier cards: stochastic
    with pytest.raises(SimulatorError):
        CatalogueSimulator("legus-uvis", stochastic_imf="no")
