"""The command line driven end to end in subprocesses, on a tiny toy model trained in this session."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import sbicluster
import sbicluster.io
from sbicluster.cli import build_parser
from tests.conftest import assert_one_line_error as _one_line_error
from tests.conftest import cli, run_main


def test_parser_defaults_follow_the_documented_interface():
    args = build_parser().parse_args(["infer", "cutouts.fits", "--out", "o"])
    assert (
        args.samples == 1000 and args.device == "auto" and args.model is None and not args.overwrite
    )
    args = build_parser().parse_args(["demo", "--quick"])
    assert args.quick and args.model is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infer", "cutouts.fits"])  # --out is required


def test_infer_writes_tables_refuses_to_overwrite_and_matches_the_python_api(
    toy_model_dir,
    toy_cutouts,
    tmp_path,
):
    path, _ = toy_cutouts
    out = tmp_path / "out"
    run = cli(
        "infer",
        path,
        "--model",
        toy_model_dir,
        "--out",
        out,
        "--samples",
        200,
        "--seed",
        3,
        "--save-samples",
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no progress bars or warnings when stderr is not a terminal
    summary = Table.read(out / "summary.ecsv", format="ascii.ecsv")
    assert len(summary) == 6 and (out / "posterior.nc").exists() and (out / "samples.npz").exists()
    assert {
        "id",
        "x",
        "y",
        "ra",
        "dec",
        "p_cluster",
        "visibility",
        "flag",
        "age",
        "mass",
        "r_h",
    } <= set(summary.colnames)
    assert all(
        f"{p}_{s}" in summary.colnames
        for p in ("log_age", "log_mass", "log_rh", "av")
        for s in ("median", "p16", "p84", "hdi3", "hdi97")
    )
    before = (out / "summary.ecsv").read_bytes()

    again = cli("infer", path, "--model", toy_model_dir, "--out", out, "--samples", 200)
    _one_line_error(again, "--overwrite", "summary.ecsv")
    assert (out / "summary.ecsv").read_bytes() == before

    result = sbicluster.infer(path, model=toy_model_dir, num_samples=200, seed=3, progress=False)
    np.testing.assert_allclose(
        result.samples, np.load(out / "samples.npz")["samples"], rtol=1e-5, atol=1e-5
    )

    replaced = cli(
        "infer", path, "--model", toy_model_dir, "--out", out, "--samples", 100, "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert Table.read(out / "summary.ecsv", format="ascii.ecsv").meta["num_samples"] == 100


def test_simulate_infer_corner_with_truth(toy_model_dir, tmp_path):
    mock = tmp_path / "mock"
    run = cli("simulate", "--model", toy_model_dir, "--n", 5, "--seed", 4, "--out", mock)
    assert run.returncode == 0, run.stderr
    truth = Table.read(mock / "truth.ecsv", format="ascii.ecsv")
    assert len(truth) == 5 and set(truth["label"]) <= {0, 1}
    assert {"log_age", "log_mass", "log_rh", "av", "visibility"} <= set(truth.colnames)
    assert np.all(truth["visibility"][truth["label"] == 0] == 0)
    _one_line_error(
        cli("simulate", "--model", toy_model_dir, "--n", 5, "--out", mock), "--overwrite"
    )

    out = tmp_path / "out"
    assert (
        cli(
            "infer", mock / "cutouts.fits", "--model", toy_model_dir, "--out", out, "--samples", 300
        ).returncode
        == 0
    )
    first = str(truth["id"][0])
    run = cli("corner", out, "--id", first, "--truth", mock / "truth.ecsv")
    assert run.returncode == 0, run.stderr
    stem = first.replace(":", "_")
    assert sorted(p.name for p in (out / "corner").iterdir()) == [
        f"corner_{stem}.pdf",
        f"corner_{stem}.png",
    ]
    assert (
        out / "corner" / f"corner_{stem}.png"
    ).stat().st_size > 20_000  # corner + thumbnail, not an empty canvas
    _one_line_error(cli("corner", out, "--id", "nope"), "no cutout with id 'nope'")
    _one_line_error(cli("corner", tmp_path / "empty"), "summary.ecsv", "not found")


def _large_images(tmp_path, bands=("toy_blue", "toy_red"), shape=(60, 80)):
    rng = np.random.default_rng(0)
    files = []
    for band in bands:
        hdu = fits.PrimaryHDU(rng.normal(2.0, 1.0, size=shape).astype(np.float32))
        hdr = hdu.header
        hdr["FILTER"], hdr["BUNIT"], hdr["EXPTIME"] = band, "ELECTRONS", 100.0
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdr["CRPIX1"], hdr["CRPIX2"], hdr["CRVAL1"], hdr["CRVAL2"] = 40.0, 30.0, 204.25, -29.87
        hdr["CDELT1"], hdr["CDELT2"] = -0.04 / 3600, 0.04 / 3600
        files.append(tmp_path / f"{band}.fits")
        hdu.writeto(files[-1])
    return files


def test_catalogue_of_positions_on_large_images(toy_model_dir, tmp_path, capsys):
    files = _large_images(tmp_path)
    Table({"id": ["s1", "s2", "s3"], "x": [10.0, 39.0, 70.0], "y": [10.0, 29.0, 50.0]}).write(
        tmp_path / "cat.ecsv"
    )
    out = tmp_path / "out"
    run = run_main(
        capsys,
        "infer",
        *files,
        "--catalog",
        tmp_path / "cat.ecsv",
        "--model",
        toy_model_dir,
        "--out",
        out,
        "--samples",
        50,
    )
    assert run.returncode == 0, run.stderr
    summary = Table.read(out / "summary.ecsv", format="ascii.ecsv")
    assert list(summary["id"]) == ["s1", "s2", "s3"]
    np.testing.assert_allclose(summary["x"].value, [10, 39, 70])
    # the WCS reference pixel (CRPIX 40, 30 is 1-based: 0-based 39, 29) maps to CRVAL
    np.testing.assert_allclose(
        [summary["ra"].value[1], summary["dec"].value[1]], [204.25, -29.87], atol=1e-9
    )
    # counts were divided by EXPTIME = 100 s: the mean pixel of a 2 e-/s image is 2
    cut = sbicluster.io.read_catalog_cutouts(
        files, tmp_path / "cat.ecsv", ("toy_blue", "toy_red"), image_size=8
    )
    assert abs(float(cut.images.mean()) - 0.02) < 0.01

    Table({"x": [40.0, 78.0], "y": [30.0, 30.0]}).write(tmp_path / "edge.ecsv")
    run = run_main(
        capsys,
        "infer",
        *files,
        "--catalog",
        tmp_path / "edge.ecsv",
        "--model",
        toy_model_dir,
        "--out",
        tmp_path / "o2",
    )
    _one_line_error(run, "edge.ecsv", "row 1", "edge")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("not-fits", ["notes.fits", "not a readable FITS file"]),
        ("unknown-band", ["bad.fits[2]", "F999W"]),
        ("one-band", ["bad.fits", "missing ['toy_red']"]),
        ("negative-exptime", ["bad.fits[1]", "EXPTIME must be positive"]),
        ("all-nan", ["bad.fits[2]", "no finite pixel"]),
        ("wrong-size", ["bad.fits[1]", "the model reads 8x8"]),
    ],
)
def test_bad_input_gives_one_line_error_exit_code_2_and_writes_nothing(
    toy_model_dir,
    tmp_path,
    capsys,
    case,
    fragments,
):
    rng = np.random.default_rng(1)
    good = rng.normal(size=(8, 8)).astype(np.float32)
    path = tmp_path / ("notes.fits" if case == "not-fits" else "bad.fits")
    if case == "not-fits":
        path.write_text("definitely not FITS")
    else:
        planes = {
            "unknown-band": [("toy_blue", good), ("F999W", good)],
            "one-band": [("toy_blue", good)],
            "all-nan": [("toy_blue", good), ("toy_red", np.full((8, 8), np.nan, np.float32))],
            "wrong-size": [
                ("toy_blue", rng.normal(size=(10, 10))),
                ("toy_red", rng.normal(size=(10, 10))),
            ],
        }.get(case, [("toy_blue", good), ("toy_red", good)])
        hdus = [fits.PrimaryHDU()]
        for band, data in planes:
            hdu = fits.ImageHDU(data)
            hdu.header["FILTER"] = band
            if case == "negative-exptime":
                hdu.header["BUNIT"], hdu.header["EXPTIME"] = "COUNTS", -5.0
            hdus.append(hdu)
        fits.HDUList(hdus).writeto(path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.ecsv").write_text("previous good results")
    # the first case goes through a real subprocess; the others call main() in-process (same code, faster)
    args = ("infer", path, "--model", toy_model_dir, "--out", out, "--overwrite")
    run = cli(*args) if case == "not-fits" else run_main(capsys, *args)
    _one_line_error(run, *fragments)
    assert (out / "summary.ecsv").read_text() == "previous good results"
    assert sorted(p.name for p in out.iterdir()) == ["summary.ecsv"]


def test_missing_model_and_explicit_bands(toy_model_dir, toy_cutouts, tmp_path, capsys):
    path, _ = toy_cutouts
    _one_line_error(
        run_main(capsys, "infer", path, "--model", tmp_path / "no-model", "--out", tmp_path / "o"),
        "no-model",
    )
    # --bands overrides the FILTER keywords: swapping them changes which plane is read as which band
    out = tmp_path / "swapped"
    run = run_main(
        capsys,
        "infer",
        path,
        "--model",
        toy_model_dir,
        "--out",
        out,
        "--samples",
        20,
        "--bands",
        "toy_red,toy_blue",
    )
    assert run.returncode == 0, run.stderr
    plain = sbicluster.infer(
        path, model=toy_model_dir, num_samples=20, progress=False
    ).cutouts.images
    swapped = sbicluster.io.read_cutouts(
        path, ("toy_blue", "toy_red"), image_size=8, bands=("toy_red", "toy_blue")
    )
    np.testing.assert_array_equal(swapped.images, plain[:, ::-1])
    _one_line_error(
        run_main(
            capsys,
            "infer",
            path,
            "--model",
            toy_model_dir,
            "--out",
            out,
            "--bands",
            "toy_red",
            "--overwrite",
        ),
        "2 image HDUs",
    )


def test_a_card_naming_an_unknown_simulator_gives_a_one_line_error(toy_model_dir, tmp_path, capsys):
    import shutil

    for simulator, fragment in (
        ({"simulator": "mystery-simulator"}, "'mystery-simulator'"),
        (None, "no simulator card"),
    ):
        model = tmp_path / f"model-{fragment[1:8]}"
        shutil.copytree(toy_model_dir, model)
        card = json.loads((model / "card.json").read_text())
        card["simulator"] = simulator
        (model / "card.json").write_text(json.dumps(card))
        for command in ("simulate", "diagnose"):
            out = tmp_path / f"{command}-{fragment[1:8]}"
            run = run_main(capsys, command, "--model", model, "--n", 10, "--out", out)
            _one_line_error(run, fragment)
            assert not out.exists()


def test_demo_quick_on_a_toy_model(toy_model_dir, tmp_path):
    out = tmp_path / "demo"
    run = cli("demo", "--model", toy_model_dir, "--out", out, "--quick")
    assert run.returncode == 0, run.stderr
    assert "40 mock cutouts" in run.stdout and "classification accuracy" in run.stdout
    for name in (
        "summary.ecsv",
        "posterior.nc",
        "summary.png",
        "mock/cutouts.fits",
        "mock/truth.ecsv",
    ):
        assert (out / name).exists(), name
    assert len(list((out / "corner").glob("*.png"))) == 4
    summary = Table.read(out / "summary.ecsv", format="ascii.ecsv")
    truth = Table.read(out / "mock" / "truth.ecsv", format="ascii.ecsv")
    assert list(summary["id"]) == list(truth["id"])


@pytest.mark.parametrize("option", ["--classifier-weight", "--balance-weight"])
@pytest.mark.parametrize("weight", ["-1", "nan", "inf"])
def test_train_refuses_a_negative_or_non_finite_loss_weight(tmp_path, option, weight):
    run = cli("train", "--preset", "toy", option, weight, "--out", tmp_path / "r")
    assert run.returncode == 2
    assert option in run.stderr and "finite number ≥ 0" in run.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_train_from_a_pre_simulated_pool_and_refuse_a_too_small_one(tmp_path):
    """``--pool N`` writes OUT/pool.h5 with N simulations and trains on it (recorded in the card);
    a pool no larger than the validation set is a one-line input error."""
    import h5py

    args = ["train", "--preset", "toy", "--embedding", "small", "--steps", 20]
    args += ["--batch-size", 32, "--device", "cpu", "--pool-seed", 3]
    run = cli(
        *args,
        "--pool",
        1500,
        "--classifier-weight",
        2.5,
        "--balance-weight",
        50,
        "--out",
        tmp_path / "run",
    )
    assert run.returncode == 0, run.stderr
    with h5py.File(tmp_path / "run" / "pool.h5") as f:
        assert f["images"].shape[0] == 1500
    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["training"]["config"]["dataset"].endswith("pool.h5")
    assert card["training"]["config"]["loss_weights"] == {
        "classifier": 2.5,
        "visibility": 0.5,
        "balance": 50.0,
    }
    assert "balancing penalty" in card["training"]["loss"]
    log_header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"train_balance", "val_balance"} <= set(log_header)
    assert card["training"]["steps_done"] == 20
    run = cli(*args, "--pool", 500, "--out", tmp_path / "small")
    assert run.returncode == 2
    assert "needs more than val_size=1024" in run.stderr
    assert not (tmp_path / "small" / "pool.h5").exists()


@pytest.mark.slow
def test_train_and_diagnose_commands_on_the_toy(tmp_path):
    run = cli(
        "train",
        "--preset",
        "toy",
        "--embedding",
        "small",
        "--steps",
        40,
        "--batch-size",
        32,
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "model" / "card.json").exists()
    run = cli(
        "diagnose",
        "--model",
        tmp_path / "run" / "model",
        "--n",
        64,
        "--samples",
        100,
        "--device",
        "cpu",
        "--out",
        tmp_path / "report",
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "report" / "report.md").exists()
