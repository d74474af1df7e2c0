"""The model card of a trained model: :func:`training_card`.

This module owns what a trained model records about how it was made: the simulator's card, the
training configuration, steps, stop reason, wall time, device and the final validation metrics. It
must not save the model (:mod:`sbicluster.artifact` does) nor decide anything about training.
"""

from __future__ import annotations

import torch

from ..devices import device_name
from .config import TrainingConfig

__all__ = ["training_card"]


def training_card(
    name: str,
    simulator_card: dict,
    config: TrainingConfig,
    meta: dict,
    *,
    stop_reason: str,
    device: torch.device,
    amp: bool,
    terms: tuple[str, ...],
    metrics: dict[str, float],
    processes: int = 1,
) -> dict:
    """The card of a model trained by :func:`sbicluster.training.train`.

    Parameters
    ----------
    name : str
        Model name (the run folder's name).
    simulator_card : dict
        ``simulator.card()``.
    config : TrainingConfig
        The run's settings.
    meta : dict
        The run's progress record: ``step``, ``best_step``, ``elapsed_s`` (s), and
        ``initialised_from`` for a warm start (:class:`.warm_start.WarmStart` ``record``; the
        card's ``training.initialised_from``, ``None`` for a new network).
    stop_reason : str
        Why training stopped (``steps``, ``time budget``, ``early stopping``,
        ``stop_after_steps``, ``signal SIGINT`` ...).
    device : torch.device
        Training device.
    amp : bool
        Whether bfloat16 autocast was used.
    terms : tuple of str
        Logged loss terms (:func:`sbicluster.training.tracking.logged_terms`).
    metrics : dict
        Validation loss terms of the returned model.
    processes : int
        Data-parallel processes that trained it (each with ``threads`` torch threads).

    Returns
    -------
    dict
        ``name``, ``simulator``, ``photometry_table_id``, ``training``, ``metrics``.
    """
    return {
        "name": name,
        "simulator": simulator_card,
        "photometry_table_id": simulator_card.get(
            "photometry_table_id", simulator_card.get("table_id")
        ),
        "training": {
            "config": config.to_dict(),
            "steps_done": meta["step"],
            "best_step": meta["best_step"],
            "stop_reason": stop_reason,
            "wall_time_s": meta["elapsed_s"],
            "device": str(device),
            "device_name": device_name(device),
            "threads": torch.get_num_threads(),
            "processes": processes,
            "initialised_from": meta.get("initialised_from"),
            "amp": amp,
            "loss": "NLL_flow(clusters) + w_classifier * BCE + w_visibility * MSE(log1p visibility)"
            + (" + w_balance * balancing penalty (BNPE)" if "balance" in terms else ""),
            "note": (
                f"CPU run: embedding {config.embedding!r} under a {config.max_time_s:.0f} s "
                "wall-time budget"
                if device.type == "cpu" and config.max_time_s
                else ""
            ),
        },
        "metrics": {f"val_{k}": float(metrics[k]) for k in terms},
    }
