"""Refitting a recalibrated model's coverage factor (``benchmarks.coverage_factor_refit``).

On the linear-Gaussian toy, a recalibrated model whose factor has been set 1.5× too wide in every
bin is refitted on fresh clusters: the refit detects the over-wide posteriors and returns the
factor to 1 wherever a bin holds enough clusters and is not kept, holds a kept bin at its
previous factor, records what it replaced, and the refitted model saves and loads with the new
factors. A model without a factor is refused.
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
    # every bin 1.5× too wide, as the card now says too; bin 0 is kept at that (wrong) 1.5, so
    # the refit's own choice (1) must not reach its weights
    for row in new.card["recalibration"]["coverage_factor"]["bins"]:
        row["factor"] = 1.5
    with torch.no_grad():
        new.base_temperature.factor_log_values.fill_(math.log(1.5))
    record = refit(new, LinearGaussianToy(), n=3000, seed=7, grid=(1.0, 1.5), keep=[0])
    assert record["previous_factors"] == [1.5, 1.5, 1.5] and record["refit_seed"] == 7
    assert record["kept_bins"] == [0] and record["bins"][0]["factor"] == 1.5
    assert record["bins"][0]["fitted_factor"] == 1.0
    populated = [row for row in record["bins"][1:] if row["n"] >= 500]
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
    assert factors[0] == pytest.approx(1.5)  # the kept bin
    report = markdown(record, model="toy", seconds=1.0, env={"cpu": "cpu"})
    assert "(kept)" in report and "| true visibility | n |" in report
    assert "worst marginal" in report
    # a kept factor off the grid is refused before any simulation
    with pytest.raises(InputError, match="not on the grid"):
        refit(new, LinearGaussianToy(), n=3000, seed=7, grid=(1.0, 1.1), keep=[0])


def test_refit_refuses_a_model_without_a_factor(toy_model_dir):
    model = load_model(toy_model_dir, device="cpu")
    with pytest.raises(InputError, match="no coverage factor"):
        refit(model, LinearGaussianToy(), n=2000, seed=0, grid=(1.0, 1.1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exists; pass --overwrite"),
        (["--overwrite", "--keep", "7"], "bins are 0 to 2"),
        (["--overwrite", "--criterion", "observed"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(toy_model_dir, tmp_path, capsys, extra, message):
    """An existing --out without --overwrite, or a bin that does not exist: exit 2, one line,
    the existing folder untouched."""
    from benchmarks.coverage_factor_refit import main

    recalibrated = tmp_path / "recal"
    config = RecalibrationConfig(
        n_simulations=1000,
        coverage_factor=CoverageFactorConfig(n_simulations=2000, draws=16, grid=(1.0, 1.2)),
    )
    save_model(recalibrate(load_model(toy_model_dir), LinearGaussianToy(), config), recalibrated)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                str(recalibrated),
                "--out",
                str(out),
                "--n",
                "2000",
                "--results",
                str(tmp_path / "res"),
                *extra,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "res").exists()
