"""Warm starts (``TrainingConfig.init_from``, ``sbicluster train --init-from``): a run that begins
from a trained model's network starts where that model ended (its weights, normalisation and
validation loss), records where it came from, resumes without it, and refuses a model it cannot
continue before anything is written."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from sbicluster.artifact import load_model
from sbicluster.errors import InputError
from sbicluster.training import TrainingConfig, train
from simulators.priors import DEFAULT_PRIOR
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "embedding_overrides": {"width": 8, "blocks": [1], "features": 32},
    "flow_overrides": {"hidden_features": 32, "num_transforms": 3},
}


def _config(**kw) -> TrainingConfig:
    base = dict(
        embedding="small",
        **TINY,
        steps=60,
        batch_size=64,
        lr=3e-3,
        warmup_steps=10,
        val_size=256,
        val_every=20,
        patience=0,
        checkpoint_every=20,
        seed=5,
        device="cpu",
        softening=[20.0, 20.0],
    )
    base.update(kw)
    return TrainingConfig(**base)


def _val_nll(run: Path) -> list[float]:
    with (run / "log.csv").open() as handle:
        return [float(row["val_nll"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A toy model trained for 60 steps (softening given, so a warm start must keep it)."""
    run = tmp_path_factory.mktemp("source")
    train(LinearGaussianToy(), _config(softening=[13.0, 29.0]), run, progress=False)
    return run / "model"


def test_a_warm_start_begins_with_the_source_network(source, tmp_path):
    # at a negligible learning rate the first steps leave the source's weights as they were, so
    # the run's first validation (on the source's validation set: same seed) is the source's,
    # far below a new network's
    toy = LinearGaussianToy()
    warm = train(
        toy,
        _config(init_from=str(source), lr=1e-12, steps=20),
        tmp_path / "warm",
        progress=False,
    )
    original = load_model(source)
    for (name, a), (_, b) in zip(original.named_parameters(), warm.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8, msg=name)
    assert warm.embedding.normalise.softening.tolist() == pytest.approx([13.0, 29.0])
    train(toy, _config(lr=1e-12, steps=20), tmp_path / "fresh", progress=False)
    # (batch normalisation's running statistics follow the 20 training batches, so the first
    # validation moves a little even with the weights unchanged)
    source_nll = original.card["metrics"]["val_nll"]
    warm_nll, fresh_nll = _val_nll(tmp_path / "warm")[0], _val_nll(tmp_path / "fresh")[0]
    assert warm_nll == pytest.approx(source_nll, abs=0.2), (warm_nll, source_nll)
    assert fresh_nll > source_nll + 1.0, (fresh_nll, source_nll)


def test_training_on_from_a_warm_start_improves_on_the_source(source, tmp_path):
    warm = train(
        LinearGaussianToy(),
        _config(init_from=str(source), lr=1e-3, steps=60, seed=7),
        tmp_path / "warm",
        progress=False,
    )
    assert warm.card["metrics"]["val_nll"] < load_model(source).card["metrics"]["val_nll"]


def test_the_card_records_the_source(source, tmp_path):
    train(
        LinearGaussianToy(),
        _config(init_from=str(source), steps=20, seed=6),
        tmp_path / "warm",
        progress=False,
    )
    card = load_model(tmp_path / "warm" / "model").card
    record = card["training"]["initialised_from"]
    digest = hashlib.sha256((source / "weights.safetensors").read_bytes()).hexdigest()
    assert record["weights_sha256"] == digest
    assert record["steps_done"] == 60 and record["stop_reason"] == "steps"
    assert card["training"]["config"]["init_from"] == str(source)
    # a warm start of a warm start keeps the whole chain
    train(
        LinearGaussianToy(),
        _config(init_from=str(tmp_path / "warm" / "model"), steps=20, seed=8),
        tmp_path / "again",
        progress=False,
    )
    chain = load_model(tmp_path / "again" / "model").card["training"]["initialised_from"]
    assert chain["initialised_from"]["weights_sha256"] == digest
    assert load_model(source).card["training"]["initialised_from"] is None


def test_a_warm_started_run_resumes_exactly_without_its_source(source, tmp_path):
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    config = _config(init_from=str(copy), lr=1e-3, steps=40, seed=9)
    straight = train(LinearGaussianToy(), config, tmp_path / "a", progress=False)
    train(LinearGaussianToy(), config, tmp_path / "b", progress=False, stop_after_steps=20)
    shutil.rmtree(copy)
    resumed = train(LinearGaussianToy(), config, tmp_path / "b", resume=True, progress=False)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding_overrides": {"width": 16, "blocks": [1], "features": 32}}, "architecture"),
        ({"flow_overrides": {"hidden_features": 32, "num_transforms": 4}}, "architecture"),
        ({"init_from": "no/such/model"}, "does not exist"),
    ],
)
def test_a_model_the_run_cannot_continue_is_refused_before_anything_is_written(
    source, tmp_path, change, message
):
    config = _config(**{"init_from": str(source), **change})
    with pytest.raises(InputError, match=message):
        train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_other_bands_and_other_priors_are_refused(source, tmp_path):
    config = _config(init_from=str(source))
    other_bands = LinearGaussianToy(bands=("toy_u", "toy_i"))
    with pytest.raises(InputError, match="bands"):
        train(other_bands, config, tmp_path / "run", progress=False)
    heavier = LinearGaussianToy(prior=DEFAULT_PRIOR.with_bounds(log_mass=(3.0, 6.0)))
    with pytest.raises(InputError, match="prior"):
        train(heavier, config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_recalibrated_model_is_refused_with_what_to_do(tmp_path):
    # the shipped default is recalibrated: its flow ends in a fitted base temperature
    from simulators.registry import simulator_for_preset

    config = _config(
        embedding="cpu", embedding_overrides=None, flow_overrides=None, init_from="default"
    )
    with pytest.raises(InputError, match="recalibrated.*as trained"):
        train(simulator_for_preset("m83-wfc3"), config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--init-from", "no/such/model"], "--init-from no/such/model"),
        (["--lr", "0"], "--lr 0.0"),
        (["--lr=-1e-3"], "--lr -0.001"),
        (["--lr", "nan"], "--lr nan"),
    ],
)
def test_bad_warm_start_options_exit_2_with_one_line_and_write_nothing(
    capsys, tmp_path, args, fragment
):
    run = tmp_path / "run"
    result = run_main(
        capsys, "train", "--preset", "toy", "--embedding", "small", "--out", run, *args
    )
    assert_one_line_error(result, fragment)
    assert not run.exists()
