"""Model directories on disk: ``weights.safetensors`` + ``card.json``; never pickle.

This module owns the artifact format (:data:`FORMAT_VERSION`) and its checks: a card that does not
describe the weights (missing/unexpected tensors, wrong shapes), a newer format, or an incompatible
installed software version gives a :class:`~sbicluster.errors.ModelError` that says what to do.
Writing is atomic at the level of the directory: the files go to a temporary sibling folder
(permissions from the umask, like any new folder), which then replaces the target with
:func:`os.replace`, so a reader sees the old model or the new one, never weights of one and the
card of the other. It must not train or run inference.

Card keys
---------
``format_version``, ``bands``, ``image_shape``, ``prior`` (``ClusterPrior.to_dict()``),
``simulator`` (the simulator's own card, incl. photometry table id), ``normalisation``,
``architecture`` (everything needed to rebuild the network: embedding config, flow type and
hyper-parameters, θ transform, heads), ``training`` (config, steps, wall time, device, and for CPU
runs a note on the budget), ``metrics`` (validation losses), ``software`` (versions of sbicluster,
torch, sbi and zuko; a card whose sbi major.minor or zuko major differs from the installed one is
refused, see :data:`COMPATIBLE_VERSION_PARTS`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path

import torch

from simulators.priors import ClusterPrior

from .errors import ModelError, OutputExistsError
from .files import default_file_mode
from .model import ClusterModel

__all__ = [
    "COMPATIBLE_VERSION_PARTS",
    "DEFAULT_MODEL_DIR",
    "BUILTIN_MODELS_DIR",
    "builtin_models",
    "resolve_model_dir",
    "FORMAT_VERSION",
    "load_model",
    "save_model",
    "software_versions",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_DIR = BUILTIN_MODELS_DIR / "default"
_REQUIRED = ("format_version", "bands", "image_shape", "prior", "architecture")
COMPATIBLE_VERSION_PARTS = {"sbi": 2, "zuko": 1}
"""Leading version components that must agree between a card's ``software`` entry and the
installed package for the model to load: sbi's major.minor (its estimator classes change between
minor releases), zuko's major (the flow layers' parameter layout)."""


def software_versions() -> dict:
    """Versions of the packages a model depends on (recorded in cards).

    Returns
    -------
    dict
        ``sbicluster``, ``torch`` (without a local build suffix such as ``+cpu``), ``sbi`` and
        ``zuko`` version strings.
    """
    import sbi
    import zuko

    try:
        from importlib.metadata import version

        own = version("sbicluster")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        own = "unknown"
    return {
        "sbicluster": own,
        "torch": torch.__version__.split("+")[0],
        "sbi": sbi.__version__,
        "zuko": zuko.__version__,
    }


def _unique_state(model: ClusterModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(model: ClusterModel, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write a model directory atomically.

    Parameters
    ----------
    model : ClusterModel
        The model; its ``card`` is completed with the architecture, prior, bands, shape, format
        version and software versions.
    directory : str or Path
        Target directory (created; written to a temporary sibling, then renamed into place).
    overwrite : bool
        Replace an existing directory.

    Returns
    -------
    Path
        The model directory.

    Raises
    ------
    OutputExistsError
        ``directory`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise OutputExistsError(
            f"model directory {directory} exists; pass overwrite=True (--overwrite) "
            "or choose another directory"
        )
    card = dict(model.card)
    card.update(
        {
            "format_version": FORMAT_VERSION,
            "bands": list(model.bands),
            "image_shape": list(model.image_shape),
            "prior": model.prior.to_dict(),
            "architecture": model.architecture,
            "normalisation": model.architecture["normalisation"],
            "software": software_versions(),
        }
    )
    directory.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes it 0700) so the folder gets the umask's permissions
    tmp = directory.with_name(f".{directory.name}.{secrets.token_hex(8)}.part")
    tmp.mkdir()
    try:
        weights = tmp / "weights.safetensors"
        save_file(_unique_state(model), str(weights), metadata={"format": "pt"})
        os.chmod(weights, default_file_mode())  # safetensors writes it 0600
        (tmp / "card.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model.card = card
    return directory


def _check_versions(card: dict) -> None:
    """Raise :class:`ModelError` for a newer card format or an incompatible sbi or zuko."""
    version = card["format_version"]
    if isinstance(version, bool) or not isinstance(version, int | float | str):
        version = None
    try:
        version = int(version)
    except (TypeError, ValueError):
        raise ModelError(
            f"card format_version {card['format_version']!r} is not an integer; the card was not "
            f"written by save_model (this sbicluster writes format_version {FORMAT_VERSION})"
        ) from None
    if version > FORMAT_VERSION:
        raise ModelError(
            f"model format version {card['format_version']} is newer than this sbicluster "
            f"understands ({FORMAT_VERSION}); upgrade sbicluster to load it"
        )
    software = card.get("software") or {}
    for package, parts in COMPATIBLE_VERSION_PARTS.items():
        saved = software.get(package)
        if saved is None:
            continue
        installed = _installed_version(package)
        if saved.split(".")[:parts] != installed.split(".")[:parts]:
            raise ModelError(
                f"model was trained with {package} {saved} but {package} {installed} is "
                f"installed; install {package}=={saved} (e.g. `pip install {package}=={saved}`) "
                "to use this model"
            )


def _installed_version(package: str) -> str:
    """Version string of an installed package (``sbi`` or ``zuko``)."""
    return str(__import__(package).__version__)


def builtin_models() -> tuple[str, ...]:
    """Names of the models shipped in ``sbicluster/models`` (``default``, ``legus-uvis``, ``marginal``)."""
    return tuple(
        sorted(p.name for p in BUILTIN_MODELS_DIR.iterdir() if (p / "card.json").is_file())
    )


def resolve_model_dir(directory: str | Path | None) -> Path:
    """The folder of a model given as a folder, a built-in model name, or ``None`` (the default).

    A name that is not an existing path but is a built-in model (:func:`builtin_models`, e.g.
    ``legus-uvis``) means that model's folder; anything else is returned as a path.
    """
    if directory is None:
        return DEFAULT_MODEL_DIR
    path = Path(directory)
    if not path.exists() and len(path.parts) == 1 and (BUILTIN_MODELS_DIR / path.name).is_dir():
        return BUILTIN_MODELS_DIR / path.name
    return path


def load_model(directory: str | Path | None = None, *, device: str = "cpu") -> ClusterModel:
    """Load a model directory written by :func:`save_model` (no unpickling).

    Parameters
    ----------
    directory : str, Path or None
        Model directory or built-in model name (``legus-uvis``); ``None`` loads the shipped
        default (``sbicluster/models/default``).
    device : str
        Torch device for the loaded model.

    Returns
    -------
    ClusterModel
        In evaluation mode, with ``card`` set.

    Raises
    ------
    ModelError
        Missing files, unreadable card, incompatible versions, or weights that do not match the
        architecture the card describes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_model_dir(directory)
    if directory != DEFAULT_MODEL_DIR and not directory.is_dir():
        what = "is not a folder" if directory.exists() else "does not exist"
        raise ModelError(
            f"model directory {directory} {what}; give the folder holding card.json and "
            "weights.safetensors (e.g. the model/ folder written by `sbicluster train`)"
        )
    card_path, weights_path = directory / "card.json", directory / "weights.safetensors"
    for path in (card_path, weights_path):
        if not path.is_file():
            hint = (
                " (no default model is shipped yet: train one with `sbicluster train`)"
                if directory == DEFAULT_MODEL_DIR
                else ""
            )
            raise ModelError(
                f"model directory {directory} lacks {path.name}; expected weights.safetensors "
                f"and card.json written by sbicluster.artifact.save_model{hint}"
            )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(
            f"cannot read {card_path}: {err}; the card must be the JSON written by save_model"
        ) from err
    if not isinstance(card, dict):
        raise ModelError(
            f"{card_path} holds a JSON {type(card).__name__}, not an object with keys "
            f"{list(_REQUIRED)}; it was not written by save_model"
        )
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelError(
            f"{card_path} lacks required keys {missing}; it was not written by save_model"
        )
    _check_versions(card)
    try:
        model = ClusterModel(
            ClusterPrior.from_dict(card["prior"]),
            card["bands"],
            card["image_shape"],
            card["architecture"],
            card=card,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(
            f"{card_path} describes an architecture this sbicluster cannot build ({err!r})"
        ) from err
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ModelError(
            f"cannot read {weights_path}: {err}; the file is corrupt or not safetensors"
        ) from err
    expected = model.state_dict()
    problems = []
    for key in sorted(set(expected) - set(state)):
        problems.append(f"missing tensor {key}")
    for key in sorted(set(state) - set(expected)):
        problems.append(f"unexpected tensor {key}")
    for key in sorted(set(state) & set(expected)):
        if tuple(state[key].shape) != tuple(expected[key].shape):
            problems.append(
                f"{key}: weights {tuple(state[key].shape)} vs card {tuple(expected[key].shape)}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; ... ({len(problems)} problems)" if len(problems) > 5 else ""
        )
        raise ModelError(
            f"weights in {weights_path} do not match the architecture in {card_path}: {shown}. "
            "The card and weights come from different models; re-save the model with save_model"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
