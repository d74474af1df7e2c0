"""Where simulators come from: a card (the inverse of ``Simulator.card()``) or a preset name.

This module owns the table of simulator kinds that a card can name, the one function that
rebuilds a simulator from a card, :func:`simulator_from_card`, and the one function that turns a
preset name (as given to ``sbicluster train/simulate --preset``) into a simulator,
:func:`simulator_for_preset`. Each simulator class rebuilds itself (``from_card``); this module
only finds the class, importing it lazily so that reading a card never loads physics tables that
the card does not need. It must not know what a card contains beyond the key that names its
kind, nor simulate anything.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from .base import Simulator
from .errors import SimulatorError

__all__ = [
    "SIMULATOR_KINDS",
    "TOY_PRESET",
    "simulator_kind",
    "simulator_from_card",
    "simulator_for_preset",
    "is_catalogue_preset",
]

SIMULATOR_KINDS: dict[str, str] = {
    "simulators.cluster.ClusterSimulator": "simulators.cluster:ClusterSimulator",
    "linear-gaussian-toy": "simulators.toy:LinearGaussianToy",
    "simulators.catalogue.CatalogueSimulator": "simulators.catalogue:CatalogueSimulator",
}
"""Card kind → ``module:Class`` of the simulator that wrote it (read-only)."""

TOY_PRESET = "toy"
"""The preset name of :class:`simulators.toy.LinearGaussianToy`; a catalogue preset name
(:func:`is_catalogue_preset`) is one of :class:`simulators.catalogue.CatalogueSimulator`; every
other name is an instrument preset of :class:`simulators.cluster.ClusterSimulator`."""


def is_catalogue_preset(name) -> bool:
    """Whether ``name`` is a shipped catalogue preset (``legus-uvis``, ``legus-acs-uvis``)."""
    from .catalogue import available_catalogue_presets

    return isinstance(name, str) and name in available_catalogue_presets()


def simulator_kind(card: dict) -> str:
    """The kind a simulator card names (its ``simulator`` entry, or ``name`` for the toy).

    Raises
    ------
    SimulatorError
        If the card names no kind this version knows.
    """
    if card is None:
        raise SimulatorError("no simulator card: the card records no simulator to rebuild")
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


def simulator_for_preset(name, device: str | torch.device = "cpu", **kwargs) -> Simulator:
    """A new simulator for a preset name: the toy for ``"toy"``, the catalogue simulator for a
    catalogue preset, else the cluster simulator.

    Parameters
    ----------
    name : str, Path or simulators.instruments.Instrument
        :data:`TOY_PRESET` for :class:`simulators.toy.LinearGaussianToy`; otherwise an instrument
        preset name (``"m83-wfc3"``, ``"m31-phat"``), a TOML path or an Instrument, for
        :class:`simulators.cluster.ClusterSimulator`; a catalogue preset (``"legus-uvis"``,
        ``"legus-acs-uvis"``) for :class:`simulators.catalogue.CatalogueSimulator`.
    device : str or torch.device
        Where the simulator runs.
    **kwargs
        Further arguments of the simulator's constructor (e.g. ``cluster_fraction``).

    Returns
    -------
    Simulator

    Raises
    ------
    SimulatorError
        If ``name`` is not a known preset or an option is invalid.
    """
    if isinstance(name, str) and name == TOY_PRESET:
        from .toy import LinearGaussianToy

        try:
            return LinearGaussianToy(device=device, **kwargs)
        except TypeError as err:
            raise SimulatorError(f"invalid option for the {TOY_PRESET!r} preset ({err})") from err
    if is_catalogue_preset(name):
        from .catalogue import CatalogueSimulator

        try:
            return CatalogueSimulator(name, device=device, **kwargs)
        except TypeError as err:
            raise SimulatorError(f"invalid option for the {name!r} preset ({err})") from err
    from .cluster import ClusterSimulator

    return ClusterSimulator(str(name) if isinstance(name, Path) else name, device=device, **kwargs)
