"""Catalogue in, posteriors out: ``sbicluster infer CATALOG --model legus-uvis --distance-modulus``.

Runs the shipped ``legus-uvis`` model on excerpts of the two real LEGUS catalogues (tests/data),
on simulated rows with known parameters, and on bad input (exit code 2, one line, nothing written).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

from sbicluster.artifact import load_model, resolve_model_dir
from sbicluster.catalog_infer import catalogue_rows, infer_catalog, is_catalogue_card
from sbicluster.catalog_io import ROW_FLAG_NO_BANDS, read_photometry_catalog
from sbicluster.io import FLAG_OUT_OF_RANGE
from tests.conftest import assert_one_line_error, run_main

DATA = Path(__file__).parent / "data"
NGC628 = DATA / "hlsp_legus_hst_acs-wfc3_ngc628-c_excerpt.tab"
NGC1313 = DATA / "hlsp_legus_hst_wfc3_ngc1313-e_excerpt.tab"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("legus-uvis")


def test_builtin_model_is_a_small_catalogue_model(model):
    assert is_catalogue_card(model.card)
    weights = resolve_model_dir("legus-uvis") / "weights.safetensors"
    assert weights.stat().st_size < 3_000_000
    assert "sbicluster train --preset legus-uvis" in model.card["training"]["command"]


def test_cli_on_both_real_layouts(capsys, tmp_path):
    for path, mu in ((NGC628, 29.98), (NGC1313, 28.21)):
        out = tmp_path / path.stem
        run = run_main(
            capsys,
            "infer",
            path,
            "--model",
            "legus-uvis",
            "--distance-modulus",
            mu,
            "--out",
            out,
            "--samples",
            200,
        )
        assert run.returncode == 0, run.stderr
        summary = Table.read(out / "summary.ecsv")
        raw = np.loadtxt(path)
        assert list(summary["id"]) == [str(int(i)) for i in raw[:, 0]]  # every row, in order
        shift = 0 if raw.shape[1] == 35 else 2
        np.testing.assert_allclose(summary["ra"], raw[:, 3 + shift])
        np.testing.assert_allclose(summary["dec"], raw[:, 4 + shift])
        assert summary.meta["distance_modulus"] == mu
        assert (out / "posterior.nc").is_file()
        ok = summary["flag"] & FLAG_OUT_OF_RANGE == 0
        assert np.all(np.isfinite(summary["log_mass_median"][ok]))
        # the same outputs as for cutouts: corner plots from the folder
        run = run_main(capsys, "corner", out, "--max", 2)
        assert run.returncode == 0 and len(list((out / "corner").glob("*.png"))) == 2


def test_rows_without_bands_are_flagged_not_dropped(model, tmp_path):
    t = Table()
    t["name"] = ["good", "none", "nan"]
    t["m555"] = [22.0, 66.666, np.nan]
    t["e555"] = [0.05, 66.666, 0.05]
    t["m814"] = [21.3, 66.666, 21.0]
    t["e814"] = [0.05, 66.666, 0.05]
    t["m336"] = [22.5, 99.999, 22.0]
    t["e336"] = [0.08, 99.999, 0.05]
    t.write(tmp_path / "cat.fits")
    cols = "id=name,WFC3_UVIS_F555W=m555:e555,WFC3_UVIS_F814W=m814:e814,F336W=m336:e336"
    res = infer_catalog(
        tmp_path / "cat.fits",
        model=model,
        distance_modulus=29.0,
        columns=cols,
        num_samples=100,
        progress=False,
    )
    s = res.summary
    assert list(s["id"]) == ["good", "none", "nan"]
    assert s["flag"][1] & ROW_FLAG_NO_BANDS and s["flag"][1] & FLAG_OUT_OF_RANGE
    assert np.isnan(s["log_mass_median"][1]) and np.isfinite(s["log_mass_median"][0])
    assert s["flag"][2] & 16 and np.isfinite(s["log_mass_median"][2])  # bad value: band missing


def test_posteriors_follow_the_photometry(model):
    """Simulated rows: the brighter cluster of the same age gets the larger mass, and the medians
    track the true masses of bright clusters."""
    from simulators.registry import simulator_from_card

    sim = simulator_from_card(model.card["simulator"])
    n = 200
    g = torch.Generator().manual_seed(99)
    theta = sim.prior.sample(n, g)
    theta[:, sim.prior.index("log_mass")] = torch.linspace(3.5, 6.0, n)
    theta[:, sim.prior.index("log_age")] = 7.3
    batch = sim.simulate(n, g, theta=theta)
    with torch.no_grad():
        draws = model.sample_from_features(model.embed(batch.images), 200, g)
    med = draws.median(0).values[:, sim.prior.index("log_mass")]
    true = theta[:, sim.prior.index("log_mass")]
    assert float(torch.corrcoef(torch.stack([med, true]))[0, 1]) > 0.8
    assert float((med - true).abs().median()) < 0.4


def test_catalogue_rows_use_the_distance_modulus(model):
    cat = read_photometry_catalog(NGC1313, supported=tuple(model.bands) + ("ACS_WFC_F555W",))
    rows, _ = catalogue_rows(cat, model.card["simulator"], 28.21)
    v = list(model.bands).index("WFC3_UVIS_F555W")
    np.testing.assert_allclose(rows[:, v, 0], cat.mag[:, 3] - 28.21, rtol=1e-6)
    np.testing.assert_allclose(rows[:, v, 1], np.log10(cat.err[:, 3]), rtol=1e-5)
    # F435W (ACS) is absent from this WFC3-only field: the column is all zero
    assert np.all(rows[:, list(model.bands).index("ACS_WFC_F435W")] == 0)


def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    base = ("infer", "--model", "legus-uvis", "--out", out, "--samples", 50)
    cases = [
        ((tmp_path / "missing.tab", "--distance-modulus", 29), "does not exist"),
        ((NGC628,), "--distance-modulus"),
        ((NGC628, "--distance-modulus", "nan"), "distance modulus"),
        ((NGC628, "--distance-modulus", 5), "distance modulus"),
    ]
    bad = tmp_path / "hlsp_legus_hst_wfc3_x.tab"
    np.savetxt(bad, np.loadtxt(NGC628)[:, :20])
    cases.append(((bad, "--distance-modulus", 29), "--columns"))
    t = Table({"a": [1.0]})
    t.write(tmp_path / "t.ecsv")
    cases.append(((tmp_path / "t.ecsv", "--distance-modulus", 29), "needs --columns"))
    cases.append(
        ((tmp_path / "t.ecsv", "--distance-modulus", 29, "--columns", "F555W=x:y"), "ambiguous")
    )
    cases.append(((NGC628, "--distance-modulus", 29, "--workers", 2), "one process"))
    for extra, fragment in cases:
        run = run_main(capsys, base[0], extra[0], *base[1:], *extra[1:])
        assert_one_line_error(run, fragment)
        assert not out.exists()
    # catalogue options with an image model
    run = run_main(capsys, "infer", NGC628, "--distance-modulus", 29, "--out", out)
    assert_one_line_error(run, "catalogue models")
    assert not out.exists()


def test_existing_results_need_overwrite(capsys, tmp_path):
    out = tmp_path / "out"
    args = (
        "infer",
        NGC628,
        "--model",
        "legus-uvis",
        "--distance-modulus",
        29.98,
        "--out",
        out,
        "--samples",
        50,
    )
    assert run_main(capsys, *args).returncode == 0
    before = (out / "summary.ecsv").read_bytes()
    run = run_main(capsys, *args[:-1], 60)
    assert_one_line_error(run, "--overwrite")
    assert (out / "summary.ecsv").read_bytes() == before
    assert run_main(capsys, *args[:-1], 60, "--overwrite").returncode == 0
    assert Table.read(out / "summary.ecsv").meta["num_samples"] == 60


def test_simulate_refuses_catalogue_presets(capsys, tmp_path):
    run = run_main(capsys, "simulate", "--preset", "legus-uvis", "--n", 3, "--out", tmp_path / "m")
    assert_one_line_error(run, "catalogue rows")
    assert not (tmp_path / "m" / "cutouts.fits").exists()


def test_train_preset_legus_uvis_builds_a_catalogue_model(capsys, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    run = run_main(
        capsys, "train", "--preset", "legus-uvis", "--out", out, "--steps", 3, "--batch-size", 32
    )
    assert run.returncode == 0, run.stderr
    trained = load_model(out / "model")
    assert is_catalogue_card(trained.card)
    assert trained.card["architecture"]["embedding"]["kind"] == "catalogue_mlp"
    assert trained.card["training"]["config"]["embedding"] == "catalogue"
    assert tuple(trained.image_shape) == (7, 4)
    res = infer_catalog(
        NGC628, model=trained, distance_modulus=29.98, num_samples=20, progress=False
    )
    assert len(res.summary) == len(np.loadtxt(NGC628))
