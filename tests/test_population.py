"""StellarPopulation: star magnitudes, remnants, extinction, smooth light and SSP sanity (shipped tables only)."""

import math

import numpy as np
import pytest
import torch

from simulators.errors import OutOfGridError, UnknownBandError
from simulators.imf import PiecewisePowerLawIMF
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
    m = torch.stack(
        [torch.tensor([0.0, -1.0, 0.5, float(x) * 1.01, float(x) * 0.999]) for x in mmax]
    )
    mag = pop.star_magnitudes(la, m, torch.zeros(3))
    assert mag.shape == (3, 5, 3)
    assert bool(torch.isinf(mag[:, :2]).all()) and bool(
        torch.isinf(mag[:, 3]).all()
    )  # padding, remnants
    assert bool(torch.isfinite(mag[:, [2, 4]]).all())
    assert bool(
        (mag[:, 4] < mag[:, 2]).all()
    )  # an evolved star near the top is far brighter than 0.5 Msun


def test_flat_star_list_matches_per_row_interpolation_of_the_tables(pop):
    """Stars of many ages looked up in one flat list get the magnitudes of a plain per-age linear
    interpolation in initial mass (numpy.interp over that age's live isochrone rows); stars above
    the turn-off and non-positive masses are dark."""
    g = torch.Generator().manual_seed(3)
    la = 6.9 + 3.2 * torch.rand(400, generator=g)
    m = 0.08 + 30.0 * torch.rand(400, generator=g) ** 3  # some above the turn-off: remnants
    m[:5] = torch.tensor([0.0, -1.0, -3.0, 1e-6, 0.5])
    mag = pop.star_magnitudes_flat(la, m, torch.zeros(400)).double().numpy()
    ages = pop._age_index(la).numpy()
    rows, table = pop._mass.double().numpy(), pop._mags.double().numpy()
    n_rows = rows.shape[1]
    for s in range(400):
        row = rows[ages[s]]
        live = np.isfinite(row)
        mags_row = table[ages[s] * n_rows : (ages[s] + 1) * n_rows][live]
        dark = m[s] <= 0 or m[s] > pop.max_live_mass(la[s : s + 1])[0] * (1 + 1e-6)
        if dark:
            assert np.isinf(mag[s]).all(), s
            continue
        expect = [np.interp(float(m[s]), row[live], mags_row[:, c]) for c in range(3)]
        np.testing.assert_allclose(mag[s], expect, atol=2e-5, err_msg=f"star {s}")
    assert np.isinf(mag[:3]).all() and np.isfinite(mag[3:5]).all()
    # the padded (B, K) form is the same look-up
    padded = pop.star_magnitudes(la[:40], m[:400].reshape(40, 10), torch.zeros(40))
    assert torch.equal(padded[:, 0], pop.star_magnitudes_flat(la[:40], m[::10], torch.zeros(40)))


def test_oldest_ages_have_no_remnant_rows(pop):
    la = torch.tensor([10.0, 10.05, 10.1])
    mmax = pop.max_live_mass(la)
    assert bool((mmax < 1.1).all()), (
        mmax
    )  # MIST's white-dwarf row (phase -9) must not count as live
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
    assert bool((steps > -0.05).all()), (
        steps
    )  # monotone reddening to within the MIST blue-loop wiggle
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
    assert (
        1.0 < ratio < 1.3
    )  # Chabrier has fewer low-mass stars per unit mass -> more light per mass


def test_imfs_with_the_same_mass_limits_do_not_share_tables():
    """A steeper upper IMF (α = 2.7 instead of Kroupa's 2.3, same 0.08–120 M☉ limits) puts fewer
    of its mass into the 1–2 M☉ stars that light a 1-Gyr population: less light per unit mass
    (about 10 % less)."""
    k = StellarPopulation(
        ["WFC3_UVIS_F814W"],
        log_age_range=(9.0, 9.1),
        imf=PiecewisePowerLawIMF([0.08, 0.5, 120.0], [1.3, 2.3], name="kroupa-like"),
    )
    steep = StellarPopulation(
        ["WFC3_UVIS_F814W"],
        log_age_range=(9.0, 9.1),
        imf=PiecewisePowerLawIMF([0.08, 0.5, 120.0], [1.3, 2.7], name="steep"),
    )
    la, av, inf = torch.tensor([9.0]), torch.zeros(1), torch.tensor([math.inf])
    ratio = float(
        steep.unresolved_flux_per_mass(la, av, inf) / k.unresolved_flux_per_mass(la, av, inf)
    )
    assert ratio < 0.95  # 0.905 measured; a shared Kroupa table would give exactly 1


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


# -- integrated magnitudes: continuous (piecewise linear) in log age, for gradient-based samplers --
def _snapped(pop, la, av, lm):
    """The node-snapped smooth magnitudes: whole-population flux at the nearest grid age."""
    f = pop.unresolved_flux_per_mass(la, av, torch.full_like(la, math.inf))
    return -2.5 * torch.log10(f) - 2.5 * lm[:, None]


def test_integrated_magnitudes_equal_the_tabulated_values_at_the_nodes(pop):
    gen = torch.Generator().manual_seed(3)
    idx = torch.cat(
        [
            torch.tensor([0, len(pop.log_ages) - 1]),
            torch.randint(1, len(pop.log_ages) - 1, (30,), generator=gen),
        ]
    )
    la = pop.log_ages[idx]
    av = 3.0 * torch.rand(len(idx), generator=gen)
    lm = 3.0 + 3.0 * torch.rand(len(idx), generator=gen)
    got = pop.integrated_magnitudes(la, av, lm)
    assert torch.equal(got, _snapped(pop, la, av, lm))
    # Python-float ages at nodes (float32-rounded) hit the same values
    la2 = torch.tensor([7.0, 8.0, 9.0, 10.0, 10.1])
    z = torch.zeros(5)
    assert torch.allclose(
        pop.integrated_magnitudes(la2, z, z), _snapped(pop, la2, z, z), atol=1e-5, rtol=0
    )


def test_integrated_magnitudes_are_linear_between_nodes(pop):
    k = torch.tensor([20, 160, 290])  # log age 7.1, 8.5, 9.8
    t0, t1 = pop.log_ages[k], pop.log_ages[k + 1]
    av, lm = torch.tensor([0.0, 1.0, 2.0]), torch.full((3,), 4.0)
    m0 = pop.integrated_magnitudes(t0, av, lm)
    m1 = pop.integrated_magnitudes(t1, av, lm)
    for frac in (0.5, 0.3):
        m = pop.integrated_magnitudes(t0 + frac * (t1 - t0), av, lm)
        assert bool(
            ((m >= torch.minimum(m0, m1) - 1e-5) & (m <= torch.maximum(m0, m1) + 1e-5)).all()
        )
        assert torch.allclose(m, (1 - frac) * m0 + frac * m1, atol=2e-5, rtol=0)
    # not snapped: 0.3 of the way is neither node value where the nodes differ
    m = pop.integrated_magnitudes(t0 + 0.3 * (t1 - t0), av, lm)
    moved = (m1 - m0).abs() > 1e-3
    assert bool(moved.any()) and bool(((m - m0).abs()[moved] > 1e-4).all())


def test_integrated_magnitudes_age_gradient_matches_finite_differences(pop):
    la0 = torch.tensor(
        [7.0530, 9.5270]
    )  # a young and an old age, 0.3 and 0.7 of a step past a node
    av, lm = torch.tensor([0.5, 1.5]), torch.tensor([4.0, 5.0])
    la = la0.clone().requires_grad_(True)
    mag = pop.integrated_magnitudes(la, av, lm)
    grad = torch.stack(
        [
            torch.autograd.grad(mag[:, b].sum(), la, retain_graph=True)[0]
            for b in range(mag.shape[1])
        ],
        1,
    )  # (2 ages, 3 bands), mag / dex
    h = 0.001  # central difference inside the bracketing 0.01-dex segment
    fd = (
        pop.integrated_magnitudes(la0 + h, av, lm) - pop.integrated_magnitudes(la0 - h, av, lm)
    ) / (2 * h)
    assert torch.allclose(grad, fd, rtol=0.02, atol=0.02), (grad, fd)
    assert bool((grad.abs() > 0.05).all()), grad  # a real age dependence in every band
    # ... and equal to the slope of the bracketing segment
    k = torch.searchsorted(pop.log_ages, la0) - 1  # the nodes just below
    slope = (
        pop.integrated_magnitudes(pop.log_ages[k + 1], av, lm)
        - pop.integrated_magnitudes(pop.log_ages[k], av, lm)
    ) / (pop.log_ages[k + 1] - pop.log_ages[k])[:, None]
    assert torch.allclose(grad, slope, rtol=1e-3, atol=1e-3)


def test_integrated_magnitudes_gradients_in_extinction_and_mass(pop):
    la = torch.tensor([7.3, 8.64, 9.9])
    av = torch.tensor([0.2, 1.0, 3.0], requires_grad=True)
    lm = torch.tensor([3.0, 4.5, 6.0], requires_grad=True)
    mag = pop.integrated_magnitudes(la, av, lm)
    g_av, g_lm = torch.autograd.grad(mag[:, 2].sum(), (av, lm))  # F814W
    assert bool(torch.isfinite(g_av).all() and torch.isfinite(g_lm).all())
    assert torch.allclose(g_lm, torch.full((3,), -2.5))
    h = 0.01
    with torch.no_grad():
        fd = (
            pop.integrated_magnitudes(la, av + h, lm) - pop.integrated_magnitudes(la, av - h, lm)
        )[:, 2] / (2 * h)
    assert torch.allclose(g_av, fd, rtol=0.02)
    assert bool(((g_av > 0.4) & (g_av < 0.8)).all())  # A_F814W / A_V ≈ 0.6


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_integrated_magnitudes_trace_once_and_generalise(pop):
    """A torch.jit trace at one age (as pyro's NUTS makes) gives values and gradients at others."""

    def f(t):
        return pop.integrated_magnitudes(t[:1], t[1:2], t[2:3]).sum()

    traced = torch.jit.trace(f, (torch.tensor([8.003, 0.5, 4.0]),), check_trace=False)
    for v in ([7.1234, 0.2, 3.0], [9.876, 2.0, 5.5], [8.0, 0.0, 4.0]):
        a, b = torch.tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
        ga, gb = torch.autograd.grad(f(a), a)[0], torch.autograd.grad(traced(b), b)[0]
        assert float(f(a).detach()) == float(traced(b).detach())
        # a trace frozen at the tracing age would be off by orders of magnitude more; the traced
        # backward may sum in another order, so equality is to float32 rounding, not bitwise
        assert torch.allclose(ga, gb, rtol=1e-6, atol=1e-6)


def test_integrated_magnitudes_range_checks(pop):
    with pytest.raises(OutOfGridError, match="log age"):
        pop.integrated_magnitudes(torch.tensor([6.5]), torch.zeros(1), torch.zeros(1))
    with pytest.raises(OutOfGridError, match="A_V"):
        pop.integrated_magnitudes(torch.tensor([8.0]), torch.tensor([6.5]), torch.zeros(1))
    # half a step beyond the last node is held at the end value (zero age gradient)
    la = torch.tensor([10.104], requires_grad=True)
    m = pop.integrated_magnitudes(la, torch.zeros(1), torch.zeros(1))
    assert torch.allclose(
        m, pop.integrated_magnitudes(torch.tensor([10.1]), torch.zeros(1), torch.zeros(1))
    )
    assert float(torch.autograd.grad(m.sum(), la)[0]) == 0.0
