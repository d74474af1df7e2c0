"""The parts of the training package on their own: the learning-rate schedule, the tracker's log
files, reading configurations with old field names, and the layout of a pre-simulated pool."""

import csv
import json

import numpy as np
import pytest
import torch

from sbicluster.errors import InputError
from sbicluster.training import (
    DatasetBatches,
    OnlineSource,
    TrainingConfig,
    TrainingData,
    train,
    write_dataset,
)
from sbicluster.training.config import upgrade_config_dict
from sbicluster.training.data import VALIDATION_SEED_OFFSET
from sbicluster.training.schedule import lr_at
from sbicluster.training.tracking import Tracker, logged_terms
from simulators.base import iter_simulation_chunks
from simulators.toy import LinearGaussianToy

TINY = {
    "embedding": "small",
    "embedding_overrides": {"width": 8, "blocks": [1], "features": 32},
    "flow_overrides": {"hidden_features": 64, "num_transforms": 6},
}


# ---------------------------------------------------------------------------- schedule
def test_warmup_is_linear_and_reaches_the_peak_rate():
    cfg = TrainingConfig(lr=2e-3, warmup_steps=10, steps=110, min_lr_ratio=0.05)
    assert lr_at(0, cfg) == pytest.approx(2e-4)
    assert lr_at(4, cfg) == pytest.approx(1e-3)
    assert lr_at(9, cfg) == pytest.approx(2e-3)  # last warm-up step: the peak
    assert lr_at(10, cfg) == pytest.approx(2e-3)  # cosine starts at the peak


def test_cosine_decays_to_the_final_rate_at_the_step_limit_or_the_time_budget():
    cfg = TrainingConfig(lr=2e-3, warmup_steps=10, steps=110, min_lr_ratio=0.05)
    assert lr_at(60, cfg) == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5))  # half-way: cos = 0
    assert lr_at(110, cfg) == pytest.approx(2e-3 * 0.05)
    assert lr_at(500, cfg) == pytest.approx(2e-3 * 0.05)  # never below lr · min_lr_ratio
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    # a spent time budget ends the decay whatever the step
    assert lr_at(20, cfg, time_frac=1.0) == pytest.approx(2e-3 * 0.05)
    assert lr_at(20, cfg, time_frac=0.5) == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5))


# ---------------------------------------------------------------------------- tracker
def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_tracker_writes_header_and_rows_and_appends_on_resume(tmp_path):
    terms = logged_terms({"classifier": 1.0})
    assert terms == ("total", "nll", "bce", "mse")
    assert logged_terms({"balance": 3.0})[-1] == "balance"
    val = {"total": 1.5, "nll": 1.0, "bce": 0.25, "mse": 0.5, "balance": 9.0}
    with Tracker(tmp_path, terms, total_steps=20, progress=False) as tracker:
        row = tracker.log(10, 1.23456, 1e-3, {"total": 2.0, "nll": 1.5}, val)
    assert row["elapsed_s"] == 1.235 and np.isnan(row["train_bce"])
    header = ["step", "elapsed_s", "lr"]
    header += [f"{s}_{k}" for s in ("train", "val") for k in terms]
    assert _rows(tmp_path / "log.csv") == [
        header,
        ["10", "1.235", "0.001", "2.0", "1.5", "nan", "nan", "1.5", "1.0", "0.25", "0.5"],
    ]
    with Tracker(tmp_path, terms, total_steps=20, append=True, progress=False) as tracker:
        tracker.log(20, 2.0, 5e-4, val, val)
    rows = _rows(tmp_path / "log.csv")
    assert len(rows) == 3 and rows[0] == header and rows[2][0] == "20"
    with Tracker(tmp_path, terms, total_steps=20, progress=False):  # a new run starts afresh
        pass
    assert _rows(tmp_path / "log.csv") == [header]


def test_tracker_writes_the_logged_values_as_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    terms = logged_terms({})
    val = {"total": 1.5, "nll": 1.0, "bce": 0.25, "mse": 0.5}
    with Tracker(tmp_path, terms, total_steps=20, progress=False, tensorboard=True) as tracker:
        tracker.log(10, 1.0, 1e-3, val, val)
        tracker.log(20, 2.0, 5e-4, val, {**val, "total": 0.75})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(_rows(tmp_path / "log.csv")[0]) - {"step"}
    val_total = events.Scalars("val_total")
    assert [e.step for e in val_total] == [10, 20]
    assert [e.value for e in val_total] == [1.5, 0.75]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([1e-3, 5e-4])


# ---------------------------------------------------------------------------- old field names
OLD_FIELDS = {"preset": "cpu", "embedding": {"width": 8}, "flow": {"bins": 4}, "steps": 7}


def test_configurations_with_the_old_field_names_load():
    cfg = TrainingConfig.from_dict(OLD_FIELDS)
    assert cfg.embedding == "cpu" and cfg.steps == 7
    assert cfg.embedding_overrides == {"width": 8} and cfg.flow_overrides == {"bins": 4}
    new = TrainingConfig(embedding="paper", embedding_overrides={"pool": "max"})
    assert TrainingConfig.from_dict(new.to_dict()) == new
    assert upgrade_config_dict(new.to_dict()) == new.to_dict()
    with pytest.raises(InputError, match="unknown training configuration fields"):
        TrainingConfig.from_dict({**new.to_dict(), "embeding": "cpu"})


def test_the_shipped_cards_configuration_loads():
    from pathlib import Path

    import sbicluster

    card = json.loads(
        (Path(sbicluster.__file__).parent / "models" / "default" / "card.json").read_text()
    )
    cfg = TrainingConfig.from_dict(card["training"]["config"])
    expected = card["training"]["config"].get("preset", card["training"]["config"].get("embedding"))
    assert cfg.embedding == expected == "cpu"


def _to_old_names(config: dict) -> dict:
    old = {k: v for k, v in config.items() if k not in TINY}
    return {
        "preset": config["embedding"],
        "embedding": config["embedding_overrides"],
        "flow": config["flow_overrides"],
        **old,
    }


def test_checkpoint_with_old_field_names_resumes_exactly(tmp_path):
    toy = LinearGaussianToy()
    cfg = TrainingConfig(
        **TINY,
        steps=12,
        batch_size=32,
        val_size=64,
        val_every=6,
        checkpoint_every=100,
        seed=4,
        softening=[20.0, 20.0],
        device="cpu",
    )
    straight = train(toy, cfg, tmp_path / "a", progress=False)
    train(toy, cfg, tmp_path / "b", progress=False, stop_after_steps=5)
    state = tmp_path / "b" / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    meta["config"] = _to_old_names(meta["config"])
    state.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"different configuration \(fields \['embedding'\]\)"):
        train(toy, TrainingConfig(**{**cfg.to_dict(), "embedding": "cpu"}), tmp_path / "b",
              resume=True, progress=False)  # fmt: skip
    resumed = train(toy, cfg, tmp_path / "b", resume=True, progress=False)
    for (k, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert resumed.card["training"]["config"]["embedding"] == "small"


def test_cli_options_are_the_configs_fields(tmp_path):
    from sbicluster.cli import main

    main(["train", "--preset", "toy", "--embedding", "small", "--steps", "2", "--device", "cpu",
          "--tensorboard", "--out", str(tmp_path / "run")])  # fmt: skip
    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["training"]["config"]["embedding"] == "small"
    assert card["training"]["config"]["tensorboard"] is True
    assert "preset" not in card["training"]["config"]
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------- data sources
def test_both_sources_are_training_data_and_online_validation_is_fixed(tmp_path):
    toy = LinearGaussianToy()
    online = OnlineSource(toy, seed=2, val_size=16)
    assert isinstance(online, TrainingData)
    assert online.validation() is online.validation()
    # the validation stream is separate from the training stream, seeded with seed + offset
    gen = torch.Generator().manual_seed(2 + VALIDATION_SEED_OFFSET)
    assert torch.equal(online.validation().images, toy.simulate(16, gen).images)
    first = online.next(8)
    online_again = OnlineSource(toy, seed=2, val_size=16)
    assert torch.equal(online_again.next(8).images, first.images)
    path = write_dataset(toy, 40, tmp_path / "p.h5", torch.Generator(), progress=False)
    reader = DatasetBatches(str(path), torch.Generator(), val_size=8)
    assert isinstance(reader, TrainingData)
    reader.close()


# ---------------------------------------------------------------------------- pool layout
def test_pool_is_contiguous_and_holds_the_chunked_simulation_stream(tmp_path):
    import h5py

    toy = LinearGaussianToy()
    path = write_dataset(
        toy, 150, tmp_path / "pool.h5", torch.Generator().manual_seed(9), chunk=64, progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.h5"]  # no temporary left
    expected = list(iter_simulation_chunks(toy, 150, torch.Generator().manual_seed(9), chunk=64))
    with h5py.File(path) as f:
        assert {k: (f[k].shape, f[k].dtype.str, f[k].chunks) for k in f} == {
            "theta": ((150, 4), "<f4", None),
            "images": ((150, *toy.observation_shape), "<f4", None),
            "label": ((150,), "<i8", None),
            "visibility": ((150,), "<f4", None),
        }
        assert json.loads(f.attrs["simulator_card"]) == json.loads(
            json.dumps(toy.card(), default=float)
        )
        for k in ("theta", "images", "label", "visibility"):
            want = torch.cat([getattr(b, k) for b in expected]).numpy()
            assert np.array_equal(f[k][:], want.astype(f[k].dtype)), k


def test_contiguous_pools_are_memory_mapped_and_chunked_ones_read_row_by_row(tmp_path):
    """The same epoch from a contiguous pool (memory-mapped) and from a chunked, compressed copy
    (h5py rows): identical batches, equal to the rows stored."""
    import h5py

    from sbicluster.training.data import image_rows

    toy = LinearGaussianToy()
    path = write_dataset(
        toy, 120, tmp_path / "pool.h5", torch.Generator().manual_seed(3), progress=False
    )
    chunked = tmp_path / "chunked.h5"
    with h5py.File(path) as src, h5py.File(chunked, "w") as dst:
        for k in src:
            dst.create_dataset(k, data=src[k][:], chunks=True, compression="gzip")
        dst.attrs["simulator_card"] = src.attrs["simulator_card"]
        stored = src["images"][:]
    with h5py.File(path) as f, h5py.File(chunked) as g:
        assert isinstance(image_rows(f, path), np.memmap)
        assert not isinstance(image_rows(g, chunked), np.memmap)
    mapped = DatasetBatches(str(path), torch.Generator().manual_seed(5), val_size=20)
    rows = DatasetBatches(str(chunked), torch.Generator().manual_seed(5), val_size=20)
    for _ in range(4):  # crosses an epoch boundary (100 training rows, batches of 32)
        a, b = mapped.next(32), rows.next(32)
        assert torch.equal(a.images, b.images) and torch.equal(a.theta, b.theta)
        index = np.sort(mapped.order[mapped.pos - 32 : mapped.pos])
        assert np.array_equal(a.images.numpy(), stored[index])
    assert torch.equal(mapped.validation().images, torch.as_tensor(stored[100:]))
    mapped.close()
    rows.close()
