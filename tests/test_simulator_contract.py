"""The simulator contract: the Simulator protocol, chunked simulation, batches, cards and presets.

Every simulator (the cluster simulator and the linear-Gaussian toy) satisfies
:class:`simulators.base.Simulator`; :func:`simulators.base.simulate_in_chunks` is the same stream
as consecutive ``simulate`` calls; cards rebuild the simulator that wrote them (the shipped model's
card included); preset names become simulators through one function.
"""

import json
from importlib.resources import files

import pytest
import torch

import simulators
from simulators.background import (
    Background,
    ClusterScene,
    Composite,
    EmptyBackground,
    SyntheticFieldBackground,
)
from simulators.base import Simulator, iter_simulation_chunks, simulate_in_chunks
from simulators.batch import SimulationBatch
from simulators.cluster import ClusterSimulator
from simulators.errors import SimulatorError
from simulators.registry import simulator_for_preset, simulator_from_card
from simulators.toy import LinearGaussianToy

DATA_KEYS = ("simulator", "preset", "prior", "cluster_fraction", "options", "imf", "psf")
"""Entries of a cluster-simulator card that define the simulated data."""


def assert_batches_equal(a: SimulationBatch, b: SimulationBatch) -> None:
    for name in ("theta", "images", "label", "visibility"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert list(a.nuisances) == list(b.nuisances)
    for k in a.nuisances:
        assert torch.equal(a.nuisances[k], b.nuisances[k]), k


@pytest.fixture(scope="module")
def cluster():
    # small field library: construction in about a second; everything else as shipped
    return ClusterSimulator("m83-wfc3", field_library_size=512, cluster_fraction=0.6)


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy(image_size=6, cluster_fraction=0.4)


@pytest.fixture(params=["toy", "cluster"])
def sim(request, toy, cluster):
    return {"toy": toy, "cluster": cluster}[request.param]


def test_both_simulators_satisfy_the_protocol(sim):
    assert isinstance(sim, Simulator)
    assert isinstance(sim.device, torch.device)
    batch = sim.simulate(5, torch.Generator().manual_seed(0))
    assert tuple(batch.images.shape) == (5, *sim.observation_shape)
    assert len(sim.bands) == sim.observation_shape[0]
    assert tuple(batch.theta.shape) == (5, sim.prior.dim)


def test_an_object_without_the_contract_is_not_a_simulator():
    class NoCard:
        prior, bands, observation_shape, device = None, (), (), torch.device("cpu")

        def simulate(self, n, generator, *, theta=None, label=None): ...

    assert not isinstance(NoCard(), Simulator)


def test_one_chunk_equals_one_simulate_call(sim):
    whole = sim.simulate(12, torch.Generator().manual_seed(3))
    for chunk in (12, 256):
        chunked = simulate_in_chunks(sim, 12, torch.Generator().manual_seed(3), chunk=chunk)
        assert_batches_equal(chunked, whole)


def test_chunks_are_consecutive_calls_on_one_generator(sim):
    g = torch.Generator().manual_seed(4)
    calls = [sim.simulate(k, g) for k in (6, 6, 6, 2)]
    expected = SimulationBatch.concatenate(calls)
    chunked = simulate_in_chunks(sim, 20, torch.Generator().manual_seed(4), chunk=6)
    assert_batches_equal(chunked, expected)
    streamed = list(iter_simulation_chunks(sim, 20, torch.Generator().manual_seed(4), chunk=6))
    assert [len(b) for b in streamed] == [6, 6, 6, 2]
    assert_batches_equal(SimulationBatch.concatenate(streamed), expected)
    # a different chunk size is a different (equally valid) stream: the chunking is part of the seed
    other = simulate_in_chunks(sim, 20, torch.Generator().manual_seed(4), chunk=10)
    assert not torch.equal(other.images, chunked.images)


def test_given_theta_and_labels_are_split_over_the_chunks(sim):
    theta = sim.prior.sample(18, torch.Generator().manual_seed(5))
    label = (torch.arange(18) % 3 != 0).long()
    g = torch.Generator().manual_seed(6)
    calls = [
        sim.simulate(8, g, theta=theta[:8], label=label[:8]),
        sim.simulate(8, g, theta=theta[8:16], label=label[8:16]),
        sim.simulate(2, g, theta=theta[16:], label=label[16:]),
    ]
    chunked = simulate_in_chunks(
        sim, 18, torch.Generator().manual_seed(6), chunk=8, theta=theta, label=label
    )
    assert_batches_equal(chunked, SimulationBatch.concatenate(calls))
    assert torch.equal(chunked.label, label)
    assert torch.equal(chunked.theta, theta)


@pytest.mark.parametrize(
    ("n", "chunk", "given", "match"),
    [
        (-1, 8, {}, "n >= 0"),
        (10, 0, {}, "chunk >= 1"),
        (10, -4, {}, "chunk >= 1"),
        (10, 4, {"label": torch.ones(9, dtype=torch.long)}, "label has 9 rows"),
        (10, 4, {"theta": torch.zeros(11, 4)}, "theta has 11 rows"),
    ],
)
def test_bad_sizes_are_refused(toy, n, chunk, given, match):
    with pytest.raises(ValueError, match=match):
        simulate_in_chunks(toy, n, torch.Generator().manual_seed(0), chunk=chunk, **given)


def _batch(start: int, n: int, nuisances: tuple[str, ...]) -> SimulationBatch:
    idx = torch.arange(start, start + n)
    return SimulationBatch(
        idx[:, None].float().expand(n, 4),
        idx.float().view(n, 1, 1, 1).expand(n, 2, 3, 3),
        idx % 2,
        idx.float(),
        {k: idx.float() + 1000 * i for i, k in enumerate(nuisances)},
    )


def test_concatenate_keeps_order_and_only_shared_nuisances():
    parts = [
        _batch(0, 3, ("zeta", "alpha", "mid")),
        _batch(3, 2, ("alpha", "zeta")),
        _batch(5, 4, ("mid", "zeta", "alpha", "extra")),
    ]
    joined = SimulationBatch.concatenate(parts)
    assert len(joined) == 9
    assert torch.equal(joined.visibility, torch.arange(9).float())
    assert torch.equal(joined.theta[:, 0], torch.arange(9).float())
    assert torch.equal(joined.images[:, 1, 2, 2], torch.arange(9).float())
    assert torch.equal(joined.label, torch.arange(9) % 2)
    # kept: the nuisances every batch has, in the first batch's order, each in batch order
    assert list(joined.nuisances) == ["zeta", "alpha"]
    assert torch.equal(joined.nuisances["alpha"], torch.cat([p.nuisances["alpha"] for p in parts]))
    assert SimulationBatch.concatenate(parts[:1]) is parts[0]
    with pytest.raises(ValueError, match="empty"):
        SimulationBatch.concatenate([])


def test_cards_rebuild_the_simulator_that_wrote_them(sim):
    card = json.loads(json.dumps(sim.card()))  # as stored in a model card
    rebuilt = simulator_from_card(card)
    assert type(rebuilt) is type(sim)
    assert rebuilt.card() == sim.card()
    assert rebuilt.device == torch.device("cpu")
    assert_batches_equal(
        rebuilt.simulate(24, torch.Generator().manual_seed(9)),
        sim.simulate(24, torch.Generator().manual_seed(9)),
    )


def test_cluster_card_with_a_real_background_and_tuple_options(tmp_path):
    from astropy.io import fits

    fits.writeto(tmp_path / "bg.fits", torch.rand(3, 80, 70).numpy())
    sim = ClusterSimulator(
        "m83-wfc3",
        gamma_range=(2.5, 3.0),
        background=str(tmp_path / "bg.fits"),
        field_library_size=256,
    )
    rebuilt = simulator_from_card(json.loads(json.dumps(sim.card())))
    assert rebuilt.options == sim.options
    assert rebuilt.card() == sim.card()
    assert_batches_equal(
        rebuilt.simulate(16, torch.Generator().manual_seed(2)),
        sim.simulate(16, torch.Generator().manual_seed(2)),
    )


def test_unknown_or_incomplete_cards_are_refused(toy, cluster):
    with pytest.raises(SimulatorError, match="'mystery'.*known kinds"):
        simulator_from_card({"simulator": "mystery", "prior": toy.card()["prior"]})
    with pytest.raises(SimulatorError, match="no simulator card"):
        simulator_from_card(None)
    with pytest.raises(SimulatorError, match="JSON object"):
        simulator_from_card(["linear-gaussian-toy"])
    incomplete = toy.card()
    del incomplete["noise"]
    with pytest.raises(SimulatorError, match="incomplete linear-gaussian-toy card"):
        simulator_from_card(incomplete)
    incomplete = cluster.card()
    del incomplete["preset"]
    with pytest.raises(SimulatorError, match="incomplete simulators.cluster.ClusterSimulator"):
        simulator_from_card(incomplete)
    with pytest.raises(SimulatorError, match="not a linear-gaussian-toy card"):
        LinearGaussianToy.from_card(cluster.card())
    with pytest.raises(SimulatorError, match="not a simulators.cluster.ClusterSimulator card"):
        ClusterSimulator.from_card(toy.card())


def test_the_shipped_model_card_rebuilds_the_m83_simulator():
    stored = json.loads(files("sbicluster").joinpath("models/default/card.json").read_text())
    sim_card = stored["simulator"]
    rebuilt = simulator_from_card(sim_card)
    assert isinstance(rebuilt, ClusterSimulator)
    card = json.loads(json.dumps(rebuilt.card()))
    for key in DATA_KEYS:
        assert card[key] == sim_card[key], key
    # the same data as the simulator built directly from the preset with the card's options
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in sim_card["options"].items()}
    options["feh"] = float(options["feh"][0])
    direct = ClusterSimulator("m83-wfc3", cluster_fraction=sim_card["cluster_fraction"], **options)
    assert direct.options == rebuilt.options and direct.instrument == rebuilt.instrument
    assert_batches_equal(
        rebuilt.simulate(20, torch.Generator().manual_seed(11)),
        direct.simulate(20, torch.Generator().manual_seed(11)),
    )


def test_preset_names_become_simulators():
    toy = simulator_for_preset("toy")
    assert isinstance(toy, LinearGaussianToy) and toy.device == torch.device("cpu")
    assert simulator_for_preset("toy", cluster_fraction=0.25).cluster_fraction == 0.25
    sim = simulator_for_preset("m83-wfc3", background="none", cluster_fraction=0.2)
    assert isinstance(sim, ClusterSimulator)
    assert sim.instrument.name == "m83-wfc3" and sim.cluster_fraction == 0.2
    assert isinstance(sim.background, EmptyBackground) and sim.field is None
    with pytest.raises(SimulatorError, match="unknown instrument preset"):
        simulator_for_preset("no-such-camera")
    with pytest.raises(SimulatorError, match="invalid option"):
        simulator_for_preset("toy", max_stars=3)


def test_the_package_exports_the_contract():
    for name in ("Simulator", "simulate_in_chunks", "simulator_from_card", "simulator_for_preset"):
        assert name in simulators.__all__ and hasattr(simulators, name)
    assert simulators.simulator_from_card is simulator_from_card


class _Flat(Background):
    """A test background: a constant level behind the clusters, its own nuisance, no noise."""

    option = "flat"

    def compose(self, scene: ClusterScene, generator, noise_generator) -> Composite:
        noiseless = scene.render([]) + 0.5
        level = torch.rand(scene.n, generator=generator)
        return Composite(noiseless + level.view(-1, 1, 1, 1), noiseless, {"level": level})


def test_simulate_delegates_everything_behind_the_clusters_to_its_background(cluster):
    assert isinstance(cluster.background, SyntheticFieldBackground)
    sim = ClusterSimulator("m83-wfc3", background="none", noise=False)
    label = torch.tensor([1, 0, 1, 0])
    plain = sim.simulate(4, torch.Generator().manual_seed(1), label=label)
    sim.background = _Flat(None)
    flat = sim.simulate(4, torch.Generator().manual_seed(1), label=label)
    level = flat.nuisances["level"]
    assert list(flat.nuisances)[-1] == "level" and "hard_negative" not in flat.nuisances
    assert torch.allclose(flat.images, plain.images + 0.5 + level.view(-1, 1, 1, 1))
    # the cluster part (θ, nuisances drawn before the background) does not depend on it
    assert torch.equal(flat.theta, plain.theta)
    assert torch.equal(flat.nuisances["n_stars"], plain.nuisances["n_stars"])
    # the visibility uses the background's noiseless scene: a brighter scene, a lower S/N
    assert bool((flat.visibility[label == 1] < plain.visibility[label == 1]).all())
    assert torch.equal(flat.visibility[label == 0], torch.zeros(2))
