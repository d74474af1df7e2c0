"""Refusals and interruptions of the commands that write folders: demo, diagnose, train, corner.

Each refusal is one line ``sbicluster: error: ...`` with exit code 2, given before any work, and
leaves what was there byte for byte unchanged (the folder's files are hashed before and after).
Training interrupted by SIGTERM exits 143 after writing a checkpoint that ``--resume`` continues.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbicluster.training import TrainingConfig, train
from sbicluster.training.checkpoint import read_checkpoint_meta
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error as _one_line_error
from tests.conftest import run_main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path → digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _env() -> dict:
    """Subprocess environment: this checkout first; one thread, so that training steps stay fast
    on a busy 2-core machine (two torch threads contending with other processes crawl)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


TOY_TRAIN = ["train", "--preset", "toy", "--embedding", "small", "--batch-size", "16"]
TOY_TRAIN += ["--device", "cpu"]


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "sbicluster.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )


def _tiny_run(out: Path) -> None:
    """A finished toy training run in ``out`` (model/, log.csv, checkpoint/), in seconds."""
    config = TrainingConfig(
        steps=10, batch_size=16, val_size=64, val_every=5, checkpoint_every=5, seed=0, device="cpu"
    )
    train(LinearGaussianToy(), config, out, progress=False)


# -- item 4: --overwrite for demo, diagnose and train --------------------------------------------


def test_demo_diagnose_and_train_refuse_existing_results_without_overwrite(
    toy_model_dir, tmp_path, capsys
):
    from sbicluster.demo import run_demo
    from sbicluster.diagnostics import run_diagnostics
    from sbicluster.errors import OutputExistsError

    demo = tmp_path / "demo"
    run_demo(demo, model=toy_model_dir, n=20, num_samples=50, device="cpu")
    report = tmp_path / "report"
    from sbicluster.artifact import load_model

    model = load_model(toy_model_dir, device="cpu")
    run_diagnostics(
        model, LinearGaussianToy(), n=20, num_samples=20, out_dir=report, progress=False
    )
    run = tmp_path / "run"
    _tiny_run(run)
    folders = {demo: None, report: None, run: None}
    for folder in folders:
        folders[folder] = _hashes(folder)

    _one_line_error(
        run_main(capsys, "demo", "--model", toy_model_dir, "--out", demo, "--n", 20),
        "earlier run",
        "--overwrite",
    )
    _one_line_error(
        run_main(capsys, "diagnose", "--model", toy_model_dir, "--n", 20, "--out", report),
        "diagnostics report",
        "--overwrite",
    )
    _one_line_error(
        run_main(capsys, "train", "--preset", "toy", "--out", run),
        "previous training run",
        "--resume",
        "--overwrite",
    )
    _one_line_error(
        run_main(capsys, "train", "--preset", "toy", "--out", run, "--resume", "--overwrite"),
        "exclude each other",
    )
    # an --out that is a file, or lies under one, is refused too
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for command in (["demo"], ["diagnose", "--n", 20], ["train", "--preset", "toy"]):
        for out in (a_file, a_file / "sub"):
            _one_line_error(
                run_main(capsys, *command, "--model", toy_model_dir, "--out", out)
                if command[0] != "train"
                else run_main(capsys, *command, "--out", out),
                "is a file, not a folder",
            )
    assert a_file.read_text() == "keep me"
    # the Python functions follow the same rule
    with pytest.raises(OutputExistsError):
        run_demo(demo, model=toy_model_dir, n=20, num_samples=50, device="cpu")
    with pytest.raises(OutputExistsError):
        run_diagnostics(model, LinearGaussianToy(), n=20, num_samples=20, out_dir=report)
    with pytest.raises(OutputExistsError, match="--resume .*--overwrite"):
        _tiny_run(run)
    for folder, before in folders.items():
        assert _hashes(folder) == before, folder

    # --overwrite replaces; for train it starts afresh and leaves no stale checkpoint
    assert run_main(capsys, "demo", "--model", toy_model_dir, "--out", demo, "--n", 20,
                    "--samples", 50, "--device", "cpu", "--overwrite").returncode == 0  # fmt: skip
    assert run_main(capsys, "diagnose", "--model", toy_model_dir, "--n", 20, "--samples", 20,
                    "--device", "cpu", "--out", report, "--overwrite").returncode == 0  # fmt: skip
    fresh = _cli(*TOY_TRAIN, "--steps", 3, "--out", run, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    meta = read_checkpoint_meta(run / "checkpoint")
    assert (meta["step"], meta["stop_reason"], meta["config"]["batch_size"]) == (3, "steps", 16)
    log = (run / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log] == ["step", "3"]
    _one_line_error(
        run_main(
            capsys,
            "train",
            "--preset",
            "toy",
            "--embedding",
            "small",
            "--batch-size",
            16,
            "--device",
            "cpu",
            "--steps",
            3,
            "--out",
            run,
            "--resume",
        ),  # fmt: skip
        "is complete",
        "--overwrite",
    )


# -- item 10: checkpoints at every stop; SIGTERM exits 143 and resumes ----------------------------


def _wait_for_log_rows(path: Path, rows: int, proc: subprocess.Popen, timeout: float = 120):
    """Wait until ``path`` (log.csv) holds ``rows`` data rows; fail if ``proc`` ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and len(path.read_text().splitlines()) > rows:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {rows} log rows in {path} after {timeout} s")


def _sigterm_after_rows(args, log: Path, rows: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbicluster.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    _wait_for_log_rows(log, rows, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_exits_143_with_a_checkpoint_that_resume_continues(tmp_path):
    run = tmp_path / "run"
    args = [*TOY_TRAIN, "--steps", 100_000, "--out", run]
    first = _sigterm_after_rows(args, run / "log.csv", rows=1)  # the CPU preset logs every 100
    assert first.returncode == 143, first.stderr
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1, first.stderr
    assert "SIGTERM" in lines[0] and str(run / "checkpoint") in lines[0] and "--resume" in lines[0]
    meta = read_checkpoint_meta(run / "checkpoint")
    assert meta["stop_reason"] == "signal SIGTERM" and meta["step"] >= 100
    assert (run / "model" / "card.json").is_file()  # the model so far, too

    again = _sigterm_after_rows([*args, "--resume"], run / "log.csv", rows=2)
    assert again.returncode == 143, again.stderr
    resumed = read_checkpoint_meta(run / "checkpoint")
    assert resumed["step"] >= 200 > meta["step"]
    assert resumed["elapsed_s"] > meta["elapsed_s"]
    steps = [row.split(",")[0] for row in (run / "log.csv").read_text().splitlines()]
    assert steps[:3] == ["step", "100", "200"]  # appended: continued from step ≥ 100, not 0


def test_resume_after_a_time_budget_stop_gets_a_fresh_budget(tmp_path):
    run = tmp_path / "run"
    args = [*TOY_TRAIN, "--steps", 100_000, "--time-budget", 0.02, "--out", run]  # 1.2 s
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert "training stopped (time budget)" in first.stdout
    meta = read_checkpoint_meta(run / "checkpoint")
    assert meta["stop_reason"] == "time budget" and meta["step"] > 0
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "training stopped (time budget)" in resumed.stdout
    again = read_checkpoint_meta(run / "checkpoint")
    assert again["step"] > meta["step"] and again["elapsed_s"] >= meta["elapsed_s"] + 1.2
    card = json.loads((run / "model" / "card.json").read_text())
    assert card["training"]["steps_done"] == again["step"]


# -- items 9 and 11: corner -----------------------------------------------------------------------


@pytest.fixture
def infer_out(toy_model_dir, toy_cutouts, tmp_path):
    import sbicluster

    path, _ = toy_cutouts
    out = tmp_path / "results"
    sbicluster.infer(
        path, model=toy_model_dir, num_samples=100, device="cpu", out=out, progress=False
    )
    return out


def test_corner_refuses_a_missing_or_bad_truth_before_plotting(infer_out, tmp_path, capsys):
    before = _hashes(infer_out)
    _one_line_error(
        run_main(capsys, "corner", infer_out, "--truth", tmp_path / "missing.ecsv"),
        "missing.ecsv",
        "not found",
    )
    bad = tmp_path / "bad.ecsv"
    bad.write_text("# %ECSV 1.0\nthis is not a table\x00\n")
    _one_line_error(run_main(capsys, "corner", infer_out, "--truth", bad), "bad.ecsv")
    no_columns = tmp_path / "no_columns.ecsv"
    no_columns.write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: id, datatype: string}\nid\na\n"
    )
    _one_line_error(
        run_main(capsys, "corner", infer_out, "--truth", no_columns), "lacks the column(s) label"
    )
    assert not (infer_out / "corner").exists()
    assert _hashes(infer_out) == before


def test_corner_reports_cutouts_plotted_and_the_folder(infer_out, capsys):
    run = run_main(capsys, "corner", infer_out, "--max", 2)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"2 cutouts plotted (PDF/PNG) in {infer_out / 'corner'}"
    assert len(list((infer_out / "corner").iterdir())) == 4  # a PNG and a PDF per cutout


def test_diagnose_refuses_a_negative_number_of_local_test_probes(capsys, toy_model_dir, tmp_path):
    run = run_main(
        capsys, "diagnose", "--model", toy_model_dir, "--lc2st-probes", -3, "--out", tmp_path / "r"
    )
    _one_line_error(run, "--lc2st-probes -3", "≥ 0")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("members", [0, -2])
def test_diagnose_refuses_an_ensemble_without_classifiers(capsys, toy_model_dir, tmp_path, members):
    run = run_main(
        capsys,
        "diagnose",
        "--model",
        toy_model_dir,
        "--lc2st-ensemble",
        members,
        "--out",
        tmp_path / "r",
    )
    _one_line_error(run, f"--lc2st-ensemble {members}", "≥ 1")
    assert not (tmp_path / "r").exists()
