"""StellarPopulation: star magnitudes, remnants, extinction, smooth light and SSP sanity (shipped tables only)."""

import math

import pytest
import torch

from simulators.errors import OutOfGridError, UnknownBandError
from simulators.population import StellarPopulation

BANDS = ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")


@pytest.fixture(scope="module")
def pop():
    return StellarPopulation(BANDS, log_age_range=(6.9, 10.1))


def _stratified_masses(pop, n_clusters, k=200_000):
    """Deterministic IMF 'sample' (u at the centres of k equal-probability strata) for integration checks."""
    u = ((torch.arange(k, dtype=torch.float64) + 0.5) / k).expand(n_clusters, k)
    lo = torch.full((n_clusters, 1), pop.imf.m_min)
    hi = torch.full((n_clusters, 1), pop.imf.m_max)
    return pop.imf.sample(u, lo, hi)


def test_shapes_padding_and_remnants_are_dark(pop):
    la = torch.tensor([7.0, 8.0, 9.5])
    mmax = pop.max_live_mass(la)
    assert bool((mmax[:-1] > mmax[1:]).all())  # turn-off mass decreases with age
    assert 15 < float(mmax[0]) < 25 and 1.0 < float(mmax[2]) < 2.0
    m = torch.stack([torch.tensor([0.0, -1.0, 0.5, float(x) * 1.01, float(x) * 0.999]) for x in mmax])
    mag = pop.star_magnitudes(la, m, torch.zeros(3))
    assert mag.shape == (3, 5, 3)
    assert bool(torch.isinf(mag[:, :2]).all()) and bool(torch.isinf(mag[:, 3]).all())  # padding, remnants
    assert bool(torch.isfinite(mag[:, [2, 4]]).all())
    assert bool((mag[:, 4] < mag[:, 2]).all())  # an evolved star near the top is far brighter than 0.5 Msun


def test_oldest_ages_have_no_remnant_rows(pop):
    la = torch.tensor([10.0, 10.05, 10.1])
    mmax = pop.max_live_mass(la)
    assert bool((mmax < 1.1).all()), mmax  # MIST's white-dwarf row (phase -9) must not count as live
    col = pop.integrated_magnitudes(la, torch.zeros(3), torch.zeros(3))
    c = col[:, 0] - col[:, 2]
    assert float((c[1:] - c[:-1]).abs().max()) < 0.2


def test_main_sequence_brightens_monotonically_with_mass(pop):
    la = torch.tensor([9.0])
    mto = float(pop.max_live_mass(la))
    m = torch.linspace(0.15, 0.8 * mto, 300)[None]
    mag = pop.star_magnitudes(la, m, torch.zeros(1))[0]
    assert bool((mag[1:] <= mag[:-1] + 1e-4).all())


def test_extinction_is_positive_wavelength_ordered_and_near_ccm(pop):
    la = torch.tensor([8.0, 8.0])
    m = torch.tensor([[1.0, 3.0], [1.0, 3.0]])
    mag = pop.star_magnitudes(la, m, torch.tensor([0.0, 1.0]))
    a = mag[1] - mag[0]  # (2 stars, 3 bands) extinction at A_V = 1
    assert bool((a[:, 0] > a[:, 1]).all() and (a[:, 1] > a[:, 2]).all() and (a[:, 2] > 0).all())
    # Cardelli et al. (1989), R_V = 3.1: A_F814W/A_V ≈ 0.6, A_F336W/A_V ≈ 1.6 (SED dependent by a few %)
    assert a[:, 2].tolist() == pytest.approx([0.6, 0.6], abs=0.06)
    assert a[:, 0].tolist() == pytest.approx([1.6, 1.6], abs=0.12)
    assert pop.extinction_fit_error < 0.05


def test_solar_mass_star_at_solar_age_has_sun_like_mv():
    p = StellarPopulation(["Bessell_V"], log_age_range=(9.6, 9.7))
    mv = float(p.star_magnitudes(torch.tensor([9.66]), torch.tensor([[1.0]]), torch.zeros(1)))
    assert mv == pytest.approx(4.81, abs=0.2)  # MIST 1 Msun at 4.6 Gyr vs the Sun (M_V = 4.81)


def test_smooth_flux_equals_stratified_star_sum(pop):
    la = torch.tensor([7.0, 8.0, 9.0, 10.0])
    av = torch.tensor([0.0, 1.0, 0.0, 2.5])
    m = _stratified_masses(pop, 4)
    mag = pop.star_magnitudes(la, m, av).double()
    flux = torch.where(torch.isfinite(mag), 10 ** (-0.4 * mag), torch.zeros_like(mag))
    mass = m.double().sum(1, keepdim=True)
    # main-sequence light (below every turn-off here) must match closely; the totals include the
    # nearly degenerate late phases (TP-AGB masses differ by ~1e-5 Msun) that even 2e5 strata sample coarsely
    for thr, rtol in ((0.8, 0.005), (3.0, 0.03), (math.inf, 0.03)):
        sel = (m < thr)[..., None]
        star_sum = (flux * sel).sum(1) / mass
        smooth = pop.unresolved_flux_per_mass(la, av, torch.full((4,), thr)).double()
        assert torch.allclose(star_sum, smooth, rtol=rtol), (thr, star_sum / smooth)


def test_smooth_flux_limits_and_monotonicity(pop):
    la = torch.full((6,), 8.5)
    av = torch.zeros(6)
    thr = torch.tensor([0.05, 0.5, 1.0, 2.0, 3.0, 1e3])
    f = pop.unresolved_flux_per_mass(la, av, thr)
    assert bool((f[0] == 0).all())
    assert bool((f[1:] >= f[:-1]).all())
    mmax = pop.max_live_mass(la[:1])
    f_top = pop.unresolved_flux_per_mass(la[:1], av[:1], mmax * 1.0001)
    assert torch.allclose(f_top, f[-1:], rtol=1e-5)
    # integrated magnitudes scale with mass: 10x the mass is 2.5 mag brighter
    m1 = pop.integrated_magnitudes(la[:2], av[:2], torch.tensor([3.0, 4.0]))
    assert torch.allclose(m1[0] - m1[1], torch.full((3,), 2.5), atol=1e-4)


def test_ssp_colour_reddens_after_the_red_supergiant_phase(pop):
    la = torch.arange(7.0, 9.0001, 0.05)
    mag = pop.integrated_magnitudes(la, torch.zeros_like(la), torch.zeros_like(la))
    uv_i = mag[:, 0] - mag[:, 2]
    b_i = mag[:, 1] - mag[:, 2]
    post = la >= 7.6
    steps = uv_i[post][1:] - uv_i[post][:-1]
    assert bool((steps > -0.05).all()), steps  # monotone reddening to within the MIST blue-loop wiggle
    assert float(uv_i[-1] - uv_i[post][0]) > 1.5
    # red supergiants (10-15 Myr) make the integrated light redder in B-I than at 20-40 Myr
    rsg = (la >= 7.0) & (la <= 7.11)
    blue = (la >= 7.3) & (la <= 7.6)
    assert float(b_i[rsg].min()) > float(b_i[blue].max()) + 0.2


def test_mass_to_light_rises_with_age(pop):
    la = torch.arange(7.6, 10.1, 0.1)
    m814 = pop.integrated_magnitudes(la, torch.zeros_like(la), torch.zeros_like(la))[:, 2]
    ml = 10 ** (0.4 * (m814 - 4.15))  # M/L in solar F814W units (M_F814W,sun ≈ 4.15)
    assert float(ml[-1] / ml[0]) > 10
    assert bool((ml[1:] > 0.97 * ml[:-1]).all())


def test_chabrier_changes_the_light_per_mass():
    k = StellarPopulation(["WFC3_UVIS_F814W"], log_age_range=(9.0, 9.1))
    c = StellarPopulation(["WFC3_UVIS_F814W"], log_age_range=(9.0, 9.1), imf="chabrier")
    la, av = torch.tensor([9.0]), torch.zeros(1)
    inf = torch.tensor([math.inf])
    ratio = float(c.unresolved_flux_per_mass(la, av, inf) / k.unresolved_flux_per_mass(la, av, inf))
    assert 1.0 < ratio < 1.3  # Chabrier has fewer low-mass stars per unit mass -> more light per mass


def test_errors_name_the_valid_range():
    with pytest.raises(UnknownBandError, match="WFC3_UVIS_F336W"):
        StellarPopulation(["F999W"])
    with pytest.raises(OutOfGridError, match="6.0"):
        StellarPopulation(BANDS, log_age_range=(5.0, 7.0))
    p = StellarPopulation(["WFC3_UVIS_F814W"], log_age_range=(8.0, 8.2))
    with pytest.raises(OutOfGridError, match="log age"):
        p.star_magnitudes(torch.tensor([9.0]), torch.ones(1, 1), torch.zeros(1))
    with pytest.raises(OutOfGridError, match="A_V"):
        p.star_magnitudes(torch.tensor([8.1]), torch.ones(1, 1), torch.tensor([7.0]))


def test_to_device_roundtrip_and_table_id(pop):
    p = pop.to("cpu")
    assert p is pop and "mist" in p.table_id and "sedfit" in p.table_id
