"""What a training run reports while it runs: :class:`Tracker`.

This module owns every record of progress: the CSV log ``out_dir/log.csv`` (one row per
validation), the progress bar and its postfix, and the optional TensorBoard events in
``out_dir/tensorboard``. It must not decide anything about training (when to validate, stop or
checkpoint) and must not compute losses; it records the numbers it is given.

``log.csv`` columns: ``step``, ``elapsed_s`` (wall time since the run began, s, across resumes),
``lr``, then ``train_<term>`` (running mean over the steps since the previous row) and
``val_<term>`` for each term of :func:`logged_terms`.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

__all__ = ["Tracker", "SilentTracker", "logged_terms"]


def logged_terms(loss_weights: dict) -> tuple[str, ...]:
    """Loss terms that are logged: ``total``, ``nll``, ``bce``, ``mse``, and ``balance`` when the
    balancing penalty has a positive weight."""
    base = ("total", "nll", "bce", "mse")
    return (*base, "balance") if loss_weights.get("balance", 0.0) > 0 else base


class Tracker:
    """The CSV log, progress bar and optional TensorBoard writer of one run.

    Use as a context manager; everything is closed on exit.

    Parameters
    ----------
    out_dir : Path
        Run folder.
    terms : tuple of str
        Loss terms (:func:`logged_terms`).
    total_steps : int
        Length of the progress bar (steps).
    initial_step : int
        Steps already done (a resumed run).
    append : bool
        Append to an existing ``log.csv`` (a resumed run) instead of starting a new one with a
        header.
    progress : bool
        Show the progress bar (only on a terminal).
    tensorboard : bool
        Also write every logged value as a TensorBoard scalar (tag = CSV column, step = ``step``).
    """

    def __init__(
        self,
        out_dir: Path,
        terms: tuple[str, ...],
        *,
        total_steps: int,
        initial_step: int = 0,
        append: bool = False,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        from tqdm.auto import tqdm

        self.path = Path(out_dir) / "log.csv"
        self.terms = terms
        self.fields = [
            "step",
            "elapsed_s",
            "lr",
            *(f"{split}_{k}" for split in ("train", "val") for k in terms),
        ]
        append = append and self.path.exists()
        self._file = open(self.path, "a" if append else "w", newline="")  # noqa: SIM115
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
        if not append:
            self._writer.writeheader()
            self._file.flush()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc="train",
            unit="step",
            disable=not (progress and sys.stderr.isatty()),
        )

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self) -> None:
        """One optimisation step done."""
        self._bar.update(1)

    def log(
        self,
        step: int,
        elapsed_s: float,
        lr: float,
        train: dict[str, float],
        val: dict[str, float],
    ) -> dict:
        """Record one validation: a CSV row (flushed), TensorBoard scalars, the bar's postfix.

        Parameters
        ----------
        step : int
            Steps done.
        elapsed_s : float
            Wall time of the run so far, s (written rounded to ms).
        lr : float
            Learning rate of the last step.
        train : dict
            Mean training loss terms since the previous row (missing terms are written as NaN).
        val : dict
            Validation loss terms (must hold every logged term, ``total`` and ``nll``).

        Returns
        -------
        dict
            The row as written.
        """
        row = {
            "step": step,
            "elapsed_s": round(elapsed_s, 3),
            "lr": lr,
            **{f"train_{k}": train.get(k, float("nan")) for k in self.terms},
            **{f"val_{k}": val[k] for k in self.terms},
        }
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        self._bar.set_postfix(val=f"{val['total']:.3f}", nll=f"{val['nll']:.3f}")
        return row

    def close(self) -> None:
        """Close the bar, the log and the TensorBoard writer (idempotent)."""
        self._bar.close()
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class SilentTracker:
    """A :class:`Tracker` that records nothing: what the processes other than rank 0 of a
    data-parallel run use, so that one process writes the log and shows the bar."""

    def __enter__(self) -> SilentTracker:
        return self

    def __exit__(self, *exc) -> None:
        """Nothing to close."""

    def step(self) -> None:
        """Nothing to count."""

    def log(self, step, elapsed_s, lr, train, val) -> dict:  # noqa: ARG002
        """Nothing to write; returns an empty row."""
        return {}
