"""The Python API: sbicluster.infer and InferenceResult, on a tiny toy model trained in this session."""

import numpy as np
import pytest
from astropy import units as u

import sbicluster
from sbicluster.api import model_pixel_scale, model_zero_points
from sbicluster.errors import InputError, ModelError, OutputExistsError
from sbicluster.io import FLAG_MASKED
from sbicluster.outputs import write_cutouts_fits
from simulators.errors import SimulatorError
from simulators.registry import simulator_from_card


def test_infer_returns_summary_samples_and_inference_data_that_agree(toy_model_dir, toy_cutouts):
    path, _ = toy_cutouts
    result = sbicluster.infer(path, model=toy_model_dir, num_samples=400, seed=1, progress=False)
    assert isinstance(result, sbicluster.InferenceResult)
    assert result.samples.shape == (6, 400, 4)
    summary = result.summary
    assert list(summary["id"]) == [f"mock:{i}" for i in range(6)]
    # the table's statistics are those of the returned draws
    np.testing.assert_allclose(
        summary["log_mass_median"].value, np.median(result.samples[:, :, 1], axis=1)
    )
    np.testing.assert_allclose(
        summary["av_p84"].value, np.percentile(result.samples[:, :, 3], 84, axis=1)
    )
    assert summary["log_age_median"].unit == u.dex(u.yr) and summary["av_median"].unit == u.mag
    np.testing.assert_allclose(
        summary["r_h"].quantity.to_value(u.pc), 10 ** summary["log_rh_median"].value
    )
    assert np.all((summary["p_cluster"] >= 0) & (summary["p_cluster"] <= 1)) and np.all(
        summary["visibility"] >= 0
    )
    # the toy model has no pixel scale and no zero points, so none are checked
    assert model_pixel_scale(result.card) is None and model_zero_points(result.card) == {}

    idata = result.to_inference_data()
    assert idata.posterior["log_age"].dims == ("chain", "draw", "cutout")
    np.testing.assert_array_equal(
        idata.posterior["log_rh"].values[0, :, 2], result.samples[2, :, 2]
    )
    assert idata.posterior["log_mass"].attrs["unit"] == "dex(solMass)"
    assert u.Unit(idata.posterior["log_mass"].attrs["unit"]) == u.dex(u.solMass)


def test_seed_fixes_the_draws_and_a_different_seed_changes_them(toy_model_dir, toy_cutouts):
    path, _ = toy_cutouts
    a = sbicluster.infer(path, model=toy_model_dir, num_samples=100, seed=7, progress=False)
    b = sbicluster.infer(path, model=toy_model_dir, num_samples=100, seed=7, progress=False)
    c = sbicluster.infer(path, model=toy_model_dir, num_samples=100, seed=8, progress=False)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(a.samples, c.samples)
    # P(cluster) and visibility do not depend on the sampling seed
    np.testing.assert_allclose(a.summary["p_cluster"], c.summary["p_cluster"], rtol=1e-6)


def test_write_is_refused_without_overwrite_and_leaves_old_files(
    toy_model_dir,
    toy_cutouts,
    tmp_path,
):
    path, _ = toy_cutouts
    out = tmp_path / "out"
    result = sbicluster.infer(
        path,
        model=toy_model_dir,
        num_samples=50,
        seed=0,
        out=out,
        save_samples=True,
        progress=False,
    )
    assert sorted(p.name for p in out.iterdir()) == ["posterior.nc", "samples.npz", "summary.ecsv"]
    before = (out / "summary.ecsv").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        sbicluster.infer(path, model=toy_model_dir, num_samples=50, seed=1, out=out, progress=False)
    assert (out / "summary.ecsv").read_bytes() == before
    result.write(out, overwrite=True, save_samples=True)
    np.testing.assert_allclose(np.load(out / "samples.npz")["samples"], result.samples, rtol=1e-6)
    result.write(out, overwrite=True)  # one run's files: the earlier samples.npz goes
    assert sorted(p.name for p in out.iterdir()) == ["posterior.nc", "summary.ecsv"]


def test_masked_pixels_are_filled_and_flagged_through_the_api(toy_model_dir, toy_cutouts, tmp_path):
    from sbicluster.io import read_cutouts

    path, _ = toy_cutouts
    clean = read_cutouts(path, ("toy_blue", "toy_red"), image_size=8)
    images = clean.images.copy()
    images[2, 1, 0, 0] = np.nan
    masked = write_cutouts_fits(
        tmp_path / "masked.fits", images, ("toy_blue", "toy_red"), pixel_scale=0.04
    )
    result = sbicluster.infer(masked, model=toy_model_dir, num_samples=20, progress=False)
    assert [bool(f & FLAG_MASKED) for f in result.summary["flag"]] == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]


def test_api_errors_name_the_problem(toy_model_dir, toy_cutouts, tmp_path):
    path, _ = toy_cutouts
    with pytest.raises(InputError, match="num_samples"):
        sbicluster.infer(path, model=toy_model_dir, num_samples=0)
    with pytest.raises(InputError, match="views must be one of"):
        sbicluster.infer(tmp_path / "not-read.fits", model=toy_model_dir, views=3)
    with pytest.raises(ModelError):
        sbicluster.infer(path, model=tmp_path / "no-such-model")
    with pytest.raises(InputError, match="unknown device"):
        sbicluster.infer(path, model=toy_model_dir, device="tpu:9")


def test_simulator_is_rebuilt_from_a_model_card(toy_model_dir):
    from sbicluster.artifact import load_model
    from simulators.cluster import ClusterSimulator

    card = load_model(toy_model_dir).card
    toy = simulator_from_card(card["simulator"])
    assert toy.card() == card["simulator"]
    original = ClusterSimulator("m83-wfc3", feh=(-0.5, 0.0), cluster_fraction=0.3)
    rebuilt = simulator_from_card(original.card())
    assert rebuilt.card() == original.card()
    assert model_pixel_scale({"simulator": original.card()}) == pytest.approx(0.0396)
    assert set(model_zero_points({"simulator": original.card()})) == set(original.bands)
    with pytest.raises(SimulatorError, match="no simulator card"):
        simulator_from_card(card.get("no-such-entry"))
    with pytest.raises(SimulatorError, match="not one this version can rebuild"):
        simulator_from_card({"prior": card["prior"]})
