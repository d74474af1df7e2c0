"""Reliability of the outputs: one run's files as one unit, bounded memory, refused oversized
runs, a bad ``--out`` refused before any work, and output permissions that follow the umask.

Refusals go through the command line (exit code 2, one ``sbicluster: error:`` line) and must
leave an existing results folder byte for byte as it was.
"""

import os
import stat

import numpy as np
import pytest
from astropy.table import Table

import sbicluster
import sbicluster.api
from sbicluster.cli import main
from sbicluster.files import atomic_folder
from tests.conftest import cli


def _one_line_error(returncode, stderr, *fragments):
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbicluster: error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _run_main(capsys, *args):
    """``sbicluster ARGS`` in this process (faster than a subprocess); (code, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture
def results(toy_model_dir, toy_cutouts, tmp_path):
    """A results folder of an earlier run, with samples.npz and a corner/ plot."""
    path, _ = toy_cutouts
    out = tmp_path / "results"
    sbicluster.infer(
        path,
        model=toy_model_dir,
        num_samples=40,
        seed=0,
        out=out,
        save_samples=True,
        progress=False,
    )
    (out / "corner").mkdir()
    (out / "corner" / "corner_0.png").write_bytes(b"old plot")
    return out


def test_item3_overwrite_writes_one_run_as_a_unit(toy_model_dir, toy_cutouts, results):
    path, _ = toy_cutouts
    before = _snapshot(results)
    refused = cli("infer", path, "--model", toy_model_dir, "--out", results, "--samples", 30)
    _one_line_error(refused.returncode, refused.stderr, "--overwrite", "already holds")
    assert _snapshot(results) == before

    # an exception inside the block: the old folder stays, no temporary folder remains
    with pytest.raises(RuntimeError), atomic_folder(results, overwrite=True) as tmp:
        (tmp / "summary.ecsv").write_text("half a run")
        raise RuntimeError("killed")
    assert _snapshot(results) == before and _siblings(results) == []

    # a killed run leaves its temporary folder behind (its process is gone): the next run
    # removes it and still works
    stale = results.parent / f".{results.name}.tmp-999999999-abcd"
    stale.mkdir()
    (stale / "summary.ecsv").write_text("from a killed run")
    run = cli(
        "infer", path, "--model", toy_model_dir, "--out", results, "--samples", 30, "--overwrite"
    )
    assert run.returncode == 0, run.stderr
    # the new run replaced the folder: no samples.npz or corner/ of the previous run
    assert sorted(p.name for p in results.iterdir()) == ["posterior.nc", "summary.ecsv"]
    assert Table.read(results / "summary.ecsv", format="ascii.ecsv").meta["num_samples"] == 30
    assert _siblings(results) == []

    # killed between the two renames: the previous run waits in .old-; the next run restores it
    parked = results.parent / f".{results.name}.old-999999999-abcd"
    parked.mkdir()
    os.rename(results, parked / "run")
    with atomic_folder(results, overwrite=True) as tmp:
        assert sorted(p.name for p in results.iterdir()) == ["posterior.nc", "summary.ecsv"]
        (tmp / "summary.ecsv").write_text("new")
    assert sorted(p.name for p in results.iterdir()) == ["summary.ecsv"]
    assert _siblings(results) == []

    # entries the command did not write (e.g. --out .) are kept through an overwrite
    (results / "notes.txt").write_text("mine")
    with atomic_folder(results, overwrite=True, owned=["summary.ecsv"]) as tmp:
        (tmp / "summary.ecsv").write_text("newer")
    assert (results / "notes.txt").read_text() == "mine"
    assert (results / "summary.ecsv").read_text() == "newer"

    # an existing empty folder may be used without --overwrite
    empty = results.parent / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:
        (tmp / "a").write_text("1")
    assert (empty / "a").read_text() == "1"


def test_item6_draws_stream_to_disk_with_the_same_values(toy_model_dir, toy_cutouts, tmp_path):
    import arviz as az
    import xarray as xr

    from sbicluster.artifact import load_model
    from sbicluster.inference import predict
    from sbicluster.io import read_cutouts

    path, _ = toy_cutouts
    model = load_model(toy_model_dir)
    images = read_cutouts(path, tuple(model.bands), image_size=8).images
    kept = predict(model, images, num_samples=30, generator=_gen(), batch_size=4, progress=False)
    chunks = []
    streamed = predict(
        model,
        images,
        num_samples=30,
        generator=_gen(),
        batch_size=4,
        progress=False,
        sink=lambda start, draws: chunks.append((start, draws.copy())),
    )
    assert streamed.samples is None and [s for s, _ in chunks] == [0, 4]
    np.testing.assert_array_equal(np.concatenate([d for _, d in chunks]), kept.samples)

    # the command line streams (keep_samples=False); its files equal the in-memory path's
    run = cli(
        "infer", path, "--model", toy_model_dir, "--out", tmp_path / "cli", "--samples", 30,
        "--save-samples",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    api = sbicluster.infer(
        path, model=toy_model_dir, num_samples=30, progress=False, out=tmp_path / "api",
        save_samples=True,
    )  # fmt: skip
    a = az.from_netcdf(tmp_path / "cli" / "posterior.nc").posterior
    b = az.from_netcdf(tmp_path / "api" / "posterior.nc").posterior
    a.attrs.pop("created_at"), b.attrs.pop("created_at")
    xr.testing.assert_identical(a, b)
    np.testing.assert_array_equal(a["log_age"].values[0].T, api.samples[:, :, 0])
    assert (tmp_path / "cli" / "summary.ecsv").read_bytes() == (
        tmp_path / "api" / "summary.ecsv"
    ).read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "samples.npz")["samples"], api.samples)
    lazy = sbicluster.infer(
        path, model=toy_model_dir, num_samples=30, progress=False, out=tmp_path / "lazy",
        keep_samples=False,
    )  # fmt: skip
    assert lazy.samples is None
    assert lazy.to_inference_data().posterior["log_age"].shape == (1, 30, 6)


def _gen():
    import torch

    return torch.Generator().manual_seed(7)


def test_item7_oversized_runs_are_refused_before_any_work(
    toy_model_dir, toy_cutouts, results, monkeypatch
):
    path, _ = toy_cutouts
    before = _snapshot(results)
    run = cli(
        "infer", path, "--model", toy_model_dir, "--out", results, "--samples", 10**12,
        "--overwrite",
    )  # fmt: skip
    _one_line_error(run.returncode, run.stderr, "would write", "GB", "--samples")
    assert _snapshot(results) == before and _siblings(results) == []

    # the memory rule: draws kept in memory (Python API without --out) against available RAM
    monkeypatch.setattr(sbicluster.api, "_available_memory", lambda: 50_000_000)
    with pytest.raises(sbicluster.errors.InputError, match="of working memory") as err:
        sbicluster.infer(path, model=toy_model_dir, num_samples=1_000_000, progress=False)
    assert "\n" not in str(err.value)
    sbicluster.api.check_run_size(6, 1000, 4, out=results, keep_samples=False)  # small: fine


def test_item8_bad_out_is_refused_before_reading_models_or_data(
    toy_cutouts, tmp_path, capsys, monkeypatch
):
    path, _ = toy_cutouts
    note = tmp_path / "note.txt"
    note.write_text("not a folder")
    missing_model = tmp_path / "no-such-model"  # never read: --out fails first
    for out in (note, note / "results"):
        run = cli("infer", path, "--model", missing_model, "--out", out)
        _one_line_error(run.returncode, run.stderr, "--out", "is a file, not a folder")
        code, err = _run_main(capsys, "simulate", "--preset", "toy", "--n", 3, "--out", out)
        _one_line_error(code, err, "--out", "is a file, not a folder")
        code, err = _run_main(capsys, "simulate", "--model", missing_model, "--out", out)
        _one_line_error(code, err, "--out", "is a file, not a folder")  # before the model
    assert note.read_text() == "not a folder"

    # a read-only folder (root ignores permissions, so os.access is patched)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real_access(p, mode)
    )
    for args in (
        ("infer", path, "--model", missing_model, "--out", locked / "results"),
        ("simulate", "--preset", "toy", "--n", 3, "--out", locked / "mock"),
    ):
        code, err = _run_main(capsys, *args)
        _one_line_error(code, err, "is not writable")
    assert list(locked.iterdir()) == []


def test_item12_outputs_follow_the_umask(toy_model_dir, toy_cutouts, tmp_path):
    from sbicluster.demo import simulate_to_fits

    path, _ = toy_cutouts
    old = os.umask(0o022)
    try:
        out = tmp_path / "results"
        sbicluster.infer(
            path, model=toy_model_dir, num_samples=20, out=out, save_samples=True, progress=False
        )
        replaced = tmp_path / "replaced"
        replaced.mkdir(mode=0o700)
        sbicluster.infer(
            path, model=toy_model_dir, num_samples=20, out=replaced, overwrite=True, progress=False
        )
        mock = tmp_path / "mock"
        simulate_to_fits(mock, preset="toy", n=3)
    finally:
        os.umask(old)

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    for folder in (out, replaced, mock):
        assert mode(folder) == 0o755, folder
    for name in ("summary.ecsv", "posterior.nc", "samples.npz"):
        assert mode(out / name) == 0o644, name
    for name in ("summary.ecsv", "posterior.nc"):
        assert mode(replaced / name) == 0o644, name
    for name in ("cutouts.fits", "truth.ecsv"):
        assert mode(mock / name) == 0o644, name
