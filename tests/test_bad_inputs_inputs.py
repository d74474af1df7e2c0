"""Bad inputs to ``sbicluster infer``: each is refused with one line and exit code 2 before any
work, or (for single out-of-range cutouts) flagged with no confident answer.

Every refusal test checks the exit code, that stderr is exactly one line starting
``sbicluster: error:`` with a distinctive part of the message, and that no output was written.
Most run :func:`sbicluster.cli.main` in this process (``run``) to keep the file fast; a few run
``python -m sbicluster.cli`` in a subprocess (``cli``), where nothing else can reach stderr.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from sbicluster.artifact import DEFAULT_MODEL_DIR
from sbicluster.io import FLAG_OUT_OF_RANGE, read_cutouts
from sbicluster.outputs import write_cutouts_fits
from sbicluster.validation import out_of_range

from .conftest import cli

TOY_BANDS = ("toy_blue", "toy_red")


def assert_refused(result, text: str, out: Path, before: dict | None = None) -> str:
    """Exit code 2, one ``sbicluster: error:`` line containing ``text``, outputs untouched."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("sbicluster: error:"), result.stderr
    assert text in lines[0], lines[0]
    if before is None:
        assert not out.exists()
    else:
        assert snapshot(out) == before
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def toy_images(toy_cutouts) -> np.ndarray:
    return read_cutouts(toy_cutouts[0], TOY_BANDS, image_size=8).images


def write_toy(path: Path, images: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_cutouts_fits(path, images, TOY_BANDS, pixel_scale=0.04)


@pytest.fixture
def run(capsys):
    """``sbicluster ARGS`` run in this process: returns ``returncode`` and ``stderr``."""
    from sbicluster.cli import main

    def _run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    return _run


def infer(source, model, out, *extra, runner=cli):
    return runner("infer", source, "--model", model, "--out", out, "--samples", 20, *extra)


# ---------------------------------------------------------------- 1. batch size


@pytest.mark.parametrize("size", [-3, 0])
def test_non_positive_batch_size_is_refused(tmp_path, toy_model_dir, toy_cutouts, size, run):
    out = tmp_path / "r"
    runner = cli if size < 0 else run  # one in a subprocess: nothing else may reach stderr
    result = infer(toy_cutouts[0], toy_model_dir, out, "--batch-size", size, runner=runner)
    assert_refused(
        result, f"batch size must be a positive integer (cutouts per network pass), got {size}", out
    )


# ---------------------------------------------------------------- 2. out-of-range pixels


def _cards(toy_model_dir):
    return {
        "toy": json.loads((toy_model_dir / "card.json").read_text()),
        "default": json.loads((DEFAULT_MODEL_DIR / "card.json").read_text()),
    }


@pytest.fixture(scope="module")
def default_preset_images() -> np.ndarray:
    """200 simulated cutouts of the shipped model's preset (the model's own simulator)."""
    from simulators.registry import simulator_from_card

    card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    simulator = simulator_from_card(card["simulator"])
    return simulator.simulate(200, torch.Generator().manual_seed(11)).images.numpy()


def test_out_of_range_rule_has_no_false_alarms_and_catches_flipped_and_huge_pixels(
    toy_model_dir, default_preset_images
):
    from simulators.toy import LinearGaussianToy

    cards = _cards(toy_model_dir)
    toy = LinearGaussianToy().simulate(200, torch.Generator().manual_seed(3)).images.numpy()
    for name, images in (("toy", toy), ("default", default_preset_images)):
        negative, too_bright, _ = out_of_range(images, cards[name])
        assert not (negative | too_bright).any(), name  # no false alarm on 200 simulations
        negative, _, _ = out_of_range(-images, cards[name])
        assert negative.all(), name
        _, too_bright, _ = out_of_range(images * np.float32(1e30), cards[name])
        assert too_bright.all(), name


def test_some_out_of_range_cutouts_are_flagged_with_no_answer(
    tmp_path, toy_model_dir, toy_cutouts, run
):
    images = toy_images(toy_cutouts)
    images[1] *= -1
    images[3] *= np.float32(1e30)
    source = write_toy(tmp_path / "in" / "mixed.fits", images)
    out = tmp_path / "r"
    result = infer(source, toy_model_dir, out, runner=run)
    assert result.returncode == 0, result.stderr
    table = Table.read(out / "summary.ecsv")
    bad = np.array([False, True, False, True, False, False])
    assert ((table["flag"] & FLAG_OUT_OF_RANGE) != 0).tolist() == bad.tolist()
    for column in ("p_cluster", "visibility", "log_age_median", "log_mass_hdi97", "age"):
        values = np.asarray(table[column], float)
        assert np.isnan(values[bad]).all() and np.isfinite(values[~bad]).all(), column
    assert "out_of_range" in table["flag"].description
    import arviz as az

    draws = az.from_netcdf(out / "posterior.nc").posterior["log_age"]
    draws = draws.transpose("cutout", ...).values  # (cutout, chain, draw)
    assert np.isnan(draws[bad]).all() and np.isfinite(draws[~bad]).all()


@pytest.mark.parametrize(
    "factor, text",
    [
        (-1.0, "all 6 cutouts have pixel values far outside"),
        (1e30, "are brighter than any cluster"),
    ],
    ids=["negative", "huge"],
)
def test_file_of_only_out_of_range_cutouts_is_refused(
    tmp_path, toy_model_dir, toy_cutouts, factor, text, run
):
    source = write_toy(tmp_path / "in" / "bad.fits", toy_images(toy_cutouts) * np.float32(factor))
    good = tmp_path / "r"  # results of an earlier run, to be left alone
    good.mkdir()
    (good / "summary.ecsv").write_text("# earlier results\n")
    (good / "posterior.nc").write_bytes(b"\x89HDF earlier")
    before = snapshot(good)
    runner = cli if factor < 0 else run
    result = infer(source, toy_model_dir, good, "--overwrite", runner=runner)
    line = assert_refused(result, text, good, before)
    if factor < 0:
        assert "mostly negative pixels" in line and "expected sky-subtracted e-/s" in line


def test_shipped_model_refuses_sign_flipped_cutouts(tmp_path, default_preset_images):
    card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    source = tmp_path / "flipped.fits"
    write_cutouts_fits(source, -default_preset_images[:50], card["bands"], pixel_scale=0.0396)
    out = tmp_path / "r"
    result = cli("infer", source, "--out", out, "--samples", 20)
    assert_refused(result, "all 50 cutouts have pixel values far outside", out)
    assert "mostly negative pixels" in result.stderr


# ---------------------------------------------------------------- 5. unique ids


def test_ids_keep_the_whole_file_name(tmp_path, toy_cutouts):
    images = toy_images(toy_cutouts)
    write_toy(tmp_path / "in" / "cut.1.fits", images[:2])
    write_toy(tmp_path / "in" / "cut.2.fits", images[2:4])
    write_toy(tmp_path / "in" / "one.fits", images[4:5])
    cut = read_cutouts(tmp_path / "in", TOY_BANDS, image_size=8)
    assert cut.ids == ["cut.1:0", "cut.1:1", "cut.2:0", "cut.2:1", "one"]


def test_colliding_ids_are_refused_naming_both_files(tmp_path, toy_model_dir, toy_cutouts, run):
    images = toy_images(toy_cutouts)
    folder = tmp_path / "in"
    write_toy(folder / "cut.fits", images)
    write_toy(folder / "x.fits", images)
    (folder / "x.fits").rename(folder / "cut.fit")
    out = tmp_path / "r"
    line = assert_refused(infer(folder, toy_model_dir, out, runner=run), "ids must be unique", out)
    assert "cut.fits" in line and "cut.fit " in line


# ---------------------------------------------------------------- 9. one-line errors


def test_one_posterior_draw_is_refused_up_front(tmp_path, toy_model_dir, toy_cutouts, run):
    out = tmp_path / "r"
    result = run("infer", toy_cutouts[0], "--model", toy_model_dir, "--out", out, "--samples", 1)
    assert_refused(result, "num_samples must be an integer >= 2", out)


def test_exptime_that_is_not_a_number_is_refused(tmp_path, toy_model_dir, toy_cutouts, run):
    source = tmp_path / "counts.fits"
    with fits.open(toy_cutouts[0]) as hdul:
        for hdu in hdul[1:]:
            hdu.header["BUNIT"] = "ELECTRONS"
            hdu.header["EXPTIME"] = "abc"
        hdul.writeto(source)
    out = tmp_path / "r"
    assert_refused(infer(source, toy_model_dir, out, runner=run), "EXPTIME must be positive", out)


def _large_images(folder: Path, size=40) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for band in TOY_BANDS:
        hdu = fits.PrimaryHDU(rng.normal(2.0, 1.0, (size, size)).astype(np.float32))
        hdu.header["FILTER"], hdu.header["BUNIT"] = band, "ELECTRONS/S"
        path = folder / f"{band}.fits"
        hdu.writeto(path)
        paths.append(path)
    return paths


def _infer_catalog(tmp_path, toy_model_dir, table: Table, run):
    images = _large_images(tmp_path)
    catalog = tmp_path / "positions.ecsv"
    table.write(catalog, format="ascii.ecsv")
    out = tmp_path / "r"
    result = run(
        "infer",
        *images,
        "--catalog",
        catalog,
        "--model",
        toy_model_dir,
        "--out",
        out,
        "--samples",
        20,
    )
    return result, out


def test_catalogue_positions_given_as_text_are_refused(tmp_path, toy_model_dir, run):
    table = Table({"x": ["ten", "twenty"], "y": ["ten", "twenty"]})
    result, out = _infer_catalog(tmp_path, toy_model_dir, table, run)
    assert_refused(
        result, "column x must hold numbers (0-based pixels), found text such as 'ten'", out
    )


def test_card_that_is_not_an_object_is_refused(tmp_path, toy_model_dir, toy_cutouts, run):
    model = tmp_path / "model"
    shutil.copytree(toy_model_dir, model)
    (model / "card.json").write_text("42\n")
    out = tmp_path / "r"
    assert_refused(
        infer(toy_cutouts[0], model, out, runner=run), "holds a JSON int, not an object", out
    )


def test_card_with_a_text_format_version_is_refused(tmp_path, toy_model_dir, toy_cutouts, run):
    model = tmp_path / "model"
    shutil.copytree(toy_model_dir, model)
    card = json.loads((model / "card.json").read_text())
    card["format_version"] = "one"
    (model / "card.json").write_text(json.dumps(card))
    out = tmp_path / "r"
    assert_refused(
        infer(toy_cutouts[0], model, out, runner=run), "format_version 'one' is not an integer", out
    )


def test_model_folder_that_does_not_exist_is_named_so(tmp_path, toy_cutouts, run):
    out = tmp_path / "r"
    result = infer(toy_cutouts[0], tmp_path / "no-such-model", out, runner=run)
    assert_refused(result, "no-such-model does not exist", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a CUDA device")
def test_cuda_device_without_cuda_is_refused(tmp_path, toy_model_dir, toy_cutouts, run):
    out = tmp_path / "r"
    result = infer(toy_cutouts[0], toy_model_dir, out, "--device", "cuda", runner=run)
    assert_refused(result, "no CUDA device; use --device cpu", out)


# ---------------------------------------------------------------- 11. silent acceptances


def test_empty_catalogue_is_refused(tmp_path, toy_model_dir, run):
    table = Table({"x": np.array([], float), "y": np.array([], float)})
    result, out = _infer_catalog(tmp_path, toy_model_dir, table, run)
    assert_refused(result, "positions.ecsv has no rows", out)


def test_extname_disagreeing_with_filter_is_refused(tmp_path, toy_model_dir, toy_cutouts, run):
    source = tmp_path / "swapped.fits"
    with fits.open(toy_cutouts[0]) as hdul:
        hdul[1].header["FILTER"] = "toy_red"  # EXTNAME says toy_blue
        hdul.writeto(source)
    out = tmp_path / "r"
    line = assert_refused(
        infer(source, toy_model_dir, out, runner=run),
        "EXTNAME says band toy_blue but the filter",
        out,
    )
    assert "toy_red" in line and "--bands" in line


def test_constant_cutout_message_prints_a_plain_number(tmp_path, toy_model_dir, toy_cutouts, run):
    images = toy_images(toy_cutouts)
    images[2, 0] = 0.0
    source = write_toy(tmp_path / "in" / "zero.fits", images)
    out = tmp_path / "r"
    line = assert_refused(
        infer(source, toy_model_dir, out, runner=run), "is constant (0 in every pixel)", out
    )
    assert "np.float" not in line
