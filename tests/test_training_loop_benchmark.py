"""The whole-loop training benchmark: its rate is the training record's, and it runs end to end."""

from __future__ import annotations

import json

import pytest

from benchmarks.training_loop import loop_rate, main, parse_field_settings
from sbicluster.devices import cpu_has_bf16

HEADER = "step,elapsed_s,lr,train_total,train_nll,train_bce,train_mse,val_total,val_nll,val_bce,val_mse\n"


def test_loop_rate_is_samples_to_the_last_validation_over_its_time(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER + "100,20.0,1,0,0,0,0,0,0,0,0\n200,50.0,1,0,0,0,0,0,0,0,0\n")
    rate = loop_rate(log, batch_size=128)
    assert rate["steps"] == 200
    assert rate["samples"] == 200 * 128
    assert rate["samples_per_s"] == pytest.approx(200 * 128 / 50.0)


def test_loop_rate_refuses_a_run_without_validation(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(HEADER)
    with pytest.raises(ValueError, match="no validation row"):
        loop_rate(log, batch_size=64)


def test_candidate_settings_are_read_as_json_fields():
    assert parse_field_settings(["retain_freed_memory=false", "batch_size=64"]) == {
        "retain_freed_memory": False,
        "batch_size": 64,
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch_size", "FIELD=VALUE"),
        ("no_such_field=1", "no training configuration field"),
        ("batch_size=sixty", "not JSON"),
    ],
)
def test_bad_candidate_settings_are_refused_before_any_work(tmp_path, capsys, setting, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--candidate-set", setting, "--results-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not cpu_has_bf16(),
    reason="the shipped card trains with --cpu-bf16, which needs native bfloat16 (AVX512-BF16 "
    "or AMX); on other CPUs the benchmark refuses it, as training does",
)
def test_quick_run_compares_the_two_recorded_configurations(tmp_path):
    res = main(["--quick", "--rounds", "1", "--results-dir", str(tmp_path)])
    written = json.loads((tmp_path / "training_loop.json").read_text())
    assert written["speedup"] == pytest.approx(res["speedup"])
    assert set(written["configs"]) == {"baseline", "candidate"}
    assert "float32, batch 64" in written["configs"]["baseline"]
    assert "bfloat16 autocast, batch 128, 8 views" in written["configs"]["candidate"]
    # the previous default ran with none of the speed-only settings; the candidate has them all
    assert written["configs"]["baseline"].endswith(
        "in chunks of 512, system allocator, AdamW looping over tensors"
    )
    assert written["configs"]["candidate"].endswith(
        "in chunks of 128, freed memory retained, fused AdamW"
    )
    for name in ("baseline", "candidate"):
        run = written["rounds"][0][name]
        assert run["steps"] > 0 and run["samples_per_s"] > 0
    assert "Whole training loop" in (tmp_path / "training_loop.md").read_text()


@pytest.mark.slow
def test_quick_run_in_float32_runs_on_any_cpu(tmp_path):
    """The benchmark's whole machinery (pool, alternating processes, records) on a CPU without
    native bfloat16 too: the candidate keeps its batch and views but trains in float32."""
    res = main(
        [
            "--quick",
            "--rounds",
            "1",
            "--candidate-set",
            "cpu_amp=false",
            "--results-dir",
            str(tmp_path),
        ]
    )
    written = json.loads((tmp_path / "training_loop.json").read_text())
    assert written["speedup"] == pytest.approx(res["speedup"])
    assert "float32, batch 64" in written["configs"]["baseline"]
    assert "float32, batch 128, 8 views" in written["configs"]["candidate"]
    for name in ("baseline", "candidate"):
        run = written["rounds"][0][name]
        assert run["steps"] > 0 and run["samples_per_s"] > 0
