"""Physics nuisances of the marginalised simulator: [Fe/H] and R_V per cluster, IMF mixture."""

from __future__ import annotations

import importlib.util
import itertools
import warnings

import pytest
import torch

from simulators.errors import SimulatorError
from simulators.nuisance import (
    EXTINCTION_NODES,
    FEH_NODES,
    NUISANCE_PRIOR,
    PopulationBlend,
    interpolation_weights,
)
from simulators.priors import DEFAULT_PRIOR, ClusterPrior, Parameter

BANDS = ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")


@pytest.fixture(scope="module")
def blend():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PopulationBlend(BANDS)


def _integrated(blend, log_age, av, feh, rv):
    """Absolute magnitudes of the whole IMF-expected population per 1 M☉, shape (n, band)."""
    n = len(log_age)
    flux = blend.unresolved_flux_per_mass(
        torch.as_tensor(log_age, dtype=torch.float32),
        torch.full((n,), float(av)),
        torch.full((n,), float("inf")),
        torch.full((n,), float(feh)),
        torch.full((n,), float(rv)),
    )
    return -2.5 * torch.log10(flux)


def test_interpolation_weights_are_piecewise_linear_and_refuse_outside():
    assert FEH_NODES == (-0.75, -0.5, 0.0, 0.25, 0.5)
    values = torch.tensor([-0.75, -0.625, -0.5, -0.25, 0.0, 0.125, 0.5])
    lower, weight = interpolation_weights(values, FEH_NODES)
    assert lower.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert torch.allclose(weight, torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 1.0]))
    for outside in (-0.8, 0.55, float("nan")):
        with pytest.raises(SimulatorError, match="outside"):
            interpolation_weights(torch.tensor([outside]), FEH_NODES)


def test_blend_is_each_node_population_at_its_node(blend):
    g = torch.Generator().manual_seed(1)
    n = 3000
    age = 6.6 + 3.3 * torch.rand(n, generator=g)
    mass = 0.1 + 30 * torch.rand(n, generator=g)
    av = 3 * torch.rand(n, generator=g)
    law_rv = sorted((rv for _, rv in EXTINCTION_NODES), reverse=True)  # blend order: 1/R_V rising
    for (i, feh), (j, rv) in itertools.product(enumerate(FEH_NODES), enumerate(law_rv)):
        mags = blend.star_magnitudes_flat(
            age, mass, av, torch.full((n,), feh), torch.full((n,), rv)
        )
        node = blend.nodes[i][j].star_magnitudes_flat(age, mass, av)
        alive = torch.isfinite(node)
        assert torch.equal(torch.isfinite(mags), alive)
        assert (mags[alive] - node[alive]).abs().max() < 1e-5
    assert (blend.nodes[2][2].feh, blend.nodes[2][2].extinction_law) == (0.0, "mist")
    assert blend.nominal is blend.nodes[2][2]


def test_metal_poor_old_populations_are_bluer(blend):
    """From 1 Gyr on, lower [Fe/H] gives bluer integrated colours (at 100 Myr it need not: the
    supergiant phases change with metallicity too)."""
    ages = [9.0, 9.5, 9.9]
    colours = [
        (lambda m: m[:, 0] - m[:, 2])(_integrated(blend, ages, 0.0, feh, 3.1))
        for feh in (-0.75, -0.5, -0.25, 0.0, 0.25, 0.5)
    ]
    for poorer, richer in itertools.pairwise(colours):
        assert (poorer < richer).all()  # F336W − F814W rises with [Fe/H]


def test_uv_extinction_per_unit_av_falls_as_rv_rises(blend):
    """Higher R_V means greyer dust: less F336W and F438W extinction per magnitude of A_V."""
    ages = [7.0, 8.5]
    ratios = []
    for rv in (2.0, 2.5, 2.8, 3.1, 3.5, 4.0, 5.0):
        dim = _integrated(blend, ages, 1.0, 0.0, rv) - _integrated(blend, ages, 0.0, 0.0, rv)
        ratios.append(dim[:, :2])  # A_band / A_V
    for lower_rv, higher_rv in itertools.pairwise(ratios):
        assert (higher_rv < lower_rv).all()
    assert ((ratios[0][:, 0] > 1.7) & (ratios[-1][:, 0] < 1.55)).all()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("lachesis_grids") is None,
    reason="needs MIST's own [Fe/H] = -0.25 isochrones (lachesis-grids)",
)
def test_interpolated_metallicity_is_close_to_mists_own_isochrones(blend):
    """Between nodes the blend is an approximation: against MIST's [Fe/H] = −0.25 isochrones the
    integrated magnitudes are within 0.1 mag from 100 Myr on (red-supergiant ages are worse) and
    the rms error is less than half of that of taking the nearest node."""
    from simulators.population import StellarPopulation

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            own = StellarPopulation(BANDS, feh=-0.25, age_step=0.02)
    except SimulatorError as err:  # OutOfGridError: the optional grid is not installed
        pytest.skip(str(err))
    ages = torch.arange(6.6, 9.95, 0.1)
    inf = torch.full((len(ages),), float("inf"))
    truth = -2.5 * torch.log10(own.unresolved_flux_per_mass(ages, torch.zeros(len(ages)), inf))
    blended = _integrated(blend, ages, 0.0, -0.25, 3.1)
    nearest = _integrated(blend, ages, 0.0, 0.0, 3.1)
    error, nearest_error = blended - truth, nearest - truth
    assert error[ages >= 7.95].abs().max() < 0.1
    assert error.pow(2).mean().sqrt() < 0.5 * nearest_error.pow(2).mean().sqrt()


def test_rv_interpolation_in_magnitudes_reproduces_f99_between_its_nodes(monkeypatch):
    """With F99 at R_V = 2.5 and 4.0 as the only extinction nodes, the blend at R_V = 3.1 is
    F99's own R_V = 3.1 population within 0.02 mag at A_V = 3 (interpolating fluxes instead
    misses F336W by 0.1 mag)."""
    import simulators.nuisance as nuisance
    from simulators.population import StellarPopulation

    monkeypatch.setattr(nuisance, "EXTINCTION_NODES", (("F99", 2.5), ("F99", 4.0)))
    monkeypatch.setattr(nuisance, "FEH_NODES", (0.0, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two_curves = nuisance.PopulationBlend(BANDS)
        own = StellarPopulation(
            BANDS, extinction_law="F99", rv=3.1, age_step=nuisance.NUISANCE_AGE_STEP
        )
    ages = torch.arange(6.6, 9.95, 0.1)
    inf = torch.full((len(ages),), float("inf"))
    for av in (1.0, 3.0):
        truth = own.unresolved_flux_per_mass(ages, torch.full((len(ages),), av), inf)
        blended = _integrated(two_curves, ages, av, 0.0, 3.1)
        assert (blended + 2.5 * torch.log10(truth)).abs().max() < 0.02


def test_coupling_masks_condition_every_parameter_on_every_other():
    from sbicluster.model import COUPLING_MASKS, coupling_masks

    assert coupling_masks(4) == COUPLING_MASKS
    for dim in range(2, 9):
        masks = coupling_masks(dim)
        for i, j in itertools.permutations(range(dim), 2):
            # some layer transforms i (mask False) conditioned on j (mask True)
            assert any(m[j] and not m[i] for m in masks), (dim, i, j)


def test_prior_takes_both_nuisances_after_the_cluster_parameters():
    assert NUISANCE_PRIOR.names[4:] == ("feh", "rv") == NUISANCE_PRIOR.nuisance_names
    assert DEFAULT_PRIOR.nuisance_names == ()
    feh_only = DEFAULT_PRIOR.parameters + (NUISANCE_PRIOR.parameter("feh"),)
    with pytest.raises(SimulatorError, match="optionally followed"):
        ClusterPrior(feh_only)
    assert ClusterPrior.from_dict(NUISANCE_PRIOR.to_dict()) == NUISANCE_PRIOR


@pytest.fixture(scope="module")
def marginal_simulator():
    from simulators.cluster import ClusterSimulator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClusterSimulator("m83-wfc3", physics_nuisance=True, background="none", noise=False)


def test_marginal_simulator_refuses_inconsistent_physics(marginal_simulator):
    from simulators.cluster import ClusterSimulator

    with pytest.raises(SimulatorError, match="leave feh, family"):
        ClusterSimulator("m83-wfc3", physics_nuisance=True, imf="chabrier")
    with pytest.raises(SimulatorError, match="need physics_nuisance"):
        ClusterSimulator("m83-wfc3", NUISANCE_PRIOR)
    with pytest.raises(SimulatorError, match="nuisance 'feh'"):
        ClusterSimulator("m83-wfc3", DEFAULT_PRIOR, physics_nuisance=True)
    wide = NUISANCE_PRIOR.parameters[:4] + (
        Parameter("feh", "", "dex", -1.0, 0.25),
        NUISANCE_PRIOR.parameter("rv"),
    )
    with pytest.raises(SimulatorError, match="interpolation nodes"):
        ClusterSimulator("m83-wfc3", ClusterPrior(wide), physics_nuisance=True)
    assert marginal_simulator.prior == NUISANCE_PRIOR


def test_marginal_simulator_card_lists_the_nuisances_and_rebuilds_it(marginal_simulator):
    from simulators.registry import simulator_from_card

    card = marginal_simulator.card()
    nuisances = card["nuisance_physics"]
    assert [p["name"] for p in nuisances["inferred"]] == ["feh", "rv"]
    assert nuisances["marginalised"][0]["name"] == "imf"
    assert len(card["photometry_table_id"]) == 2 * len(FEH_NODES) * len(EXTINCTION_NODES)
    rebuilt = simulator_from_card(card)
    a = marginal_simulator.simulate(6, torch.Generator().manual_seed(3), label=torch.ones(6))
    b = rebuilt.simulate(6, torch.Generator().manual_seed(3), label=torch.ones(6))
    assert torch.equal(a.images, b.images) and torch.equal(a.theta, b.theta)
    assert a.theta.shape == (6, 6)
    assert set(a.nuisances["imf_index"].tolist()) <= {0.0, 1.0}
    assert torch.equal(a.nuisances["feh"], a.theta[:, 4])


def test_metal_poor_clusters_are_bluer_in_the_simulated_images(marginal_simulator):
    """Same clusters, same stars drawn (same stream), [Fe/H] −0.5 against +0.25: the metal-poor
    images are bluer in F336W − F814W, cluster by cluster."""
    n = 8
    theta = torch.tensor([9.0, 5.0, 0.3, 0.5, 0.0, 3.1]).repeat(n, 1)
    colour = []
    for feh in (-0.5, 0.25):
        theta[:, 4] = feh
        batch = marginal_simulator.simulate(
            n, torch.Generator().manual_seed(7), theta=theta, label=torch.ones(n)
        )
        flux = batch.images.sum((2, 3))
        colour.append(-2.5 * torch.log10(flux[:, 0] / flux[:, 2]))
    assert (colour[0] < colour[1] - 0.05).all()


def test_the_marginal_model_reports_nuisance_posteriors(tmp_path):
    """The shipped ``marginal`` model: its card lists the nuisance priors, and inference gives
    [Fe/H] and R_V posteriors beside the cluster parameters, inside their priors."""
    from astropy import units as u

    import sbicluster
    from sbicluster.artifact import load_model
    from sbicluster.outputs import write_cutouts_fits
    from simulators.cluster import ClusterSimulator

    card = load_model("marginal").card
    assert [p["name"] for p in card["simulator"]["nuisance_physics"]["inferred"]] == ["feh", "rv"]
    assert "--marginalise-physics" in card["training"]["command"]
    simulator = ClusterSimulator("m83-wfc3")  # the default physics: inside the nuisance priors
    theta = torch.tensor([[8.0, 5.0, 0.3, 0.5]]).repeat(3, 1)
    batch = simulator.simulate(
        3, torch.Generator().manual_seed(2), theta=theta, label=torch.ones(3, dtype=torch.long)
    )
    path = write_cutouts_fits(
        tmp_path / "c.fits",
        batch.images.numpy(),
        simulator.bands,
        pixel_scale=simulator.instrument.pixel_scale,
    )
    result = sbicluster.infer(path, model="marginal", num_samples=300, seed=0, progress=False)
    assert result.samples.shape == (3, 300, 6)
    summary = result.summary
    assert summary["feh_median"].unit == u.dex
    bounds = {p["name"]: (p["low"], p["high"]) for p in card["prior"]["parameters"]}
    assert bounds["feh"] == (-0.75, 0.5) and bounds["rv"] == (2.0, 5.0)
    for name in ("feh", "rv"):
        low, high = bounds[name]
        assert ((summary[f"{name}_p16"] >= low) & (summary[f"{name}_p84"] <= high)).all()
    assert (abs(summary["log_mass_median"].value - 5.0) < 0.3).all()
