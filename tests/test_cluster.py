"""ClusterSimulator with the real physics: flux bookkeeping, sizes, threshold invariance, seeds, labels."""

import json
import math

import pytest
import torch

from simulators.cluster import ClusterSimulator
from simulators.population import StellarPopulation

BANDS = ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")


@pytest.fixture(scope="module")
def population():
    return StellarPopulation(BANDS)


@pytest.fixture(scope="module")
def sim(population):
    return ClusterSimulator("m83-wfc3", population=population)


def _theta(n, log_age, log_mass, rh_pc, av):
    return torch.tensor([[log_age, log_mass, math.log10(rh_pc), av]] * n, dtype=torch.float32)


def test_batch_shapes_types_and_card(sim):
    b = sim.simulate(16, torch.Generator().manual_seed(0))
    assert b.images.shape == (16, 3, 64, 64) and b.images.dtype == torch.float32
    assert b.label.dtype == torch.int64 and b.visibility.shape == (16,)
    assert torch.isfinite(b.images).all()
    assert (b.visibility[b.label == 0] == 0).all()
    for key in (
        "feh",
        "eff_gamma",
        "offset_y",
        "offset_x",
        "mass_threshold",
        "n_stars",
        "field_sfr_density",
        "hard_negative",
    ):
        assert b.nuisances[key].shape[0] == 16
    card = sim.card()
    json.dumps(card)
    assert card["preset"]["name"] == "m83-wfc3" and "visibility_definition" in card


def test_same_seed_same_cutout(sim):
    a = sim.simulate(6, torch.Generator().manual_seed(11))
    b = sim.simulate(6, torch.Generator().manual_seed(11))
    assert (
        torch.equal(a.images, b.images)
        and torch.equal(a.theta, b.theta)
        and torch.equal(a.visibility, b.visibility)
    )
    c = sim.simulate(6, torch.Generator().manual_seed(12))
    assert not torch.equal(a.images, c.images)


def test_noiseless_total_flux_equals_sum_of_stars(population):
    # compact cluster, no background: everything lands in the cutout; total = drawn stars + smooth part
    sim = ClusterSimulator(
        "m83-wfc3", population=population, background="none", noise=False, offset_range=0.0
    )
    n = 4
    theta = _theta(n, 7.3, 4.5, 1.0, 0.5)
    g = torch.Generator().manual_seed(1)
    centre = torch.full((n, 2), 31.5)
    gamma = torch.full((n,), 3.0)
    from simulators.profiles import eff_core_radius

    r_h = 10 ** theta[:, 2] / sim.instrument.pc_per_pixel
    a = eff_core_radius(r_h, gamma, 10.0)
    stars, smooth, _, info = sim.draw_clusters(
        population, 0, theta, gamma, centre, a, 10 * r_h, 2 * r_h, g
    )
    assert int(info["n_stars"].sum()) > 50
    img = sim.renderer.render(n, stars.sample_index, stars.y, stars.x, stars.flux, smooth)
    expect = torch.zeros(n, 3).index_add_(0, stars.sample_index, stars.flux) + smooth.sum((-2, -1))
    assert torch.allclose(img.sum((-2, -1)), expect, rtol=0.01)
    # and the smooth part carries the IMF-expected flux below the threshold (truncation at 10 r_h = 11 px)
    mass = 10 ** theta[:, 1].double()
    f_smooth = (
        mass[:, None]
        * population.unresolved_flux_per_mass(
            theta[:, 0], theta[:, 3], info["mass_threshold"]
        ).double()
    )
    f_smooth = f_smooth.float() * sim.flux_scale
    assert torch.allclose(smooth.sum((-2, -1)), f_smooth, rtol=0.01)


def test_recovered_half_light_radius_within_5_percent(population):
    # rich, noiseless cluster with a delta-function PSF (psf_radius=0): image half-light radius = r_h
    sim = ClusterSimulator(
        "m83-wfc3",
        population=population,
        background="none",
        noise=False,
        psf_radius=0,
        offset_range=0.0,
        gamma_range=(3.0, 3.0),
    )
    rh_pc = 5.0
    b = sim.simulate(
        8,
        torch.Generator().manual_seed(2),
        theta=_theta(8, 8.0, 5.3, rh_pc, 0.0),
        label=torch.ones(8),
    )
    img = b.images[:, 2].double().sum(0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r = torch.sqrt((yy - 31.5) ** 2 + (xx - 31.5) ** 2).double().flatten()
    order = torch.argsort(r)
    cum = torch.cumsum(img.flatten()[order], 0)
    # total light inside the truncation radius, including what falls outside the cutout: fraction of the EFF profile
    from simulators.profiles import eff_core_radius, eff_enclosed_fraction

    rh_px = rh_pc / sim.instrument.pc_per_pixel
    g = torch.tensor(3.0, dtype=torch.float64)
    a = eff_core_radius(torch.tensor([rh_px], dtype=torch.float64), g.view(1), 10.0)
    frac_in = float(
        eff_enclosed_fraction(
            torch.tensor(31.5, dtype=torch.float64), a, g, torch.tensor(10 * rh_px)
        )
    )
    total = float(cum[-1]) / frac_in * (1 + 0.0)  # corners add a little light: conservative
    rh_img = float(
        r[order][int(torch.searchsorted(cum, torch.tensor(0.5 * total, dtype=torch.float64)))]
    )
    assert rh_img == pytest.approx(rh_px, rel=0.05)


def test_threshold_does_not_change_pixel_statistics(population):
    # variance of noiseless images over seeds: default threshold vs a 10x stricter one (more stars drawn)
    theta = _theta(160, 8.5, 4.5, 2.0, 0.3)
    out = []
    for tol in (0.02, 0.002):
        s = ClusterSimulator(
            "m83-wfc3",
            population=population,
            background="none",
            noise=False,
            offset_range=0.0,
            sbf_tolerance=tol,
            max_stars=100_000,
            gamma_range=(3.0, 3.0),
        )
        b = s.simulate(160, torch.Generator().manual_seed(5), theta=theta, label=torch.ones(160))
        core = b.images[:, :, 24:40, 24:40].double()
        out.append(
            (core.mean(0).sum((-2, -1)), core.var(0).sum((-2, -1)), b.nuisances["n_stars"].mean())
        )
    (m1, v1, n1), (m2, v2, n2) = out
    assert n2 > 1.5 * n1  # the stricter threshold really draws more stars
    assert torch.allclose(m1, m2, rtol=0.03)  # mean light unchanged
    # summed pixel variance: 160 seeds give ~11 % standard error per estimate; allow 30 %
    assert torch.all((v1 / v2 - 1).abs() < 0.3), v1 / v2


def test_background_and_cluster_samples_differ_only_where_they_should(sim):
    theta = _theta(4, 7.0, 4.0, 1.5, 0.2)
    opts = dict(population=sim.populations[0], noise=False)
    s = ClusterSimulator("m83-wfc3", hard_negative_fraction=0.0, **opts)
    a = s.simulate(4, torch.Generator().manual_seed(8), theta=theta, label=torch.ones(4))
    b = s.simulate(4, torch.Generator().manual_seed(8), theta=theta, label=torch.zeros(4))
    diff = (a.images - b.images).abs().sum(1)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cy = 31.5 + a.nuisances["offset_y"]
    cx = 31.5 + a.nuisances["offset_x"]
    r = torch.sqrt((yy - cy.view(-1, 1, 1)) ** 2 + (xx - cx.view(-1, 1, 1)) ** 2)
    rt = 10 * 10 ** theta[0, 2] / s.instrument.pc_per_pixel + s.renderer.radius + 1
    # identical field + galaxy light outside the cluster, up to float32 FFT round-off of the bright cluster
    # (< 1e-3 e-/s, a few per cent of one background pixel's noise sigma ~0.016 e-/s in F814W)
    assert float(diff[r > rt].max()) < 1e-3
    assert float(diff[r < 3].min()) > 0  # the cluster is there
    assert (a.visibility > 0).all() and (b.visibility == 0).all()
    assert torch.equal(a.nuisances["field_sfr_density"], b.nuisances["field_sfr_density"])


def test_visibility_grows_with_mass_and_physics_colours(sim):
    g = torch.Generator().manual_seed(4)
    lo = sim.simulate(32, g, theta=_theta(32, 7.0, 3.2, 2.0, 0.5), label=torch.ones(32))
    hi = sim.simulate(32, g, theta=_theta(32, 7.0, 5.0, 2.0, 0.5), label=torch.ones(32))
    assert float(hi.visibility.median()) > 5 * float(lo.visibility.median())
    # young clusters are blue, old ones red: F336W/F814W flux ratio (noiseless, no background)
    s = ClusterSimulator("m83-wfc3", population=sim.populations[0], background="none", noise=False)
    young = s.simulate(8, g, theta=_theta(8, 6.8, 5.0, 2.0, 0.0), label=torch.ones(8)).images.sum(
        (-2, -1)
    )
    old = s.simulate(8, g, theta=_theta(8, 9.8, 5.0, 2.0, 0.0), label=torch.ones(8)).images.sum(
        (-2, -1)
    )
    dusty = s.simulate(8, g, theta=_theta(8, 6.8, 5.0, 2.0, 2.0), label=torch.ones(8)).images.sum(
        (-2, -1)
    )
    ratio = lambda f: (f[:, 0] / f[:, 2]).median()  # noqa: E731
    assert ratio(young) > 5 * ratio(old)
    assert ratio(dusty) < 0.5 * ratio(young)
