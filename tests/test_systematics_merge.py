"""Merging per-model systematics runs: every model kept once, each part's command and date named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.systematics import merge_runs

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "systematics.json"


def _split(tmp_path: Path) -> list[Path]:
    """The committed merged record split back into one run per model, with dates of their own."""
    record = json.loads(RESULTS.read_text())
    folders = []
    for i, (label, model) in enumerate(record["models"].items()):
        run = {k: v for k, v in record.items() if k != "merged_from"}
        run["models"] = {label: model}
        run["environment"] = {
            **record["environment"],
            "command": f"python benchmarks/systematics.py --models {label}",
            "date_utc": f"2026-01-0{i + 1}T00:00:00Z",
        }
        folder = tmp_path / label
        folder.mkdir()
        (folder / "systematics.json").write_text(json.dumps(run))
        folders.append(folder)
    return folders


def test_merge_keeps_every_model_and_dates_each_part(tmp_path):
    folders = _split(tmp_path)
    merged = merge_runs(folders, out=tmp_path / "out")
    record = json.loads(RESULTS.read_text())
    assert merged["models"] == record["models"]
    md = (tmp_path / "out" / "systematics.md").read_text()
    for i, label in enumerate(record["models"]):
        assert (
            f"`python benchmarks/systematics.py --models {label}` (2026-01-0{i + 1}T00:00:00Z)"
            in md
        )


def test_merge_refuses_a_model_measured_twice(tmp_path):
    folders = _split(tmp_path)
    with pytest.raises(ValueError, match="more than one run"):
        merge_runs([folders[0], folders[0]], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
