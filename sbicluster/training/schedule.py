"""The learning-rate schedule of training: linear warm-up, then cosine decay (:func:`lr_at`).

This module owns the learning rate as a function of the step (and of the elapsed fraction of a
wall-time budget). It must not touch the optimizer, the model or the clock: the caller sets the
rate on the optimizer and measures time.
"""

from __future__ import annotations

import math

from .config import TrainingConfig

__all__ = ["lr_at"]


def lr_at(step: int, config: TrainingConfig, time_frac: float = 0.0) -> float:
    """Learning rate of optimisation step ``step`` (0-based).

    Linear warm-up to ``config.lr`` over ``config.warmup_steps`` steps (step ``warmup_steps − 1``
    reaches ``lr``), then cosine decay from ``lr`` to ``lr · min_lr_ratio`` over whichever runs out
    first: the remaining steps up to ``config.steps`` or the wall-time budget. A time budget makes
    the schedule depend on speed, so exact resumption is guaranteed only for step-limited runs.

    Parameters
    ----------
    step : int
        Steps already taken.
    config : TrainingConfig
        ``lr``, ``warmup_steps``, ``steps`` and ``min_lr_ratio``.
    time_frac : float
        Elapsed wall time as a fraction of ``config.max_time_s`` (0 without a budget).

    Returns
    -------
    float
        The learning rate (same unit as ``config.lr``).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    frac = min(
        1.0,
        max(time_frac, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)),
    )
    return config.lr * (
        config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    )
