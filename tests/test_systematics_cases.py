"""The misspecification benchmark's test cases change exactly one physics choice each."""

import math

import pytest

from benchmarks.systematics import CASES, case_simulator, prior_position
from simulators.cluster import ClusterSimulator


@pytest.fixture(scope="module")
def nominal():
    return ClusterSimulator("m83-wfc3", background="none")


def _differences(a: dict, b: dict) -> set[str]:
    names = set(a["options"]) | set(b["options"])  # a fixed-physics card omits physics_nuisance
    keys = {f"options.{k}" for k in names if a["options"].get(k) != b["options"].get(k)}
    keys |= {f"preset.{k}" for k in a["preset"] if a["preset"][k] != b["preset"][k]}
    return keys


@pytest.mark.slow
def test_each_case_changes_one_choice(nominal):
    base = nominal.card()
    for case in CASES:
        sim = case_simulator(nominal, case)
        diff = _differences(base, sim.card())
        if case.options:
            assert diff == {f"options.{k}" for k in case.options}, case.name
        elif case.distance_modulus is not None:
            assert diff == {"preset.distance_modulus"}, case.name
        else:
            assert diff == set(), case.name
        if case.draws_nuisances:
            assert sim.prior.nuisance_names == ("feh", "rv"), case.name
        elif case.law is not None:
            assert (sim.populations[0].extinction_law, sim.populations[0].rv) == case.law
        else:
            assert sim.populations[0].extinction_law == nominal.populations[0].extinction_law


def test_distance_case_scales_flux_and_pixel_size(nominal):
    """0.2 mag nearer: every band 10^0.08 brighter, a pixel 10^−0.04 as many parsecs."""
    case = next(c for c in CASES if c.distance_modulus == 28.1)
    sim = case_simulator(nominal, case)
    for ratio in (sim.flux_scale / nominal.flux_scale).tolist():
        assert ratio == pytest.approx(10**0.08, rel=1e-5)
    pc_ratio = sim.instrument.pc_per_pixel / nominal.instrument.pc_per_pixel
    assert pc_ratio == pytest.approx(10 ** (-0.04), rel=1e-12)
    assert math.isclose(sim.instrument.distance_modulus, 28.1)


def test_truth_of_a_marginalised_model_carries_the_cases_nuisances():
    """The marginalised model's truth: θ, then the case's own [Fe/H] and R_V, or the values
    drawn from the nuisance priors for the case that draws them."""
    import torch

    from benchmarks.systematics import case_theta, model_truth
    from simulators.nuisance import NUISANCE_PRIOR
    from simulators.priors import DEFAULT_PRIOR

    class Model:
        def __init__(self, prior):
            self.prior = prior

    theta = DEFAULT_PRIOR.sample(5, torch.Generator().manual_seed(0))
    by_name = {case.name: case for case in CASES}
    truth = model_truth(Model(NUISANCE_PRIOR), by_name["F99 R_V = 2.5"], theta)
    assert truth.shape == (5, 6) and (truth[:, 4] == 0.0).all() and (truth[:, 5] == 2.5).all()
    assert model_truth(Model(DEFAULT_PRIOR), by_name["F99 R_V = 2.5"], theta).shape == (5, 4)
    drawn = case_theta(by_name["nuisance prior"], theta, seed=1)
    assert drawn.shape == (5, 6) and bool(NUISANCE_PRIOR.contains(drawn).all())
    assert (
        model_truth(Model(NUISANCE_PRIOR), by_name["nuisance prior"], drawn)[:, 4:]
        == drawn[:, 4:].numpy()
    ).all()
    assert [c.name for c in CASES if not c.outside] == [
        "nominal",
        "[Fe/H] = -0.5",
        "[Fe/H] = +0.25",
        "Chabrier IMF",
        "F99 R_V = 2.5",
        "F99 R_V = 4.0",
        "nuisance prior",
    ]


def test_fixed_nuisance_cases_lie_inside_the_marginal_priors_not_on_their_edges():
    """A posterior calibrated over a prior shrinks towards its middle where the data barely
    constrain a parameter, so a test value on the prior's edge would be a conditional test no
    posterior passes: each fixed [Fe/H] and R_V lies at least a tenth of the range inside."""
    from simulators.nuisance import NUISANCE_PRIOR

    bounds = {p.name: (p.low, p.high) for p in NUISANCE_PRIOR.parameters}
    for case in CASES:
        if case.outside or case.draws_nuisances:
            continue
        for name, value in (("feh", case.feh), ("rv", case.rv)):
            low, high = bounds[name]
            margin = 0.1 * (high - low)
            assert low + margin <= value <= high - margin, (case.name, name, value)
            assert abs(prior_position(name, value)) <= 0.8
    assert prior_position("feh", -0.75) == -1 and prior_position("rv", 5.0) == 1
    assert prior_position("feh", -0.5) == pytest.approx(-0.6)
