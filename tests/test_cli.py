"""The command line and the Python API, driven end to end on a tiny model trained here."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from astropy.table import Table

import sbicluster
from sbicluster.outputs import write_cutouts_fits
from sbicluster.toy import LinearGaussianToy
from sbicluster.training import TrainingConfig, train


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    """A small model on the linear-Gaussian toy (seconds to train)."""
    toy = LinearGaussianToy()
    run = tmp_path_factory.mktemp("run")
    config = TrainingConfig(steps=60, batch_size=64, val_size=128, val_every=30, warmup_steps=10,
                            checkpoint_every=1000, seed=0, device="cpu")
    train(toy, config, run, progress=False)
    return run / "model"


@pytest.fixture(scope="module")
def cutouts_file(tmp_path_factory):
    toy = LinearGaussianToy()
    batch = toy.simulate(6, torch.Generator().manual_seed(5), label=torch.ones(6, dtype=torch.long))
    path = tmp_path_factory.mktemp("data") / "mock.fits"
    write_cutouts_fits(path, batch.images.numpy(), toy.bands, pixel_scale=0.04)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sbicluster.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_infer_writes_tables_refuses_to_overwrite_and_matches_the_python_api(toy_model_dir, cutouts_file, tmp_path):
    out = tmp_path / "out"
    run = cli("infer", cutouts_file, "--model", toy_model_dir, "--out", out, "--samples", 200, "--seed", 3,
              "--save-samples")
    assert run.returncode == 0, run.stderr
    summary = Table.read(out / "summary.ecsv", format="ascii.ecsv")
    assert len(summary) == 6 and (out / "posterior.nc").exists() and (out / "samples.npz").exists()
    assert np.all((summary["p_cluster"] >= 0) & (summary["p_cluster"] <= 1))
    before = (out / "summary.ecsv").read_bytes()

    again = cli("infer", cutouts_file, "--model", toy_model_dir, "--out", out, "--samples", 200)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (out / "summary.ecsv").read_bytes() == before

    result = sbicluster.infer(cutouts_file, model=toy_model_dir, num_samples=200, seed=3, progress=False)
    np.testing.assert_allclose(result.samples, np.load(out / "samples.npz")["samples"], rtol=1e-5, atol=1e-5)
    idata = result.to_inference_data()
    assert idata.posterior["log_age"].shape == (1, 200, 6)


def test_corner_writes_png_and_pdf(toy_model_dir, cutouts_file, tmp_path):
    out = tmp_path / "out"
    assert cli("infer", cutouts_file, "--model", toy_model_dir, "--out", out, "--samples", 300).returncode == 0
    run = cli("corner", out, "--id", "mock:0", "mock:4")
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in (out / "corner").iterdir())
    assert files == ["corner_mock_0.pdf", "corner_mock_0.png", "corner_mock_4.pdf", "corner_mock_4.png"]
    bad = cli("corner", out, "--id", "nope")
    assert bad.returncode == 2 and "no cutout with id 'nope'" in bad.stderr


def test_bad_input_gives_one_line_error_and_exit_code_2(toy_model_dir, tmp_path):
    bogus = tmp_path / "notes.fits"
    bogus.write_text("definitely not FITS")
    run = cli("infer", bogus, "--model", toy_model_dir, "--out", tmp_path / "o")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbicluster: error:") and "notes.fits" in lines[0]
    assert not (tmp_path / "o").exists()
    missing = cli("infer", tmp_path / "nothing.fits", "--model", tmp_path / "no-model", "--out", tmp_path / "o")
    assert missing.returncode == 2 and "no-model" in missing.stderr
