"""Output writers: summary statistics, InferenceData layout, atomic writes, refusal to overwrite."""

import json

import numpy as np
import pytest
import torch
from astropy import units as u
from astropy.table import Table
from scipy import stats

from sbicluster.corner import corner_figure, rgb_composite, save_figure
from sbicluster.errors import OutputExistsError
from sbicluster.files import atomic_path
from sbicluster.outputs import (
    HDI_PROB,
    check_outputs,
    inference_data,
    summary_table,
    write_inference_data,
    write_table,
)
from simulators import DEFAULT_PRIOR, ClusterPrior


def _gaussian_draws(n=3, s=40000, seed=0):
    rng = np.random.default_rng(seed)
    mean = np.array([8.0, 4.0, 0.4, 1.5])
    sigma = np.array([0.2, 0.1, 0.05, 0.3])
    return mean, sigma, mean + sigma * rng.standard_normal((n, s, 4))


def test_summary_statistics_match_the_gaussian_they_were_drawn_from():
    mean, sigma, draws = _gaussian_draws()
    table = summary_table(
        draws,
        DEFAULT_PRIOR,
        ids=["a", "b", "c"],
        p_cluster=np.array([0.1, 0.5, 0.9]),
        visibility=np.array([1.0, 5.0, 50.0]),
        flags=np.zeros(3, int),
    )
    z = stats.norm.ppf(0.5 + HDI_PROB / 2)  # HPD of a Gaussian is symmetric: ±1.881σ for 94%
    for j, name in enumerate(DEFAULT_PRIOR.names):
        np.testing.assert_allclose(table[f"{name}_median"].value, mean[j], atol=0.05 * sigma[j])
        np.testing.assert_allclose(
            table[f"{name}_p84"].value - table[f"{name}_p16"].value, 2 * sigma[j], rtol=0.03
        )
        np.testing.assert_allclose(
            table[f"{name}_hdi97"].value - table[f"{name}_hdi3"].value, 2 * z * sigma[j], rtol=0.03
        )
    assert table["log_age_median"].unit == u.dex(u.yr)
    np.testing.assert_allclose(table["age"].quantity.to_value(u.Myr), 100.0, rtol=0.01)  # 10^8 yr
    assert table["av_median"].unit == u.mag


def test_summary_and_inference_data_survive_a_round_trip_on_disk(tmp_path):
    _, _, draws = _gaussian_draws(n=2, s=500)
    table = summary_table(
        draws,
        DEFAULT_PRIOR,
        ids=["x1", "x2"],
        p_cluster=np.ones(2),
        visibility=np.ones(2),
        flags=np.array([0, 1]),
    )
    write_table(table, tmp_path / "summary.ecsv")
    back = Table.read(tmp_path / "summary.ecsv", format="ascii.ecsv")
    np.testing.assert_allclose(back["log_mass_median"].value, table["log_mass_median"].value)
    assert back["log_mass_median"].unit == u.dex(u.solMass) and back["flag"].tolist() == [0, 1]

    import arviz as az

    idata = inference_data(draws, DEFAULT_PRIOR, ids=["x1", "x2"], card={"name": "m"})
    write_inference_data(idata, tmp_path / "posterior.nc")
    loaded = az.from_netcdf(str(tmp_path / "posterior.nc"))
    assert loaded.posterior["log_age"].dims == ("chain", "draw", "cutout")
    assert list(loaded.posterior["cutout"].values) == ["x1", "x2"]
    assert loaded.posterior["av"].attrs["unit"] == "mag"
    assert json.loads(loaded.posterior.attrs["model_card"]) == {"name": "m"}
    assert ClusterPrior.from_dict(json.loads(loaded.posterior.attrs["prior"])) == DEFAULT_PRIOR
    np.testing.assert_allclose(loaded.posterior["log_rh"].values[0, :, 1], draws[1, :, 2])


def test_interrupted_write_keeps_the_old_file_and_overwrite_is_refused(tmp_path):
    target = tmp_path / "summary.ecsv"
    target.write_text("good results")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("interrupted")
    assert target.read_text() == "good results"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.ecsv"]  # no temporary left behind
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_outputs([target], overwrite=False)
    check_outputs([target], overwrite=True)


def test_rgb_composite_maps_a_red_source_to_red_and_corner_plot_is_written(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, size=(3, 32, 32))
    image[2, 14:18, 14:18] += 200.0  # bright only in the reddest band
    rgb = rgb_composite(image)
    centre = rgb[14:18, 14:18].mean(axis=(0, 1))
    assert centre[0] > 0.8 and centre[2] < 0.3
    _, _, draws = _gaussian_draws(n=1, s=2000)
    fig = corner_figure(
        draws[0], DEFAULT_PRIOR, image=image, title="test", truth=[8.0, 4.0, 0.4, 1.5]
    )
    paths = save_figure(fig, tmp_path / "c")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(
        p.stat().st_size > 10_000 for p in paths
    )


def test_hdi_agrees_with_arviz_and_is_the_narrowest_interval_of_a_skewed_posterior():
    import arviz as az

    rng = np.random.default_rng(2)
    draws = np.stack(
        [
            rng.normal(8.0, 0.2, 4000),
            rng.gamma(2.0, 0.3, 4000) + 3.0,
            rng.normal(0.4, 0.05, 4000),
            rng.exponential(0.5, 4000),
        ],
        axis=-1,
    )[None]
    table = summary_table(
        draws,
        DEFAULT_PRIOR,
        ids=["s"],
        p_cluster=np.ones(1),
        visibility=np.ones(1),
        flags=np.zeros(1, int),
    )
    for j, name in enumerate(DEFAULT_PRIOR.names):
        lo, hi = az.hdi(draws[0, :, j], hdi_prob=HDI_PROB)
        assert table[f"{name}_hdi3"].value[0] == pytest.approx(lo, abs=1e-9)
        assert table[f"{name}_hdi97"].value[0] == pytest.approx(hi, abs=1e-9)
    # for an exponential A_V the HDI starts at the smallest draw, unlike the equal-tailed interval
    assert table["av_hdi3"].value[0] == pytest.approx(draws[0, :, 3].min(), abs=1e-9)


def test_prior_edge_flag_marks_medians_piled_against_a_prior_bound():
    from sbicluster.io import FLAG_MASKED, FLAG_PRIOR_EDGE

    low, high = DEFAULT_PRIOR.low().numpy(), DEFAULT_PRIOR.high().numpy()
    rng = np.random.default_rng(3)
    centre = (low + high) / 2
    inside = centre + 0.01 * (high - low) * rng.standard_normal((2000, 4))
    at_edge = inside.copy()
    at_edge[:, 3] = low[3] + 0.005 * (high[3] - low[3]) * rng.random(
        2000
    )  # A_V pinned at its lower bound
    table = summary_table(
        np.stack([inside, at_edge]),
        DEFAULT_PRIOR,
        ids=["in", "edge"],
        p_cluster=np.ones(2),
        visibility=np.ones(2),
        flags=np.array([FLAG_MASKED, 0]),
    )
    assert table["flag"].tolist() == [FLAG_MASKED, FLAG_PRIOR_EDGE]
    assert "prior_edge" in table.meta["flag_bits"][str(FLAG_PRIOR_EDGE)]


def test_summary_units_come_from_the_prior_and_a_wrong_width_is_refused():
    from sbicluster.errors import InputError

    draws = DEFAULT_PRIOR.sample(2 * 50, torch.Generator().manual_seed(0)).numpy()
    draws = draws.reshape(2, 50, DEFAULT_PRIOR.dim)
    table = summary_table(
        draws,
        DEFAULT_PRIOR,
        ids=["a", "b"],
        p_cluster=np.ones(2),
        visibility=np.ones(2),
        flags=np.zeros(2, int),
    )
    for p in DEFAULT_PRIOR.parameters:
        assert table[f"{p.name}_median"].unit == u.Unit(p.unit)
    with pytest.raises(InputError, match=r"\(N, S, 4\)"):
        summary_table(
            draws[..., :3],
            DEFAULT_PRIOR,
            ids=["a", "b"],
            p_cluster=np.ones(2),
            visibility=np.ones(2),
            flags=np.zeros(2, int),
        )
    with pytest.raises(InputError):
        inference_data(draws[..., :3], DEFAULT_PRIOR, ids=["a", "b"])
