"""Binned head (densities, sampling, training) and the helpers of benchmarks/baselines.py."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sbicluster.baselines.binned import BinnedPosterior, BinnedTrainingConfig, train_binned
from simulators.batch import SimulationBatch
from simulators.priors import DEFAULT_PRIOR


def _model(seed=0):
    torch.manual_seed(seed)  # initialisation only; the library takes explicit generators
    emb = nn.Sequential(nn.Flatten(), nn.Linear(4, 64), nn.ReLU())
    return BinnedPosterior(emb, 64, DEFAULT_PRIOR, hidden=64)


def test_density_is_normalised_over_the_prior_box():
    m = _model()
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn((1, 2800), generator=gen) * 2
    size = torch.randn((1, 14), generator=gen)
    theta = DEFAULT_PRIOR.sample(200000, gen)
    q = m.log_prob_from_logits(grid, size, theta[:, None, :]).exp()  # (S, 1)
    volume = float(torch.prod(DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()))
    assert abs(float(q.mean()) * volume - 1.0) < 0.03  # ∫ q dθ = E_prior[q] × V
    outside = DEFAULT_PRIOR.high()[None, None] + 0.1
    assert torch.isinf(m.log_prob_from_logits(grid, size, outside)).all()


def test_samples_follow_bin_probabilities():
    m = _model()
    gen = torch.Generator().manual_seed(1)
    grid = torch.full((1, 2800), -20.0)
    grid[0, 5] = 0.0  # bin (age 0, A_V 0, mass 5)
    grid[0, 2799] = math.log(3.0)  # last bin, 3× more probable
    size = torch.zeros((1, 14))
    s = m.sample_from_logits(grid, size, 20000, gen)[0]
    assert DEFAULT_PRIOR.contains(s).all()
    flat, j = m.bin_index(s)
    frac_last = float((flat == 2799).float().mean())
    assert (
        abs(frac_last - 0.75) < 0.015
        and float(((flat == 5) | (flat == 2799)).float().mean()) == 1.0
    )
    # the size head is uniform over its 14 bins: log r_h is uniform over the prior range
    assert abs(float(j.float().mean()) - 6.5) < 0.1


class _LinearToy:
    """x = (θ − centre)/half-range + 0.05 ε as a 4-pixel 'image'; always a cluster."""

    prior = DEFAULT_PRIOR
    device = "cpu"

    def simulate(self, n, generator):
        theta = self.prior.sample(n, generator)
        lo, hi = self.prior.low(), self.prior.high()
        x = 2 * (theta - lo) / (hi - lo) - 1 + 0.05 * torch.randn(theta.shape, generator=generator)
        return SimulationBatch(
            theta, x[:, :, None, None], torch.ones(n, dtype=torch.long), torch.ones(n)
        )


def test_training_recovers_parameters_to_bin_resolution():
    toy = _LinearToy()
    m = _model()
    losses = []
    train_binned(
        toy,
        m,
        BinnedTrainingConfig(steps=300, batch_size=256, lr=3e-3, seed=0),
        callback=lambda step, loss: losses.append(loss),
    )
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 2.0
    test = toy.simulate(500, torch.Generator().manual_seed(99))
    draws = m.sample(test.images, 200, torch.Generator().manual_seed(3))
    med = draws.median(dim=1).values
    err = (med - test.theta).abs().median(dim=0).values
    # noise 0.05 of the half-range = 2.5 % of the range; bins are 5–10 % of the range
    width = DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()
    assert torch.all(err / width < 0.06), err / width
    lp = m.log_prob(test.theta, test.images)
    # the prior density is −log V = −3.53; one bin in every dimension would give +7.0
    assert torch.isfinite(lp).all() and float(lp.mean()) > 0.5


# --------------------------------------------------------------- benchmarks/baselines.py helpers
def test_summary_statistics_are_the_diagnostics_ones():
    """summarise: log score and widths from the library, the rest from evaluate."""
    from benchmarks.baselines import MethodOutput, summarise
    from sbicluster.diagnostics import evaluate
    from sbicluster.diagnostics.accuracy import negative_log_density, width_summary

    rng = np.random.default_rng(3)
    lp = rng.normal(-2.0, 1.5, 400)
    score = negative_log_density(lp)
    assert score["mean"] == pytest.approx(2.0, abs=0.2) and score["median"] == -np.median(lp)
    assert score["stderr"] == pytest.approx(1.5 / 20, rel=0.1)
    names = list(DEFAULT_PRIOR.names)
    theta = rng.standard_normal((60, 4))
    draws = theta[:, None] + 0.5 * rng.standard_normal((60, 300, 4))
    lp_true, lp_draws = rng.normal(size=60), rng.normal(size=(60, 300))
    widths = width_summary(draws, names)
    assert widths["log_age"]["mean"] == pytest.approx(0.5, rel=0.1)
    out = MethodOutput(draws, lp_true, lp_draws, 0.25)
    summary = summarise(out, theta, names, seed=4)
    metrics = evaluate(
        theta,
        draws,
        names=names,
        log_prob_true=lp_true,
        log_prob_samples=lp_draws,
        tie_rng=np.random.default_rng(4),
    )
    assert {k: w["median"] for k, w in summary["width"].items()} == metrics["median_width_overall"]
    assert summary["accuracy"] == metrics["accuracy"]["overall"]
    assert summary["coverage"] == {
        "joint": metrics["coverage"]["joint"],
        **metrics["coverage"]["marginal"],
    }
    assert summary["nlp"] == negative_log_density(lp_true) and summary["seconds_per_cutout"] == 0.25


def test_aperture_pixel_count_matches_aperture_magnitudes():
    from benchmarks.baselines import aperture_pixel_count
    from sbicluster.baselines.photometry import aperture_magnitudes

    images = torch.ones((1, 2, 64, 64))
    for radius in (3.0, 8.0, 12.5):
        b = 1.0
        mag = aperture_magnitudes(images, radius, softening=b)
        flux = 2 * b * torch.sinh(-mag / (2.5 / math.log(10.0)) - math.log(b))
        n = aperture_pixel_count((64, 64), radius)
        assert torch.allclose(flux, torch.full_like(flux, float(n)), rtol=1e-4)
        assert abs(n - math.pi * radius**2) < 4 * radius  # a disc, up to its pixelated edge


class _PoolToy(_LinearToy):
    """:class:`_LinearToy` with the attributes :func:`write_dataset` needs, half clusters."""

    observation_shape = (4, 1, 1)

    def card(self):
        return {"name": "linear toy"}

    def simulate(self, n, generator, *, theta=None, label=None):
        assert theta is None and label is None
        batch = super().simulate(n, generator)
        batch.label = (torch.rand(n, generator=generator) < 0.5).long()
        return batch


def test_pool_stream_replays_the_flow_trainers_batches(tmp_path):
    from benchmarks.baselines import PoolStream
    from sbicluster.training import DatasetBatches, write_dataset

    pool = write_dataset(
        _PoolToy(),
        300,
        tmp_path / "pool.h5",
        torch.Generator().manual_seed(0),
        chunk=64,
        progress=False,
    )
    # the trainer's source for TrainingConfig(seed=5, val_size=40, dataset=pool, batch_size=32)
    trainer = DatasetBatches(str(pool), torch.Generator().manual_seed(5), 40)
    stream = PoolStream(pool, seed=5, val_size=40)
    seen = []
    for _ in range(20):  # > 2 epochs of 260 training rows: reshuffles included
        x, y = trainer.next(32), stream.simulate(32, torch.Generator())
        assert torch.equal(x.theta, y.theta) and torch.equal(x.images, y.images)
        assert torch.equal(x.label, y.label)
        seen.append(y.theta)
    assert not bool((torch.cat(seen)[:, None] == stream.validation().theta[None]).all(-1).any())
    stream.close()


@pytest.mark.slow
def test_baselines_benchmark_end_to_end(tmp_path):
    """The whole benchmark at toy size (≈ 1 min on one core): files written, metrics finite."""
    from benchmarks.baselines import main

    res = main(
        [
            "--steps",
            "5",
            "--batch-size",
            "16",
            "--pool",
            "256",
            "--test",
            "32",
            "--samples",
            "100",
            "--embedding",
            "small",
            "--npe-epochs",
            "5",
            "--out-dir",
            str(tmp_path / "out"),
            "--work-dir",
            str(tmp_path / "work"),
        ]
    )
    for ext in ("json", "md", "png"):
        assert (tmp_path / "out" / f"baselines.{ext}").is_file()
    # the results record the flow it trained: the `small` preset's
    saved = json.loads((tmp_path / "out" / "baselines.json").read_text())
    flow = saved["budget"]["flow_architecture"]
    assert (flow["num_transforms"], flow["bins"], flow["hidden_layers"]) == (6, 8, 2)
    assert flow["hidden_features"] == 64
    assert "## (A) Output design" in (tmp_path / "out" / "baselines.md").read_text()
    assert set(res["summary"]) == {"flow", "binned", "npe_phot"}
    for summary in res["summary"].values():
        assert np.isfinite(summary["nlp"]["mean"])
        assert 0.0 <= summary["coverage"]["joint"]["max_abs_deviation"] <= 1.0
        assert summary["coverage"]["joint"]["n"] == 32
        assert set(summary["coverage"]) == {"joint", "log_age", "log_mass", "log_rh", "av"}
