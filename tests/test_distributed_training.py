"""Data-parallel training: two gloo processes on CPU follow one process on the same global batch.

The one-step test compares *gradients* (AdamW's update hardly depends on their scale, so equal
weights after a step would not show a wrong normalisation), batch-norm running statistics and the
logged loss terms. The command test runs ``torchrun --nproc_per_node 2 -m sbicluster train`` and
compares its log and weights with the one-process command, including a resume that changes the
number of processes.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sbicluster.model import ClusterModel, default_architecture
from sbicluster.pool import simulate_pool
from sbicluster.training import DatasetBatches, TrainingConfig, default_config, train, train_step
from sbicluster.training.distributed import (
    GlobalBatchNorm2d,
    ProcessGroup,
    join_process_group,
    use_global_batchnorm,
)
from sbicluster.training.loop import DataParallel, validate
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main

POOL_SIZE = 640
VAL_SIZE = 128
BATCH = 64
SEED = 11


@pytest.fixture(scope="module")
def toy_pool(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp") / "pool"
    simulate_pool(LinearGaussianToy(), POOL_SIZE, 320, folder, seed=2, workers=1, progress=False)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(
    pool: Path, group: ProcessGroup, global_batchnorm: bool = True
) -> dict[str, torch.Tensor]:
    """Gradients, batch-norm buffers, training and validation terms of one step from a fixed
    initialisation, on this process's share of the first global batch."""
    toy = LinearGaussianToy()
    config = TrainingConfig(
        embedding="small", batch_size=BATCH, val_size=VAL_SIZE, grad_clip=1e9, seed=SEED
    )
    data = DatasetBatches(
        str(pool),
        torch.Generator().manual_seed(SEED),
        VAL_SIZE,
        rank=group.rank,
        world_size=group.world_size,
    )
    arch = default_architecture("small", len(toy.bands), [1.0] * len(toy.bands))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ClusterModel(toy.prior, toy.bands, toy.observation_shape, arch)
    parallel = (
        DataParallel(model, group, global_batchnorm=global_batchnorm) if group.parallel else None
    )
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    terms = train_step(model, opt, data.next(BATCH), config, 0.0, False, parallel=parallel)
    val = validate(model, data.validation(), config.loss_weights, False, group)
    data.close()
    out = {f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    out.update({f"buffer.{n}": b.clone() for n, b in model.named_buffers() if "running" in n})
    out.update({f"train.{k}": torch.tensor(v) for k, v in terms.items()})
    out.update({f"val.{k}": torch.tensor(v) for k, v in val.items()})
    return out


def _worker(
    rank: int, world_size: int, port: int, pool: str, out: str, global_batchnorm: bool
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    group = join_process_group(torch.device("cpu"))
    try:
        result = _one_step(Path(pool), group, global_batchnorm)
        if group.is_main:
            torch.save(result, out)
    finally:
        group.close()


def _two_process_step(
    pool: Path, out: Path, global_batchnorm: bool = True
) -> dict[str, torch.Tensor]:
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(pool), str(out), global_batchnorm),
        nprocs=2,
        start_method="spawn",
    )
    return torch.load(out)


def test_two_processes_give_the_gradient_of_the_global_batch(toy_pool, tmp_path, one_torch_thread):
    single = _one_step(toy_pool, ProcessGroup())
    double = _two_process_step(toy_pool, tmp_path / "step.pt")
    assert set(single) == set(double)
    grads = [k for k in single if k.startswith("grad.")]
    assert len(grads) > 20 and any("bn" in k for k in grads)
    for key in grads:
        # float32 rounding alone (one thread against two in one process) moves the embedding's
        # gradients by up to 2e-4 of their largest element; per-process batch statistics by 0.3
        error = (double[key] - single[key]).abs().max()
        assert error <= 1e-3 * single[key].abs().max(), (key, float(error))
    for key in single:
        if not key.startswith("grad."):
            torch.testing.assert_close(double[key], single[key], rtol=1e-5, atol=1e-6, msg=key)


def test_local_batchnorm_gives_another_gradient(toy_pool, tmp_path, one_torch_thread):
    """``global_batchnorm=False`` (``--local-batchnorm``) is not the one-process computation: each
    process normalises with its half of the batch."""
    single = _one_step(toy_pool, ProcessGroup())
    local = _two_process_step(toy_pool, tmp_path / "step.pt", global_batchnorm=False)
    worst = max(
        float((local[k] - single[k]).abs().max() / single[k].abs().max())
        for k in single
        if k.startswith("grad.embedding")
    )
    assert worst > 0.01


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    reference = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    reference.load_state_dict(net.state_dict())
    use_global_batchnorm(net)
    assert isinstance(net[1], GlobalBatchNorm2d)
    x = torch.randn(5, 2, 8, 8)
    torch.testing.assert_close(net(x), reference(x))
    torch.testing.assert_close(net[1].running_var, reference[1].running_var)
    assert net.state_dict().keys() == reference.state_dict().keys()


def _log_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "log.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "weights.safetensors"))


TRAIN_ARGS = ("--embedding", "small", "--steps", 6, "--batch-size", BATCH, "--device", "cpu")


def _torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            f"--master_port={_free_port()}",
            "-m",
            "sbicluster",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_torchrun_training_matches_one_process_and_resumes_across_process_counts(
    toy_pool, tmp_path, capsys, one_torch_thread
):
    pool = tmp_path / "pool"  # the command's pool: val_size is the CPU default
    simulate_pool(LinearGaussianToy(), 1600, 800, pool, seed=4, workers=1, progress=False)
    common = ("train", "--pool-dir", pool, *TRAIN_ARGS, "--seed", SEED)
    assert run_main(capsys, *common, "--out", tmp_path / "one").returncode == 0
    run = _torchrun(*common, "--out", tmp_path / "two")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("training stopped") == 1  # rank 0 reports, once

    one, two = _log_rows(tmp_path / "one"), _log_rows(tmp_path / "two")
    assert len(one) == len(two) >= 1
    for row_one, row_two in zip(one, two, strict=True):
        for key in row_one:
            if key.startswith(("train_", "val_")):
                assert row_two[key] == pytest.approx(row_one[key], rel=1e-4), key
    w_one, w_two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=1e-3, atol=2e-3, msg=key)

    # half the run in one process, the rest in two: the same model as the uninterrupted run
    config = default_config(
        "cpu", embedding="small", steps=6, batch_size=BATCH, seed=SEED, dataset=str(pool)
    )
    train(LinearGaussianToy(), config, tmp_path / "split", progress=False, stop_after_steps=3)
    run = _torchrun(*common, "--out", tmp_path / "split", "--resume")
    assert run.returncode == 0, run.stderr[-2000:]
    w_split = _weights(tmp_path / "split")
    for key in w_one:
        torch.testing.assert_close(w_split[key], w_one[key], rtol=1e-3, atol=2e-3, msg=key)


def test_several_processes_refuse_fresh_simulations_and_an_in_run_pool(tmp_path):
    run = _torchrun("train", "--preset", "toy", *TRAIN_ARGS, "--out", tmp_path / "online")
    assert run.returncode != 0
    assert "needs a simulation pool" in run.stderr and "simulate-pool" in run.stderr
    assert not (tmp_path / "online").exists()
    run = _torchrun(
        "train", "--preset", "toy", "--pool", 2000, *TRAIN_ARGS, "--out", tmp_path / "p"
    )
    assert "--pool would be simulated by each of the 2 processes" in run.stderr
    assert not (tmp_path / "p").exists()


def test_a_bad_world_size_is_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    run = run_main(capsys, "train", "--preset", "toy", *TRAIN_ARGS, "--out", tmp_path / "r")
    assert_one_line_error(run, "WORLD_SIZE='two'")
    assert not (tmp_path / "r").exists()
