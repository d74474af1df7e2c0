"""Rebuilding a simulator from its card: the inverse of ``Simulator.card()``.

This module owns the table of simulator kinds that a card can name and the one function that
rebuilds a simulator from a card, :func:`simulator_from_card`. Each simulator class rebuilds
itself (``from_card``); this module only finds the class, importing it lazily so that reading a
card never loads physics tables that the card does not need. It must not know what a card
contains beyond the key that names its kind.
"""

from __future__ import annotations

from importlib import import_module

import torch

from .base import Simulator
from .errors import SimulatorError

__all__ = ["SIMULATOR_KINDS", "simulator_kind", "simulator_from_card"]

SIMULATOR_KINDS: dict[str, str] = {
    "simulators.cluster.ClusterSimulator": "simulators.cluster:ClusterSimulator",
    "linear-gaussian-toy": "simulators.toy:LinearGaussianToy",
}
"""Card kind → ``module:Class`` of the simulator that wrote it (read-only)."""


def simulator_kind(card: dict) -> str:
    """The kind a simulator card names (its ``simulator`` entry, or ``name`` for the toy).

    Raises
    ------
    SimulatorError
        If the card names no kind this version knows.
    """
    if not isinstance(card, dict):
        raise SimulatorError(f"a simulator card is a JSON object, got {type(card).__name__}")
    for key in ("simulator", "name"):
        kind = card.get(key)
        if isinstance(kind, str) and kind in SIMULATOR_KINDS:
            return kind
    named = card.get("simulator", card.get("name"))
    raise SimulatorError(
        f"the card's simulator {named!r} is not one this version can rebuild; "
        f"known kinds: {sorted(SIMULATOR_KINDS)}"
    )


def simulator_from_card(card: dict, device: str | torch.device = "cpu") -> Simulator:
    """The simulator that wrote ``card``, rebuilt on ``device``.

    Parameters
    ----------
    card : dict
        The output of a simulator's ``card()`` (a model card keeps it under ``"simulator"``).
    device : str or torch.device
        Where the rebuilt simulator runs.

    Returns
    -------
    Simulator

    Raises
    ------
    SimulatorError
        If the card names an unknown kind or lacks what its kind needs.
    """
    module, name = SIMULATOR_KINDS[simulator_kind(card)].split(":")
    cls = getattr(import_module(module), name)
    return cls.from_card(card, device=device)
