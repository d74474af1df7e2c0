"""Shared fixtures of the workflow tests (test_api.py, test_cli.py): a tiny toy model and toy cutouts.

The model is trained once per test session (a few seconds on the linear-Gaussian toy) and cached
under pytest's session temporary folder, so every test module reuses the same model directory.
"""

from pathlib import Path

import pytest
import torch

from sbicluster.outputs import write_cutouts_fits
from simulators.toy import LinearGaussianToy

__all__ = [
    "toy_model_dir",
    "toy_cutouts",
    "one_torch_thread",
    "cli",
    "run_main",
    "assert_one_line_error",
]

TOY_CLUSTERS = 6


def _train_once(base: Path) -> Path:
    from sbicluster.training import TrainingConfig, train

    model_dir = base / "toy-run" / "model"
    if (model_dir / "card.json").exists():
        return model_dir
    config = TrainingConfig(
        steps=60,
        batch_size=64,
        val_size=128,
        val_every=30,
        warmup_steps=10,
        checkpoint_every=1000,
        seed=0,
        device="cpu",
    )
    train(LinearGaussianToy(), config, base / "toy-run", progress=False)
    return model_dir


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Path:
    """A small model on the linear-Gaussian toy, trained once per session (seconds)."""
    return _train_once(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def toy_model(toy_model_dir):
    """The toy model of :func:`toy_model_dir`, loaded on the CPU once per test module."""
    from sbicluster.artifact import load_model

    return load_model(toy_model_dir, device="cpu")


def toy_features(model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """θ (n, 4) of ``n`` toy clusters simulated with ``seed`` and ``model``'s embedding of them."""
    batch = LinearGaussianToy().simulate(
        n, torch.Generator().manual_seed(seed), label=torch.ones(n, dtype=torch.long)
    )
    with torch.no_grad():
        return batch.theta, model.embed(batch.images)


@pytest.fixture(scope="session")
def toy_cutouts(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """``mock.fits`` with 6 toy clusters in the layout ``infer`` reads, and their true θ (6, 4)."""
    path = tmp_path_factory.getbasetemp() / "toy-data" / "mock.fits"
    toy = LinearGaussianToy()
    batch = toy.simulate(
        TOY_CLUSTERS,
        torch.Generator().manual_seed(5),
        label=torch.ones(TOY_CLUSTERS, dtype=torch.long),
    )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cutouts_fits(path, batch.images.numpy(), toy.bands, pixel_scale=0.04)
    return path, batch.theta


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): small vectorised work and the commands'
    subprocesses only contend with two threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(*args, timeout: float = 300):
    """Run ``python -m sbicluster.cli ARGS`` in a subprocess; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sbicluster.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class CommandRun:
    """Exit code and captured output of one command, as :func:`cli` returns them."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(capsys, *args) -> CommandRun:
    """``sbicluster ARGS`` in this process (faster than a new Python); output captured like
    a subprocess's."""
    from sbicluster.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return CommandRun(code, captured.out, captured.err)


def assert_one_line_error(run, *fragments) -> None:
    """``run`` exited 2 with exactly one ``sbicluster: error:`` line containing ``fragments``."""
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbicluster: error:"), run.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
