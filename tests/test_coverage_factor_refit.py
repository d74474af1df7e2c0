"""Refitting a recalibrated model's coverage factor (``benchmarks.coverage_factor_refit``).

On the linear-Gaussian toy, a recalibrated model whose factor has been set 1.5× too wide in every
bin is refitted on fresh clusters: the refit detects the over-wide posteriors and returns the
factor to 1 wherever a bin holds enough clusters, records what it replaced, and the refitted
model saves and loads with the new factor. A model without a factor is refused.
"""

import math

import pytest
import torch

from benchmarks.coverage_factor_refit import markdown, refit
from sbicluster.artifact import load_model, save_model
from sbicluster.coverage_factor import CoverageFactorConfig
from sbicluster.errors import InputError
from sbicluster.recalibration import RecalibrationConfig, recalibrate
from simulators.toy import LinearGaussianToy


def test_refit_returns_a_too_wide_factor_to_one_and_saves_it(toy_model_dir, tmp_path):
    model = load_model(toy_model_dir, device="cpu")
    config = RecalibrationConfig(
        n_simulations=2000,
        coverage_factor=CoverageFactorConfig(n_simulations=2000, draws=32, grid=(1.0, 1.5)),
    )
    new = recalibrate(model, LinearGaussianToy(), config)
    fitted = [row["factor"] for row in new.card["recalibration"]["coverage_factor"]["bins"]]
    with torch.no_grad():
        new.base_temperature.factor_log_values.fill_(math.log(1.5))
    record = refit(new, LinearGaussianToy(), n=3000, seed=7, grid=(1.0, 1.5))
    assert record["previous_factors"] == fitted and record["refit_seed"] == 7
    populated = [row for row in record["bins"] if row["n"] >= 500]
    assert populated, record["bins"]
    for row in populated:
        assert row["factor"] == 1.0, row
        # 1.5× too wide leaves the truths far too often inside: a clearly larger error
        assert row["errors_by_factor"]["1.5"] > row["errors_by_factor"]["1"] + 0.1, row
    assert new.card["recalibration"]["coverage_factor"] is record
    save_model(new, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    factors = loaded.base_temperature.factor_log_values.exp().tolist()
    assert factors == pytest.approx([row["factor"] for row in record["bins"]])
    assert "refitted m" in markdown(record, model="toy", seconds=1.0, env={"cpu": "cpu"})


def test_refit_refuses_a_model_without_a_factor(toy_model_dir):
    model = load_model(toy_model_dir, device="cpu")
    with pytest.raises(InputError, match="no coverage factor"):
        refit(model, LinearGaussianToy(), n=2000, seed=0, grid=(1.0, 1.1))
