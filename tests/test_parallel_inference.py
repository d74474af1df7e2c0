"""Inference split over Dask workers gives the results of one process; per-cutout seeding; the
command's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.table import Table

from sbicluster.artifact import load_model
from sbicluster.inference import cutout_noise, predict
from sbicluster.outputs import write_cutouts_fits
from sbicluster.parallel_inference import predict_on_workers
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main

N_CUTOUTS = 40


@pytest.fixture(scope="module")
def many_cutouts(tmp_path_factory):
    """40 toy cutouts, clusters and backgrounds, in one FITS file."""
    path = tmp_path_factory.mktemp("many") / "many.fits"
    toy = LinearGaussianToy()
    batch = toy.simulate(N_CUTOUTS, torch.Generator().manual_seed(8))
    write_cutouts_fits(path, batch.images.numpy(), toy.bands, pixel_scale=0.04)
    return path, batch.images.numpy()


def test_a_cutouts_noise_depends_only_on_the_seed_and_its_position():
    whole = cutout_noise(3, 0, 12, 50, 4)
    part = cutout_noise(3, 5, 4, 50, 4)
    torch.testing.assert_close(part, whole[:, 5:9], rtol=0, atol=0)
    assert not torch.equal(cutout_noise(4, 5, 4, 50, 4), part)
    # distinct cutouts get independent standard normals
    flat = whole.permute(1, 0, 2).reshape(12, -1)
    corr = torch.corrcoef(flat)
    assert corr.fill_diagonal_(0).abs().max() < 0.35
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05


def test_seeded_draws_do_not_depend_on_the_batch_size(
    toy_model_dir, many_cutouts, one_torch_thread
):
    model = load_model(toy_model_dir, device="cpu")
    images = many_cutouts[1]
    a = predict(model, images, num_samples=64, seed=9, batch_size=8, views=1, progress=False)
    b = predict(model, images, num_samples=64, seed=9, batch_size=5, views=1, progress=False)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.p_cluster, b.p_cluster, rtol=1e-5, atol=1e-6)


def test_two_workers_give_exactly_the_one_process_results(
    toy_model_dir, many_cutouts, one_torch_thread
):
    model = load_model(toy_model_dir, device="cpu")
    images = many_cutouts[1]
    options = {"num_samples": 32, "seed": 2, "batch_size": 8, "views": 4, "progress": False}
    alone = predict(model, images, **options)
    split = predict_on_workers(model, images, chunk_size=16, workers=2, **options)
    np.testing.assert_array_equal(split.samples, alone.samples)
    np.testing.assert_array_equal(split.p_cluster, alone.p_cluster)
    np.testing.assert_array_equal(split.visibility, alone.visibility)


def test_infer_command_with_workers_writes_the_one_process_outputs(
    toy_model_dir, many_cutouts, tmp_path, capsys, one_torch_thread
):
    import arviz as az

    fits = many_cutouts[0]
    common = ("infer", fits, "--model", toy_model_dir, "--samples", 40, "--batch-size", 8)
    assert run_main(capsys, *common, "--out", tmp_path / "one").returncode == 0
    run = run_main(capsys, *common, "--workers", 2, "--chunk-size", 16, "--out", tmp_path / "two")
    assert run.returncode == 0, run.stderr
    one, two = (
        Table.read(tmp_path / "one" / "summary.ecsv"),
        Table.read(tmp_path / "two" / "summary.ecsv"),
    )
    assert one.colnames == two.colnames and len(two) == N_CUTOUTS
    for name in one.colnames:  # NaN where a column does not apply (x, y of cutout files)
        np.testing.assert_array_equal(np.asarray(two[name]), np.asarray(one[name]), err_msg=name)
    post_one = az.from_netcdf(tmp_path / "one" / "posterior.nc").posterior
    post_two = az.from_netcdf(tmp_path / "two" / "posterior.nc").posterior
    for name in post_one.data_vars:
        np.testing.assert_array_equal(post_two[name].values, post_one[name].values)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (("--workers", 0), ("--workers must be a positive integer",)),
        (("--workers", 2, "--scheduler", "tcp://127.0.0.1:1"), ("not both",)),
        (("--workers", 2, "--chunk-size", 12), ("multiple of --batch-size 8", "8 or 16")),
        (("--workers", 2, "--chunk-size", -8), ("--chunk-size must be a positive integer",)),
        (("--chunk-size", 16), ("--chunk-size splits work",)),
    ],
)
def test_infer_refuses_bad_splitting_options_before_any_work(
    toy_model_dir, many_cutouts, tmp_path, capsys, options, fragments
):
    out = tmp_path / "out"
    run = run_main(
        capsys,
        "infer",
        many_cutouts[0],
        "--model",
        toy_model_dir,
        "--batch-size",
        8,
        *options,
        "--out",
        out,
    )
    assert_one_line_error(run, *fragments)
    assert not out.exists()


def test_split_inference_keeps_earlier_outputs_without_overwrite(
    toy_model_dir, many_cutouts, tmp_path, capsys, one_torch_thread
):
    out = tmp_path / "out"
    common = ("infer", many_cutouts[0], "--model", toy_model_dir, "--samples", 8, "--out", out)
    assert run_main(capsys, *common).returncode == 0
    before = (out / "summary.ecsv").read_bytes()
    run = run_main(capsys, *common, "--workers", 1, "--seed", 5)
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert (out / "summary.ecsv").read_bytes() == before
    assert run_main(capsys, *common, "--workers", 1, "--seed", 5, "--overwrite").returncode == 0
    assert (out / "summary.ecsv").read_bytes() != before
