"""Whole training loop, two recorded configurations side by side in one run.

:mod:`benchmarks.training_speed` times the bare training step. This benchmark times everything a
run of ``sbicluster train`` does between its first step and its last validation: gathering each
batch from a pre-simulated pool on disk (and its symmetric views), the step, validation on the
held-out rows every ``val_every`` steps, checkpoints, the log. It runs
:func:`sbicluster.training.train` with the configurations recorded in two model cards (by default
the previous float32 default, ``benchmarks/results/training_float32_previous/card.json``, and the
shipped default), each under the same short wall-time budget on the same pool, alternating
(A, B, A, B, ...) so that a drift in the machine's speed reaches both alike. Every run has a fresh
process of its own, since some settings (``retain_freed_memory``) hold for the whole process.

``--candidate-set FIELD=VALUE`` changes a field of the candidate's recorded configuration; by
default ``retain_freed_memory=true fused_optimizer=true validation_chunk=null``, which
``sbicluster train`` now applies and which the shipped default (recorded before these settings
existed) ran without. They change the speed of a run, not what it computes
(:data:`sbicluster.training.config.SPEED_ONLY_FIELDS`).

The rate of one run is that of its training record (:mod:`benchmarks.training`): training samples
up to the last validation row, divided by the wall-clock time at that row. The speed-up is the
ratio of the two configurations' rates summed over rounds (total samples over total seconds).

Usage::

    python -m benchmarks.training_loop                        # 2 rounds of 150 s per configuration
    python -m benchmarks.training_loop --quick --results-dir /tmp/check   # a seconds-long check

Writes ``results/training_loop.{json,md}``.

Goal (the CPU training speed-up): ≥ 2× the previous default's rate with the same architecture.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from benchmarks.records import RESULTS_DIR, environment, write_results
from sbicluster.training import TrainingConfig, train
from sbicluster.training.data import write_dataset
from simulators.registry import simulator_for_preset

__all__ = ["loop_rate", "run_config", "parse_field_settings", "main"]

NAME = "training_loop"
GOAL_SPEEDUP = 2.0
DEFAULT_CARDS = (
    RESULTS_DIR / "training_float32_previous" / "card.json",
    Path(__file__).resolve().parents[1] / "sbicluster" / "models" / "default" / "card.json",
)
DEFAULT_CANDIDATE_SETTINGS = (
    "retain_freed_memory=true",
    "fused_optimizer=true",
    "validation_chunk=null",
)
log = logging.getLogger(__name__)


def loop_rate(log_csv: Path, batch_size: int) -> dict:
    """A run's rate from its log, as its training record states it.

    Parameters
    ----------
    log_csv : Path
        ``log.csv`` written by :func:`sbicluster.training.train` (one row per validation).
    batch_size : int
        Training samples per step.

    Returns
    -------
    dict
        ``steps`` and ``seconds`` at the last validation row, ``samples`` (steps × batch) and
        ``samples_per_s``.

    Raises
    ------
    ValueError
        If the log holds no validation row (the budget was shorter than ``val_every`` steps).
    """
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{log_csv}: no validation row; give the runs a longer budget")
    steps, seconds = int(rows[-1]["step"]), float(rows[-1]["elapsed_s"])
    samples = steps * batch_size
    return {
        "steps": steps,
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / seconds,
    }


def run_config(
    simulator, config: TrainingConfig, pool: Path, seconds: float, out_dir: Path
) -> dict:
    """Train with ``config`` on ``pool`` for ``seconds`` of wall-clock time; its loop rate.

    Parameters
    ----------
    simulator : Simulator
        The pool's simulator.
    config : TrainingConfig
        A recorded configuration; its data source, budget and step limit are replaced.
    pool : Path
        Pre-simulated pool (:func:`sbicluster.training.data.write_dataset`).
    seconds : float
        Wall-time budget (s).
    out_dir : Path
        Fresh run folder.

    Returns
    -------
    dict
        :func:`loop_rate` of the run.
    """
    config = TrainingConfig.from_dict(
        {**config.to_dict(), "dataset": str(pool), "max_time_s": seconds, "steps": 10**9}
    )
    train(simulator, config, out_dir, progress=False)
    return loop_rate(out_dir / "log.csv", config.batch_size)


def parse_field_settings(settings: list[str]) -> dict:
    """``FIELD=VALUE`` strings as a dictionary of configuration fields (values read as JSON).

    Parameters
    ----------
    settings : list of str
        E.g. ``["retain_freed_memory=true", "batch_size=64"]``.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        A setting without ``=``, a value that is not JSON, or a field :class:`TrainingConfig`
        does not have.
    """
    known = set(TrainingConfig().to_dict())
    fields = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep:
            raise ValueError(f"--candidate-set {setting!r}: expected FIELD=VALUE")
        if name not in known:
            raise ValueError(
                f"--candidate-set {setting!r}: no training configuration field {name!r}"
            )
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--candidate-set {setting!r}: value is not JSON ({err.msg})"
            ) from None
    return fields


def _run_in_fresh_process(
    preset: str, config: dict, pool: str, seconds: float, out_dir: str
) -> dict:
    """:func:`run_config` in a process of its own (what the worker calls)."""
    simulator = simulator_for_preset(preset, device="cpu")
    return run_config(
        simulator, TrainingConfig.from_dict(config), Path(pool), seconds, Path(out_dir)
    )


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _label(config: TrainingConfig) -> str:
    precision = "bfloat16 autocast" if config.cpu_amp else "float32"
    memory = "freed memory retained" if config.retain_freed_memory else "system allocator"
    optimizer = "fused AdamW" if config.fused_optimizer else "AdamW looping over tensors"
    return (
        f"{precision}, batch {config.batch_size}, {config.augment_views} view"
        f"{'s' if config.augment_views > 1 else ''}, validation every {config.val_every} steps "
        f"in chunks of {config.validation_chunk_size}, {memory}, {optimizer}"
    )


def _markdown(res: dict) -> str:
    env = res["environment"]
    names = list(res["configs"])
    rows = []
    for i, rnd in enumerate(res["rounds"]):
        rows.append(
            f"| {i + 1} | "
            + " | ".join(
                f"{rnd[n]['samples_per_s']:.0f} ({rnd[n]['steps']:,} steps, {rnd[n]['seconds']:.0f} s)"
                for n in names
            )
            + f" | {rnd[names[1]]['samples_per_s'] / rnd[names[0]]['samples_per_s']:.2f}× |"
        )
    total = res["total"]
    speedup = res["speedup"]
    lines = [
        "# Whole training loop: two recorded configurations in one run",
        "",
        f"Command: `{env['command']}` — {env['date_utc']}, git {env['git_commit']}",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, torch threads {env['torch_threads']}), "
        f"device `{res['device']}`",
        f"Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}",
        "",
        f"`sbicluster.training.train` on one pool of {res['pool']:,} cutouts (preset "
        f"`{res['preset']}`, pool seed {res['seed']}; its last rows validate), "
        f"{res['seconds']:.0f} s of wall-clock budget per run, the two configurations alternated "
        f"for {len(res['rounds'])} rounds, each run in a fresh process. Each rate is the "
        "training record's: samples up to the "
        "last validation row over the wall-clock time at that row, so it includes batch "
        "gathering, symmetric views, validation, checkpoints and the log.",
        "",
        *(f"- **{n}**: `{res['cards'][n]}`: {res['configs'][n]}" for n in names),
        *(
            [f"- candidate settings changed from its card: `{' '.join(res['candidate_set'])}`"]
            if res.get("candidate_set")
            else []
        ),
        "",
        f"| round | {names[0]} samples/s | {names[1]} samples/s | speed-up |",
        "|---|---|---|---|",
        *rows,
        f"| all | {total[names[0]]:.0f} | {total[names[1]]:.0f} | **{speedup:.2f}×** |",
        "",
        f"Goal ≥ {GOAL_SPEEDUP:.0f}× at the same architecture: "
        f"**{'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}** ({speedup:.2f}×).",
    ]
    if res["quick"]:
        lines += ["", "A `--quick` check run: too short for a rate worth quoting."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cards",
        nargs=2,
        type=Path,
        default=list(DEFAULT_CARDS),
        metavar=("BASELINE", "CANDIDATE"),
        help="model cards whose training configurations are compared (default: previous and "
        "shipped default)",
    )
    parser.add_argument(
        "--candidate-set",
        nargs="*",
        default=list(DEFAULT_CANDIDATE_SETTINGS),
        metavar="FIELD=VALUE",
        help="fields of the candidate's configuration to change, values as JSON (default: "
        f"{' '.join(DEFAULT_CANDIDATE_SETTINGS)}; give none to take the card as recorded)",
    )
    parser.add_argument("--preset", default="m83-wfc3")
    parser.add_argument("--pool", type=int, default=20480, help="pre-simulated cutouts")
    parser.add_argument("--seconds", type=float, default=150.0, help="budget of each run (s)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny runs: a check, not a rate")
    parser.add_argument(
        "--results-dir", default=None, help="where to write (default: benchmarks/results)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        candidate_set = parse_field_settings(args.candidate_set)
    except ValueError as err:
        parser.error(str(err))
    names = ("baseline", "candidate")
    configs = {}
    for name, card in zip(names, args.cards, strict=True):
        recorded = TrainingConfig.from_dict(json.loads(card.read_text())["training"]["config"])
        overrides = {"device": "cpu", **(candidate_set if name == "candidate" else {})}
        if args.quick:
            overrides.update(val_size=64, val_every=1, checkpoint_every=4)
        configs[name] = TrainingConfig.from_dict({**recorded.to_dict(), **overrides})
    pool_n = 256 if args.quick else args.pool
    seconds = 6.0 if args.quick else args.seconds
    simulator = simulator_for_preset(args.preset, device="cpu")
    res = {
        "environment": environment("cpu"),
        "device": "cpu",
        "preset": args.preset,
        "pool": pool_n,
        "seed": args.seed,
        "seconds": seconds,
        "quick": args.quick,
        "cards": {n: _shown(c) for n, c in zip(names, args.cards, strict=True)},
        "configs": {n: _label(c) for n, c in configs.items()},
        "candidate_set": list(args.candidate_set),
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="training_loop_") as tmp:
        pool = Path(tmp) / "pool.h5"
        log.info("simulating a pool of %d cutouts ...", pool_n)
        write_dataset(
            simulator, pool_n, pool, torch.Generator().manual_seed(args.seed), progress=False
        )
        for r in range(args.rounds):
            rnd = {}
            for name in names:
                log.info(
                    "round %d, %s: %s for %.0f s ...", r + 1, name, res["configs"][name], seconds
                )
                with ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                ) as worker:
                    rnd[name] = worker.submit(
                        _run_in_fresh_process,
                        args.preset,
                        configs[name].to_dict(),
                        str(pool),
                        seconds,
                        str(Path(tmp) / f"{name}_{r}"),
                    ).result()
            res["rounds"].append(rnd)
    res["total"] = {
        n: sum(r[n]["samples"] for r in res["rounds"]) / sum(r[n]["seconds"] for r in res["rounds"])
        for n in names
    }
    res["speedup"] = res["total"]["candidate"] / res["total"]["baseline"]
    write_results(NAME, res, _markdown(res), args.results_dir)
    return res


if __name__ == "__main__":
    main()
