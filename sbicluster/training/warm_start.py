"""Warm starts: a training run that begins from a trained model's network (:func:`load_warm_start`).

This module owns the one decision a warm start needs: whether a trained model can start a run of
a given configuration and simulator (same bands, image shape, prior and architecture), and what
the new model's card records about it. It must not train, write files or choose a schedule: the
run that starts from these weights takes a fresh optimizer and its own warm-up and cosine decay
(:mod:`.schedule`), as any new run does.

Why: the shipped CPU model is limited by its 60-minute budget (its validation loss still fell
steeply when the schedule ended). Training it further on the same pool with a fresh, lower peak
learning rate reaches a longer effective schedule without repeating the first hour.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from simulators.base import Simulator

from ..errors import InputError, ModelError
from ..model import ClusterModel, default_architecture
from .config import TrainingConfig

__all__ = ["WarmStart", "load_warm_start"]


@dataclass(frozen=True)
class WarmStart:
    """A trained model checked to start a run, and what the run's card records about it.

    Attributes
    ----------
    model : ClusterModel
        The source model (on CPU, evaluation mode).
    softening : list of float or None
        Its per-band asinh softening (e⁻/s), which the new run keeps; ``None`` for catalogue
        models (affine normalisation).
    record : dict
        ``path``, ``name``, ``weights_sha256`` and the source's own training summary
        (``steps_done``, ``wall_time_s``, ``stop_reason``, ``initialised_from`` if it was itself
        warm-started): the card's ``training.initialised_from``.
    """

    model: ClusterModel
    softening: list[float] | None
    record: dict


def _normalised(value) -> object:
    """``value`` as JSON would give it back (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_warm_start(config: TrainingConfig, simulator: Simulator) -> WarmStart:
    """Load ``config.init_from`` and check that it can start a run of ``config`` on ``simulator``.

    Parameters
    ----------
    config : TrainingConfig
        The new run's settings; ``init_from`` names a model folder (or built-in model name).
    simulator : Simulator
        The new run's simulator: its bands, observation shape and prior must be the model's.

    Returns
    -------
    WarmStart

    Raises
    ------
    InputError
        ``init_from`` is unset or not a readable model; the model was made for other bands, image
        shape or prior; or its architecture is not the one ``config`` builds (network size,
        overrides, or a recalibrated flow: warm-start from the model before recalibration and
        recalibrate the result).
    """
    from ..artifact import load_model, resolve_model_dir

    if not config.init_from:
        raise InputError("no model to start from: init_from is not set")
    try:
        source = load_model(config.init_from, device="cpu")
    except ModelError as err:
        raise InputError(f"--init-from {config.init_from}: {err}") from err
    card = source.card
    where = f"--init-from {config.init_from}"
    if list(card["bands"]) != list(simulator.bands):
        raise InputError(
            f"{where}: the model reads bands {list(card['bands'])}, the simulator makes "
            f"{list(simulator.bands)}"
        )
    if list(card["image_shape"]) != list(simulator.observation_shape):
        raise InputError(
            f"{where}: the model reads observations of shape {list(card['image_shape'])}, the "
            f"simulator makes {list(simulator.observation_shape)}"
        )
    if _normalised(card["prior"]) != _normalised(simulator.prior.to_dict()):
        raise InputError(
            f"{where}: the model was trained on another prior than the simulator's; a warm start "
            "must keep the prior (its posterior would otherwise be fitted to two priors)"
        )
    architecture = card["architecture"]
    softening = architecture.get("normalisation", {}).get("softening_e_per_s")
    expected = default_architecture(
        config.embedding,
        len(simulator.bands),
        softening if softening is not None else (config.softening or []),
        embedding_overrides=config.embedding_overrides,
        flow_overrides=config.flow_overrides,
    )
    expected, found = _normalised(expected), _normalised(architecture)
    if "base_temperature" in found.get("flow", {}):
        raise InputError(
            f"{where}: the model is recalibrated (its flow ends in a fitted base temperature); "
            "start from the model as trained (the run's model/ folder) and recalibrate the result"
        )
    differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    if differing:
        raise InputError(
            f"{where}: the model's architecture differs from this run's in {differing} (network "
            f"size {found.get('preset')!r} against {expected.get('preset')!r}); give the same "
            "--embedding and overrides it was trained with"
        )
    training = card.get("training", {})
    folder = resolve_model_dir(config.init_from)
    record = {
        "path": str(folder),
        "name": card.get("name"),
        "weights_sha256": _sha256(folder / "weights.safetensors"),
        "steps_done": training.get("steps_done"),
        "wall_time_s": training.get("wall_time_s"),
        "stop_reason": training.get("stop_reason"),
    }
    if training.get("initialised_from") is not None:
        record["initialised_from"] = training["initialised_from"]
    return WarmStart(
        model=source,
        softening=None if softening is None else [float(s) for s in softening],
        record=record,
    )
