"""Record a training run: training curves and the model card's facts as results/training.{json,md,png}.

Usage::

    python -m benchmarks.training --run runs/default [--model sbicluster/models/default]

Reads ``<run>/log.csv`` (written by :func:`sbicluster.training.train`) and the model's
``card.json``, plots training and validation losses against step and wall-clock time, and
writes a report with the throughput actually achieved (training samples per second, which includes
simulation for online runs but not for runs on a pre-simulated pool), the stop reason and the final
validation metrics. Nothing is re-run: the numbers are the run's own.
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

__all__ = ["read_log", "plot_curves", "main"]


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="training run folder (log.csv, model/)"
    )
    parser.add_argument(
        "--model", type=Path, help="model directory with card.json (default: <run>/model)"
    )
    args = parser.parse_args(argv)
    model_dir = args.model or args.run / "model"
    card = json.loads((model_dir / "card.json").read_text())
    rows = read_log(args.run / "log.csv")
    if not rows:
        raise SystemExit(f"{args.run / 'log.csv'} holds no validation rows yet")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = plot_curves(rows, RESULTS_DIR / "training.png")
    training = card.get("training", {})
    # cards written before the network size was called ``embedding`` name it ``preset``
    config = upgrade_config_dict(training.get("config", {}))
    last = rows[-1]
    steps, elapsed = last["step"], last["elapsed_s"]
    steps_done = int(training.get("steps_done", steps))
    batch = config.get("batch_size")
    rate = steps * batch / elapsed if batch else float("nan")
    stretches = [
        (b["step"] - a["step"]) * batch / (b["elapsed_s"] - a["elapsed_s"])
        for a, b in zip(rows, rows[1:], strict=False)
        if batch and b["elapsed_s"] > a["elapsed_s"]
    ]
    fastest = max(stretches, default=float("nan"))
    data = (
        "pre-simulated pool (its simulation time is outside the budget)"
        if config.get("dataset")
        else "simulated on the fly"
    )
    best = min(rows, key=lambda r: r["val_total"])
    results = {
        "environment": environment(config.get("device", "cpu")),
        "run": str(args.run),
        "model": str(model_dir),
        "steps": steps_done,
        "last_validation_step": steps,
        "elapsed_s": elapsed,
        "batch_size": batch,
        "data": data,
        "training_samples_per_s": rate,
        "fastest_100_step_samples_per_s": fastest,
        "best_validation": best,
        "last_validation": last,
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
    write_results("training", results, "\n".join(md))
    return results


if __name__ == "__main__":
    main()
