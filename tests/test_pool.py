"""Sharded simulation pools: Dask scheduling, seeding, resume, the reader, and the commands."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from sbicluster.pool import (
    INDEX_NAME,
    pool_shard_paths,
    pool_status,
    read_index,
    shard_name,
    shard_seed,
    simulate_pool,
)
from sbicluster.training import DatasetBatches
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main

SIZES = (16, 16, 8)


def _images(folder, i):
    with h5py.File(folder / shard_name(i), "r") as f:
        return f["images"][:]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool") / "p"
    simulate_pool(LinearGaussianToy(), sum(SIZES), 16, folder, seed=3, workers=1, progress=False)
    return folder


def test_shard_seeds_are_distinct_and_reproducible():
    seeds = [shard_seed(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert seeds == [shard_seed(7, i) for i in range(1000)]
    assert shard_seed(8, 0) != shard_seed(7, 0)


def test_pool_has_its_shards_and_a_complete_index(pool):
    index = read_index(pool)
    assert index["status"] == "complete" and index["shard_sizes"] == list(SIZES)
    assert index["simulator_card"] == json.loads(json.dumps(LinearGaussianToy().card()))
    assert [_images(pool, i).shape[0] for i in range(3)] == list(SIZES)
    # shards draw independent streams: no two shards share a cutout
    first = [_images(pool, i)[0] for i in range(3)]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


def test_a_killed_run_resumes_with_only_the_missing_shard_and_the_same_bytes(pool, tmp_path):
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(pool, copy)
    (copy / shard_name(1)).unlink()
    index = json.loads((copy / INDEX_NAME).read_text())
    (copy / INDEX_NAME).write_text(json.dumps({**index, "status": "incomplete"}))
    assert pool_status(copy).missing == [1]
    with pytest.raises(Exception, match="incomplete: 1 of 3 shards missing"):
        pool_shard_paths(copy)
    done = []
    simulate_pool(
        LinearGaussianToy(), sum(SIZES), 16, copy, seed=3, progress=False, on_shard=done.append
    )
    assert done == [1]
    for i in range(3):
        assert np.array_equal(_images(copy, i), _images(pool, i))
    # a complete pool: the same command again simulates nothing
    simulate_pool(
        LinearGaussianToy(), sum(SIZES), 16, copy, seed=3, progress=False, on_shard=done.append
    )
    assert done == [1]


def test_reader_serves_the_shards_as_one_pool(pool):
    rows = np.concatenate([_images(pool, i) for i in range(3)])
    reader = DatasetBatches(str(pool), torch.Generator().manual_seed(0), val_size=8)
    try:
        np.testing.assert_array_equal(reader.validation().images.numpy(), rows[-8:])
        seen = np.concatenate([reader.next(8).images.numpy() for _ in range(4)])
    finally:
        reader.close()
    # one epoch of the 32 training rows: every one exactly once
    order = sorted(map(bytes, seen))
    assert order == sorted(map(bytes, rows[:32]))


@pytest.mark.slow
def test_the_pool_is_bit_identical_whatever_the_number_of_workers(pool, tmp_path):
    simulate_pool(
        LinearGaussianToy(), sum(SIZES), 16, tmp_path / "two", seed=3, workers=2, progress=False
    )
    for i in range(3):
        assert np.array_equal(_images(tmp_path / "two", i), _images(pool, i))


# ---------------------------------------------------------------- commands and bad input


def test_simulate_pool_command_writes_a_pool(capsys, tmp_path):
    run = run_main(
        capsys, "simulate-pool", "--preset", "toy", "--n", 20, "--shard-size", 8,
        "--out", tmp_path / "p", "--seed", 1,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "pool of 20 samples in 3 shards" in run.stdout
    assert read_index(tmp_path / "p")["shard_sizes"] == [8, 8, 4]


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--n", 0, "--n must be a positive integer"),
        ("--shard-size", -5, "--shard-size must be a positive integer"),
        ("--workers", 0, "--workers must be a positive integer"),
    ],
)
def test_simulate_pool_refuses_bad_sizes_before_any_work(capsys, tmp_path, option, value, message):
    args = {"--n": 20, "--shard-size": 8, option: value}
    flat = [str(x) for kv in args.items() for x in kv]
    run = run_main(capsys, "simulate-pool", "--preset", "toy", *flat, "--out", tmp_path / "p")
    assert_one_line_error(run, message)
    assert not (tmp_path / "p").exists()


def test_simulate_pool_refuses_an_out_that_is_a_file_or_holds_other_files(capsys, tmp_path):
    (tmp_path / "file").write_text("keep")
    run = run_main(capsys, "simulate-pool", "--preset", "toy", "--n", 4, "--out", tmp_path / "file")
    assert_one_line_error(run, "file")
    assert (tmp_path / "file").read_text() == "keep"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep")
    run = run_main(capsys, "simulate-pool", "--preset", "toy", "--n", 4, "--out", tmp_path / "busy")
    assert_one_line_error(run, "notes.txt", "no pool index")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_a_different_pool_is_replaced_only_with_overwrite(capsys, pool, tmp_path):
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(pool, copy)
    before = (copy / INDEX_NAME).read_text()
    args = ["simulate-pool", "--preset", "toy", "--n", 10, "--shard-size", 5, "--out", copy]
    run = run_main(capsys, *args)
    assert_one_line_error(run, "holds a different pool", "--overwrite")
    assert (copy / INDEX_NAME).read_text() == before and (copy / shard_name(2)).exists()
    run = run_main(capsys, *args, "--overwrite")
    assert run.returncode == 0, run.stderr
    assert read_index(copy)["shard_sizes"] == [5, 5]
    assert sorted(p.name for p in copy.iterdir()) == [INDEX_NAME, shard_name(0), shard_name(1)]


def test_train_refuses_an_incomplete_or_missing_pool_and_a_preset_beside_it(capsys, pool, tmp_path):
    """Also ``--marginalise-physics`` beside ``--pool-dir``: the pool's simulator decides."""
    import shutil

    run = run_main(capsys, "train", "--pool-dir", tmp_path / "none", "--out", tmp_path / "r")
    assert_one_line_error(run, "not a pool")
    copy = tmp_path / "p"
    shutil.copytree(pool, copy)
    (copy / shard_name(0)).unlink()
    run = run_main(capsys, "train", "--pool-dir", copy, "--out", tmp_path / "r")
    assert_one_line_error(run, "incomplete", "run the same `sbicluster simulate-pool`")
    run = run_main(capsys, "train", "--pool-dir", pool, "--preset", "toy", "--out", tmp_path / "r")
    assert_one_line_error(run, "drop --pool, --preset")
    run = run_main(
        capsys, "train", "--pool-dir", pool, "--marginalise-physics", "--out", tmp_path / "r"
    )
    assert_one_line_error(run, "drop --pool, --preset and --marginalise-physics")
    run = run_main(capsys, "train", "--pool-dir", pool, "--device", "cpu", "--out", tmp_path / "r")
    assert_one_line_error(run, "must exceed val_size")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_train_on_a_sharded_pool_from_the_command_line(capsys, tmp_path):
    run = run_main(
        capsys, "simulate-pool", "--preset", "toy", "--n", 1300, "--shard-size", 500,
        "--workers", 2, "--out", tmp_path / "p",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = run_main(
        capsys, "train", "--pool-dir", tmp_path / "p", "--embedding", "small", "--steps", 10,
        "--batch-size", 32, "--device", "cpu", "--out", tmp_path / "run",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["training"]["config"]["dataset"] == str(tmp_path / "p")
    assert card["simulator"] == read_index(tmp_path / "p")["simulator_card"]
    assert card["training"]["steps_done"] == 10


def test_marginalised_physics_needs_an_image_preset(capsys, tmp_path):
    """--marginalise-physics with the toy or a catalogue preset: one line, exit 2, nothing written."""
    for command in (
        ["train", "--preset", "toy", "--out", tmp_path / "r"],
        ["simulate-pool", "--preset", "legus-uvis", "--n", 10, "--out", tmp_path / "p"],
    ):
        run = run_main(capsys, *command, "--marginalise-physics")
        assert_one_line_error(run, "--marginalise-physics needs an image preset")
    assert list(tmp_path.iterdir()) == []
