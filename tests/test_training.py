"""Training on the linear-Gaussian toy: the learned posterior matches the analytic one, coverage is
nominal, the classifier separates, and checkpoints resume exactly."""

import os
import signal
import threading

import numpy as np
import pytest
import torch

from sbicluster.artifact import load_model
from sbicluster.inference import predict
from sbicluster.training import DatasetBatches, TrainingConfig, train, write_dataset
from simulators.toy import LinearGaussianToy

TINY = {
    "embedding_overrides": {"width": 8, "blocks": [1], "features": 32},
    "flow_overrides": {"hidden_features": 64, "num_transforms": 6},
}


def _fit(tmp, steps, seed=1):
    toy = LinearGaussianToy(noise=1.5)
    cfg = TrainingConfig(
        embedding="small",
        **TINY,
        steps=steps,
        batch_size=128,
        lr=3e-3,
        warmup_steps=50,
        val_size=512,
        val_every=200,
        patience=0,
        checkpoint_every=10_000,
        seed=seed,
        softening=[20.0, 20.0],
        loss_weights={"classifier": 0.2, "visibility": 0.1},
    )
    return toy, train(toy, cfg, tmp, progress=False)


def _interior(toy, n, seed):
    """Cluster cutouts whose truths lie in the central half of the box (truncation negligible)."""
    g = torch.Generator().manual_seed(seed)
    theta = toy.prior.low() + (toy.prior.high() - toy.prior.low()) * (
        0.25 + 0.5 * torch.rand(n, 4, generator=g)
    )
    return toy.simulate(n, g, theta=theta, label=torch.ones(n))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("fit"), steps=1000)


def _moment_errors(toy, model, n=100):
    batch = _interior(toy, n, seed=5)
    mean, cov = toy.analytic_posterior(batch.images)
    pred = predict(
        model,
        batch.images,
        num_samples=1000,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    sd = cov.diag().sqrt().numpy()
    bias = np.abs(pred.samples.mean(1) - mean.numpy()).mean(0) / sd
    ratio = pred.samples.std(1).mean(0) / sd
    corr_true = (cov / np.outer(sd, sd)).numpy()
    corr = np.mean([np.corrcoef(s.T) for s in pred.samples], axis=0)
    return bias, ratio, np.abs(corr - corr_true).max()


def test_posterior_moments_match_analytic(trained):
    """Mean within 0.35 σ (average |Δμ|/σ per parameter), σ within −20 %/+30 %, correlation
    coefficients within 0.25 of the analytic Gaussian posterior, after 1000 steps."""
    toy, model = trained
    bias, ratio, corr_err = _moment_errors(toy, model)
    assert np.all(bias < 0.35), bias
    assert np.all((ratio > 0.8) & (ratio < 1.3)), ratio
    assert corr_err < 0.25


def test_marginal_coverage_is_nominal(trained):
    """Central credible intervals at 50/68/90 % cover the truth at the nominal rate within ±0.05
    (300 clusters drawn from the prior, 4 parameters pooled)."""
    toy, model = trained
    batch = toy.simulate(300, torch.Generator().manual_seed(11), label=torch.ones(300))
    pred = predict(
        model,
        batch.images,
        num_samples=500,
        generator=torch.Generator().manual_seed(12),
        progress=False,
    )
    truth = batch.theta.numpy()
    for level in (0.5, 0.68, 0.9):
        lo = np.quantile(pred.samples, 0.5 - level / 2, axis=1)
        hi = np.quantile(pred.samples, 0.5 + level / 2, axis=1)
        cover = ((truth >= lo) & (truth <= hi)).mean()
        assert abs(cover - level) <= 0.05, (level, cover)


def test_classifier_and_visibility_heads(trained):
    toy, model = trained
    clusters = _interior(toy, 200, seed=21)
    background = toy.simulate(200, torch.Generator().manual_seed(22), label=torch.zeros(200))
    images = torch.cat([clusters.images, background.images])
    pred = predict(
        model, images, num_samples=2, generator=torch.Generator().manual_seed(0), progress=False
    )
    label = np.r_[np.ones(200), np.zeros(200)]
    assert ((pred.p_cluster > 0.5) == label).mean() >= 0.99
    truth = np.r_[clusters.visibility.numpy(), background.visibility.numpy()]
    assert np.corrcoef(pred.visibility, truth)[0, 1] > 0.9
    assert np.all(pred.visibility[200:] < 0.2 * np.median(truth[:200]))


def test_card_records_training(trained, tmp_path):
    toy, model = trained
    card = model.card
    assert card["training"]["steps_done"] == 1000
    assert card["training"]["config"]["softening"] == [20.0, 20.0]
    assert card["simulator"]["name"] == "linear-gaussian-toy"
    assert card["metrics"]["val_total"] == pytest.approx(
        card["metrics"]["val_nll"]
        + 0.2 * card["metrics"]["val_bce"]
        + 0.1 * card["metrics"]["val_mse"],
        rel=1e-5,
    )


def _tiny_config(**kw):
    base = dict(
        embedding="small",
        **TINY,
        steps=30,
        batch_size=32,
        val_size=64,
        val_every=10,
        checkpoint_every=10,
        seed=3,
        softening=[20.0, 20.0],
    )
    base.update(kw)
    return TrainingConfig(**base)


def test_resume_continues_exactly(tmp_path):
    toy = LinearGaussianToy()
    cfg = _tiny_config()
    straight = train(toy, cfg, tmp_path / "a", progress=False)
    train(toy, cfg, tmp_path / "b", progress=False, stop_after_steps=13)
    assert (tmp_path / "b" / "checkpoint" / "state.json").is_file()
    resumed = train(toy, cfg, tmp_path / "b", resume=True, progress=False)
    for (k, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    log_a = (tmp_path / "a" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(log_a) == len(log_b) == 4  # header + 3 validations
    assert load_model(tmp_path / "b" / "model").card["training"]["steps_done"] == 30


def test_resume_with_other_config_is_refused(tmp_path):
    toy = LinearGaussianToy()
    train(toy, _tiny_config(), tmp_path, progress=False, stop_after_steps=10)
    from sbicluster.errors import InputError

    with pytest.raises(InputError, match="different configuration"):
        train(toy, _tiny_config(lr=0.5), tmp_path, resume=True, progress=False)


def test_sigint_writes_checkpoint_and_model_then_raises(tmp_path):
    from sbicluster.errors import TrainingInterrupted

    toy = LinearGaussianToy()
    cfg = _tiny_config(steps=100_000, val_every=1000, checkpoint_every=100_000)
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(TrainingInterrupted) as caught:
            train(toy, cfg, tmp_path, progress=False)
    finally:
        timer.cancel()
    err = caught.value
    assert (err.signal, err.exit_code) == ("SIGINT", 130)
    assert err.checkpoint == tmp_path / "checkpoint"
    assert err.model.card["training"]["stop_reason"] == "signal SIGINT"
    assert 0 < err.step == err.model.card["training"]["steps_done"] < 100_000
    assert (tmp_path / "checkpoint" / "state.safetensors").is_file()
    assert (tmp_path / "model" / "card.json").is_file()


def test_every_stop_writes_a_checkpoint_and_complete_runs_are_not_resumed(tmp_path):
    """Step limit and early stopping checkpoint too; their runs are complete, so resuming says so
    (one line, nothing changed); a time-budget stop resumes with a fresh budget."""
    import time

    from sbicluster.errors import InputError, OutputExistsError
    from sbicluster.training.checkpoint import read_checkpoint_meta

    toy = LinearGaussianToy()
    train(toy, _tiny_config(steps=20), tmp_path / "steps", progress=False)
    assert read_checkpoint_meta(tmp_path / "steps" / "checkpoint")["stop_reason"] == "steps"
    before = (tmp_path / "steps" / "checkpoint" / "state.json").read_bytes()
    with pytest.raises(InputError, match="is complete .*step limit after 20 steps"):
        train(toy, _tiny_config(steps=20), tmp_path / "steps", resume=True, progress=False)
    with pytest.raises(OutputExistsError, match="--resume .*--overwrite"):
        train(toy, _tiny_config(steps=20), tmp_path / "steps", progress=False)
    assert (tmp_path / "steps" / "checkpoint" / "state.json").read_bytes() == before

    # a budget of 0 s stops before the first step; each resume gets a fresh budget of 1 s
    cfg = _tiny_config(steps=100_000, max_time_s=0.0, val_every=10**6, checkpoint_every=10**6)
    train(toy, cfg, tmp_path / "budget", progress=False)
    meta = read_checkpoint_meta(tmp_path / "budget" / "checkpoint")
    assert (meta["stop_reason"], meta["step"]) == ("time budget", 0)
    cfg = _tiny_config(steps=100_000, max_time_s=1.0, val_every=10**6, checkpoint_every=10**6)
    train(toy, cfg, tmp_path / "budget", overwrite=True, progress=False)
    first = read_checkpoint_meta(tmp_path / "budget" / "checkpoint")
    assert first["stop_reason"] == "time budget" and first["step"] > 0
    t0 = time.perf_counter()
    model = train(toy, cfg, tmp_path / "budget", resume=True, progress=False)
    assert time.perf_counter() - t0 > 1.0
    again = read_checkpoint_meta(tmp_path / "budget" / "checkpoint")
    assert again["stop_reason"] == "time budget" and again["step"] > first["step"]
    assert again["elapsed_s"] > first["elapsed_s"] + 1.0
    assert model.card["training"]["steps_done"] == again["step"]


def test_training_from_hdf5_dataset(tmp_path):
    toy = LinearGaussianToy()
    path = write_dataset(
        toy, 400, tmp_path / "data.h5", torch.Generator().manual_seed(0), chunk=128, progress=False
    )
    cfg = _tiny_config(dataset=str(path), steps=20, val_size=100)
    a = train(toy, cfg, tmp_path / "a", progress=False)
    b = train(toy, cfg, tmp_path / "b", progress=False, stop_after_steps=7)
    b = train(toy, cfg, tmp_path / "b", resume=True, progress=False)
    assert np.isfinite(a.card["metrics"]["val_total"])
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_dataset_batches_return_file_rows_each_training_row_once_per_epoch(tmp_path):
    import h5py

    toy = LinearGaussianToy()
    path = write_dataset(
        toy, 300, tmp_path / "data.h5", torch.Generator().manual_seed(1), chunk=128, progress=False
    )
    reader = DatasetBatches(str(path), torch.Generator().manual_seed(2), val_size=60)
    with h5py.File(path) as f:
        theta, images = torch.as_tensor(f["theta"][:]), torch.as_tensor(f["images"][:])
    epoch = torch.cat([reader.next(40).theta for _ in range(6)])  # 240 rows = one epoch
    rows = (epoch[:, None, :] == theta[None]).all(-1).nonzero()[:, 1]
    assert sorted(rows.tolist()) == list(range(240))  # every training row once, no validation row
    b = reader.next(16)  # new epoch: images stay paired with their parameters
    match = (b.theta[:, None, :] == theta[None]).all(-1).nonzero()[:, 1]
    assert torch.equal(b.images, images[match].float())
    assert torch.equal(reader.validation().theta, theta[240:])


@pytest.mark.slow
def test_posterior_moments_match_analytic_tightly(tmp_path):
    """Longer training (6000 steps): mean within 0.2 σ, σ within ±15 %, correlations within 0.12."""
    toy, model = _fit(tmp_path, steps=6000)
    bias, ratio, corr_err = _moment_errors(toy, model)
    assert np.all(bias < 0.2), bias
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio
    assert corr_err < 0.12
