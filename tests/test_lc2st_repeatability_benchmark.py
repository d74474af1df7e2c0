"""The L-C2ST repeatability benchmark: same data and probes for every model, one run per seed."""

from __future__ import annotations

import json

import pytest

from benchmarks.lc2st_repeatability import main


@pytest.mark.slow
def test_quick_run_repeats_the_test_per_seed_on_fixed_data(tmp_path):
    res = main(["--quick", "--labels", "shipped", "--results-dir", str(tmp_path)])
    written = json.loads((tmp_path / "lc2st_repeatability.json").read_text())
    runs = written["models"]["shipped"]["runs"]
    assert [r["seed"] for r in runs] == res["seeds"] == [0, 1]
    for run in runs:
        assert 0.0 <= run["fraction_not_rejected"] <= 1.0
        assert len(run["rejected_probes"]) == round(
            (1 - run["fraction_not_rejected"]) * written["n_probes"]
        )
    assert "| `shipped` |" in (tmp_path / "lc2st_repeatability.md").read_text()


def test_labels_must_name_every_model(tmp_path):
    with pytest.raises(SystemExit, match="one name per model"):
        main(["--quick", "--labels", "a", "b", "--results-dir", str(tmp_path)])
    assert not (tmp_path / "lc2st_repeatability.json").exists()
