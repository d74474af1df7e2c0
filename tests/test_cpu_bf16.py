"""bfloat16 autocast of the embedding on CPU (``--cpu-bf16``): the same losses to bfloat16
precision, refused where the CPU has no native bfloat16, and old checkpoints still resume."""

from __future__ import annotations

import pytest
import torch

from sbicluster.errors import InputError
from sbicluster.model import ClusterModel, default_architecture
from sbicluster.training import TrainingConfig, train
from sbicluster.training.config import upgrade_config_dict
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main


def _toy_model_and_batch():
    toy = LinearGaussianToy()
    batch = toy.simulate(64, torch.Generator().manual_seed(1))
    arch = default_architecture("small", len(toy.bands), [1.0] * len(toy.bands))
    torch.manual_seed(0)
    model = ClusterModel(toy.prior, toy.bands, toy.observation_shape, arch).eval()
    return model, batch


def test_cpu_autocast_gives_the_float32_losses_to_bfloat16_precision():
    model, b = _toy_model_and_batch()
    weights = {"classifier": 1.0, "visibility": 0.5}
    args = (b.theta, b.images, b.label, b.visibility)
    with torch.no_grad():
        exact = model.losses(*args, weights=weights, autocast=False)
        half = model.losses(*args, weights=weights, autocast=True)
        features = model.embed(b.images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features_bf16 = model.embed(b.images)
    assert features_bf16.dtype == torch.bfloat16  # the embedding did run in bfloat16
    for key in ("nll", "bce", "mse", "total"):
        assert float(half[key]) == pytest.approx(float(exact[key]), rel=0.02, abs=0.02), key
    assert not torch.equal(features_bf16.float(), features)


def test_cpu_bf16_is_refused_without_native_bfloat16(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("sbicluster.training.loop.cpu_has_bf16", lambda: False)
    config = TrainingConfig(steps=2, batch_size=16, val_size=16, device="cpu", cpu_amp=True)
    with pytest.raises(InputError, match="no native bfloat16"):
        train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    run = run_main(
        capsys,
        "train",
        "--preset",
        "toy",
        "--steps",
        2,
        "--batch-size",
        16,
        "--device",
        "cpu",
        "--cpu-bf16",
        "--out",
        tmp_path / "cli",
    )
    assert_one_line_error(run, "--cpu-bf16", "no native bfloat16")
    assert not (tmp_path / "cli").exists()


def test_training_with_cpu_bf16_records_it(monkeypatch, tmp_path, one_torch_thread):
    monkeypatch.setattr("sbicluster.training.loop.cpu_has_bf16", lambda: True)
    config = TrainingConfig(
        steps=3, batch_size=16, val_size=32, val_every=3, device="cpu", cpu_amp=True
    )
    model = train(LinearGaussianToy(), config, tmp_path / "run", progress=False)
    assert model.card["training"]["amp"] is True
    assert model.card["training"]["config"]["cpu_amp"] is True
    assert all(torch.isfinite(torch.tensor(v)) for v in model.card["metrics"].values())


def test_checkpoints_written_before_cpu_amp_existed_read_as_float32():
    old = TrainingConfig().to_dict()
    del old["cpu_amp"]
    assert upgrade_config_dict(old) == TrainingConfig().to_dict()
