"""Record a training run: training curves and the model card's facts as results/training.{json,md,png}.

Usage::

    python -m benchmarks.training --run runs/default [--model sbicluster/models/default]
        [--compare DIR [DIR ...]]
    python -m benchmarks.training --model sbicluster/models/default --compare DIR [DIR ...]

Reads ``<run>/log.csv`` (written by :func:`sbicluster.training.train`; without ``--run``, the
model folder's copy ``training_log.csv``) and the model's ``card.json``, plots training and validation losses against step and wall-clock time, and
writes a report with the throughput actually achieved (training samples per second, which includes
simulation for online runs but not for runs on a pre-simulated pool), the stop reason and the final
validation metrics. Nothing is re-run: the numbers are the run's own.

``--compare DIR [DIR ...]`` names other runs (folders with their ``card.json`` and
``training_log.csv``, as every shipped model has): the report sets them beside this run
(precision, batch, symmetric views, steps, samples, rate, best validation losses) and overlays
their validation curves against wall-clock time. The runs are separate runs; the speed-up of one setting over the
other measured in one process is taken from ``results/training_speed.json``
(``benchmarks/training_speed.py``) when it exists, and quoted with its own date and commit; so
is the whole training loop's, from ``results/training_loop.json`` (``benchmarks/training_loop.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.records import RESULTS_DIR, environment, write_results  # noqa: E402
from sbicluster.training.config import upgrade_config_dict  # noqa: E402

__all__ = ["read_log", "plot_curves", "run_summary", "loop_lines", "speed_lines", "main"]


def read_log(path: Path) -> list[dict[str, float]]:
    """Rows of a training ``log.csv`` as floats."""
    with open(path, newline="") as fh:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(fh)
        ]


def plot_curves(rows: list[dict[str, float]], path: Path) -> Path:
    """Training/validation total loss and flow NLL vs step, and validation NLL vs wall time."""
    step = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, ax in (("total", axes[0]), ("nll", axes[1])):
        ax.plot(step, [r[f"train_{key}"] for r in rows], label="train (running mean)")
        ax.plot(step, [r[f"val_{key}"] for r in rows], label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel({"total": "total loss", "nll": "flow NLL of θ (clusters)"}[key])
        ax.legend()
    axes[2].plot(
        [r["elapsed_s"] / 60 for r in rows], [r["val_bce"] for r in rows], label="classifier BCE"
    )
    axes[2].plot(
        [r["elapsed_s"] / 60 for r in rows], [r["val_mse"] for r in rows], label="visibility MSE"
    )
    axes[2].set_xlabel("wall-clock time [min]")
    axes[2].set_ylabel("validation loss")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_summary(card: dict, rows: list[dict[str, float]]) -> dict:
    """Throughput and losses of one training run from its card and validation log.

    Parameters
    ----------
    card : dict
        The model's ``card.json``.
    rows : list of dict
        The run's validation rows (:func:`read_log`), in step order.

    Returns
    -------
    dict
        ``precision`` (``float32`` or ``bfloat16 autocast``), ``augment_views`` (symmetric views
        of the training cutouts, 1 = as simulated), ``steps``, ``batch_size``,
        ``samples`` (steps × batch), ``elapsed_s`` (s, at the last validation row),
        ``training_samples_per_s`` (at the last validation row), ``fastest_100_step_samples_per_s``,
        ``best_validation`` (the row of smallest total loss), ``stop_reason``.
    """
    training = card.get("training", {})
    config = upgrade_config_dict(training.get("config", {}))
    last = rows[-1]
    batch = config.get("batch_size")
    steps_done = int(training.get("steps_done", last["step"]))
    stretches = [
        (b["step"] - a["step"]) * batch / (b["elapsed_s"] - a["elapsed_s"])
        for a, b in zip(rows, rows[1:], strict=False)
        if batch and b["elapsed_s"] > a["elapsed_s"]
    ]
    return {
        "precision": "bfloat16 autocast" if training.get("amp") else "float32",
        "augment_views": int(config.get("augment_views", 1)),
        "steps": steps_done,
        "batch_size": batch,
        "samples": steps_done * (batch or 0),
        "last_validation_step": last["step"],
        "elapsed_s": last["elapsed_s"],
        "training_samples_per_s": (
            last["step"] * batch / last["elapsed_s"] if batch else float("nan")
        ),
        "fastest_100_step_samples_per_s": max(stretches, default=float("nan")),
        "best_validation": min(rows, key=lambda r: r["val_total"]),
        "stop_reason": training.get("stop_reason", "?"),
    }


def plot_comparison(runs: list[tuple[str, list[dict[str, float]]]], path: Path) -> Path:
    """Validation flow NLL and total loss against wall-clock time for several runs, each given as
    ``(label, validation rows)``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("val_nll", axes[0]), ("val_total", axes[1])):
        for label, run_rows in runs:
            ax.plot(
                [r["elapsed_s"] / 60 for r in run_rows], [r[key] for r in run_rows], label=label
            )
        ax.set_xlabel("wall-clock time [min]")
        ax.set_ylabel(
            {"val_nll": "validation flow NLL of θ", "val_total": "validation total loss"}[key]
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loop_lines(loop: dict) -> list[str]:
    """Markdown lines quoting a ``training_loop.json`` record's same-process comparison."""
    env = loop.get("environment", {})
    base, cand = loop["total"]["baseline"], loop["total"]["candidate"]
    return [
        "## Throughput of the whole training loop measured in one run",
        "",
        f"From `benchmarks/training_loop.py` ({env.get('date_utc', '?')}, git "
        f"{env.get('git_commit', '?')}, {env.get('cpu', '?')}, {env.get('cpu_cores', '?')} cores): "
        f"`sbicluster.training.train` with each card's recorded configuration on one pool of "
        f"{loop['pool']:,} cutouts, {loop['seconds']:.0f} s per run, each run in a fresh process, "
        f"the two alternated for {len(loop['rounds'])} rounds; each rate counts batch gathering, "
        "symmetric views, validation and checkpoints, as the whole-run rates below do."
        + (
            f" The candidate's settings changed from its card: `{' '.join(loop['candidate_set'])}` "
            "(speed-only settings that `sbicluster train` now applies)."
            if loop.get("candidate_set")
            else ""
        ),
        "",
        "| configuration | card | samples/s |",
        "|---|---|---|",
        f"| {loop['configs']['baseline']} | `{loop['cards']['baseline']}` | {base:.0f} |",
        f"| {loop['configs']['candidate']} | `{loop['cards']['candidate']}` | {cand:.0f} |",
        "",
        f"Speed-up of the whole loop, same architecture, same run: **{loop['speedup']:.2f}×** "
        "(goal ≥ 2×; rounds "
        + " / ".join(
            f"{r['candidate']['samples_per_s'] / r['baseline']['samples_per_s']:.2f}"
            for r in loop["rounds"]
        )
        + "). This is the figure that measures the change: the whole-run rates of the "
        "separate runs compared below were measured on different days, and this machine's speed "
        "varies between days.",
    ]


def speed_lines(speed: dict) -> list[str]:
    """Markdown lines quoting a ``training_speed.json`` record's same-process comparison."""
    env = speed.get("environment", {})
    lines = [
        "## Throughput of the two precisions measured in one process",
        "",
        f"From `benchmarks/training_speed.py` ({env.get('date_utc', '?')}, git "
        f"{env.get('git_commit', '?')}, {env.get('cpu', '?')}, {env.get('cpu_cores', '?')} cores, "
        f"torch threads {env.get('torch_threads', '?')}): fresh models, batches from a bank of "
        "simulations in memory, the same architecture in both precisions.",
        "",
        "| embedding | batch | float32 samples/s | bfloat16 autocast samples/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for embedding, runs in speed.get("bank", {}).items():
        if "float32" in runs and "amp" in runs:
            f32, amp = runs["float32"], runs["amp"]
            lines.append(
                f"| `{embedding}` | {f32['batch_size']} | {f32['samples_per_s']:.0f} | "
                f"{amp['samples_per_s']:.0f} | **{amp['samples_per_s'] / f32['samples_per_s']:.2f}×** |"
            )
    variants = speed.get("variants", {})
    if variants:
        embedding = speed.get("variants_embedding", "?")
        plain = speed.get("bank", {}).get(embedding, {})
        plain = plain.get("amp", plain.get("float32", {}))
        timed = ", ".join(f"{name} {run['samples_per_s']:.0f}" for name, run in variants.items())
        lines += [
            "",
            f"Same run, `{embedding}` embedding, same precision and batch: {timed} samples/s, "
            f"against {plain.get('samples_per_s', float('nan')):.0f} for the plain step.",
        ]
    return lines


def comparison_lines(summary: dict, others: list[tuple[Path, dict]], curves: Path) -> list[str]:
    """Markdown lines setting the shipped model's run beside other runs, each given as
    ``(folder, run_summary)``."""
    runs = [summary, *(other for _, other in others)]

    def cells(fmt) -> list[str]:
        return [fmt(run) for run in runs]

    best = lambda run: run["best_validation"]  # noqa: E731
    rows = [
        ("precision", cells(lambda r: r["precision"])),
        ("batch", cells(lambda r: f"{r['batch_size']}")),
        ("symmetric views of the training cutouts", cells(lambda r: f"{r['augment_views']}")),
        ("steps", cells(lambda r: f"{r['steps']:,}")),
        ("training samples", cells(lambda r: f"{r['samples']:,}")),
        ("wall-clock at the last validation [min]", cells(lambda r: f"{r['elapsed_s'] / 60:.1f}")),
        ("training samples/s (whole run)", cells(lambda r: f"{r['training_samples_per_s']:.0f}")),
        (
            "this run's whole-run rate against each run's",
            cells(
                lambda r: f"{summary['training_samples_per_s'] / r['training_samples_per_s']:.2f}×"
            ),
        ),
        (
            "fastest 100-step stretch [samples/s]",
            cells(lambda r: f"{r['fastest_100_step_samples_per_s']:.0f}"),
        ),
        ("best validation flow NLL", cells(lambda r: f"{best(r)['val_nll']:.3f}")),
        ("best validation total loss", cells(lambda r: f"{best(r)['val_total']:.3f}")),
        (
            "classifier BCE / visibility MSE at the best step",
            cells(lambda r: f"{best(r)['val_bce']:.3f} / {best(r)['val_mse']:.3f}"),
        ),
        ("stop reason", cells(lambda r: r["stop_reason"])),
    ]
    header = " | ".join(f"`{folder}`" for folder, _ in others)
    return [
        "## This run beside others",
        "",
        "Compared runs: their folders' `card.json` and `training_log.csv`. All are separate runs "
        "on the same machine; validation losses are on each run's own held-out pool rows.",
        "",
        f"| | this run | {header} |",
        "|---|---|" + "---|" * len(others),
        *[f"| {name} | {' | '.join(values)} |" for name, values in rows],
        "",
        "What a lower validation loss buys is measured in calibration, not here: every model's "
        "coverage, SBC and accuracy are in `calibration_attempts.md`.",
        "",
        f"![validation curves against wall-clock time]({curves.name})",
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        help="training run folder (log.csv, model/); default: the --model folder's training_log.csv",
    )
    parser.add_argument(
        "--model", type=Path, help="model directory with card.json (default: <run>/model)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        help="model folders of other runs (card.json, training_log.csv) to set beside this one",
    )
    args = parser.parse_args(argv)
    if args.run is None and args.model is None:
        parser.error("give --run, --model or both")
    model_dir = args.model or args.run / "model"
    log_path = args.run / "log.csv" if args.run is not None else model_dir / "training_log.csv"
    card = json.loads((model_dir / "card.json").read_text())
    rows = read_log(log_path)
    if not rows:
        raise SystemExit(f"{log_path} holds no validation rows yet")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = plot_curves(rows, RESULTS_DIR / "training.png")
    training = card.get("training", {})
    # cards written before the network size was called ``embedding`` name it ``preset``
    config = upgrade_config_dict(training.get("config", {}))
    summary = run_summary(card, rows)
    steps_done, batch = summary["steps"], summary["batch_size"]
    steps, elapsed = summary["last_validation_step"], summary["elapsed_s"]
    rate, fastest, best = (
        summary["training_samples_per_s"],
        summary["fastest_100_step_samples_per_s"],
        summary["best_validation"],
    )
    data = (
        "pre-simulated pool (its simulation time is outside the budget)"
        if config.get("dataset")
        else "simulated on the fly"
    )
    results = {
        "environment": environment(config.get("device", "cpu")),
        "run": str(args.run) if args.run is not None else None,
        "log": str(log_path),
        "model": str(model_dir),
        "steps": steps_done,
        "last_validation_step": steps,
        "elapsed_s": elapsed,
        "batch_size": batch,
        "precision": summary["precision"],
        "data": data,
        "training_samples_per_s": rate,
        "fastest_100_step_samples_per_s": fastest,
        "best_validation": best,
        "last_validation": rows[-1],
        "card_training": training,
        "card_metrics": card.get("metrics", {}),
    }
    arch = card.get("architecture", {})
    md = [
        "# Training run of the shipped default model",
        "",
        f"Command recorded by the card: `{training.get('command', 'sbicluster train')}`",
        f"Machine: {results['environment']['cpu']} ({results['environment']['cpu_cores']} cores), "
        f"device `{config.get('device', 'cpu')}`; torch {results['environment']['versions']['torch']}, "
        f"sbi {results['environment']['versions'].get('sbi', '?')}.",
        "",
        f"- embedding `{config.get('embedding')}`: {json.dumps(arch.get('embedding', {}))}",
        f"- flow: {json.dumps(arch.get('flow', {}))}",
        f"- precision: {summary['precision']} (the embedding's arithmetic in training; the flow and "
        "the optimiser stay float32)",
        f"- steps: {steps_done:,} × batch {batch} = {steps_done * (batch or 0):,} samples; "
        f"the last validation row, step {int(steps):,} at {elapsed / 60:.1f} min wall-clock, "
        f"gives **{rate:.0f} training samples/s**, data {data}",
        f"- fastest 100-step stretch: {fastest:.0f} training samples/s (the rate on otherwise idle cores)",
        f"- stop reason: {training.get('stop_reason', '?')}",
        *([f"- note: {training['note']}"] if training.get("note") else []),
        f"- best validation total loss {best['val_total']:.3f} at step {int(best['step'])} "
        f"(flow NLL {best['val_nll']:.3f}, classifier BCE {best['val_bce']:.3f}, visibility MSE {best['val_mse']:.3f})",
        "",
        "The GPU goal (≥ 4,000 samples/s on one H100, `paper` embedding) could not be measured: no GPU "
        "was available for this run, so the shipped model is the CPU-trained one described above.",
        "",
        f"![training curves]({png.name})",
    ]
    loop_path = RESULTS_DIR / "training_loop.json"
    if loop_path.exists():
        loop = json.loads(loop_path.read_text())
        results["same_process_loop"] = {"total": loop["total"], "speedup": loop["speedup"]}
        md += ["", *loop_lines(loop)]
    speed_path = RESULTS_DIR / "training_speed.json"
    if speed_path.exists():
        speed = json.loads(speed_path.read_text())
        results["same_process_speed"] = speed.get("bank", {})
        md += ["", *speed_lines(speed)]
    if args.compare:
        others = []
        for folder in args.compare:
            other_rows = read_log(folder / "training_log.csv")
            other = run_summary(json.loads((folder / "card.json").read_text()), other_rows)
            others.append((folder, other, other_rows))
        curves = plot_comparison(
            [
                (f"this run ({summary['precision']})", rows),
                *(
                    (f"{folder.name} ({other['precision']}, {other['augment_views']} views)", r)
                    for folder, other, r in others
                ),
            ],
            RESULTS_DIR / "training_comparison.png",
        )
        results["compared_runs"] = [{"folder": str(folder), **other} for folder, other, _ in others]
        md += ["", *comparison_lines(summary, [(f, o) for f, o, _ in others], curves)]
    write_results("training", results, "\n".join(md))
    return results


if __name__ == "__main__":
    main()
