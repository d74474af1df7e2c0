"""Settings of a training run: :class:`TrainingConfig`, :func:`default_config`, :data:`CPU_BUDGET_S`.

This module owns the names and defaults of every training setting, the two default recipes (CPU
and CUDA) and the reading of configurations recorded by older versions (checkpoints and model
cards written before the embedding size was called ``embedding``). It must not build models,
simulate or touch files.

Names: ``embedding`` is the size of the network (``small``, ``cpu``, ``paper``), the same word as
the command line's ``--embedding`` and the card's ``training.config.embedding``; "preset" is kept
for the instrument (``--preset m83-wfc3``). Up to this version the configuration called the size
``preset`` and its override dictionaries ``embedding`` and ``flow``; :meth:`TrainingConfig.from_dict`
maps those names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..devices import resolve_device
from ..errors import InputError

__all__ = [
    "TrainingConfig",
    "default_config",
    "CPU_BUDGET_S",
    "SPEED_ONLY_FIELDS",
    "upgrade_config_dict",
]

CPU_BUDGET_S = 1800.0
"""Wall-time budget of the default CPU training, in seconds (30 minutes)."""


@dataclass
class TrainingConfig:
    """Settings of :func:`sbicluster.training.train`.

    Parameters
    ----------
    embedding : str
        Size of the network (:data:`sbicluster.model.EMBEDDING_PRESETS`): ``small`` (tests),
        ``cpu`` (default CPU model), ``paper`` (GPU), ``catalogue`` (an MLP for the catalogue
        rows of :mod:`simulators.catalogue`). The command line's ``--embedding``.
    embedding_overrides, flow_overrides : dict or None
        Overrides of that size's embedding config (``width``, ``blocks``, ``features``, ``pool``)
        and flow hyper-parameters (``hidden_features``, ``num_transforms``, ``bins``).
    steps : int
        Maximum optimisation steps.
    max_time_s : float or None
        Wall-time budget in seconds (stops at the first of ``steps`` and this).
    batch_size : int
        Simulations per step.
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW decoupled weight decay.
    warmup_steps : int
        Linear warm-up; cosine decay to ``lr · min_lr_ratio`` at ``steps`` afterwards.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``.
    grad_clip : float
        Global gradient-norm clip.
    val_size : int
        Size of the fixed validation set.
    val_every : int
        Steps between validations (and early-stopping checks).
    patience : int
        Validations without improvement before stopping (0 disables early stopping).
    checkpoint_every : int
        Steps between checkpoints.
    seed : int
        Seed of the training and validation streams and of the model initialisation.
    device : str
        ``auto`` (CUDA if available), ``cpu``, ``cuda``, ...
    amp : bool
        bfloat16 autocast for the embedding on CUDA.
    global_batchnorm : bool
        With several processes (``torchrun``): batch normalisation uses the statistics of the
        whole global batch, so the run follows the one-process run (default). False lets each
        process normalise with its own share's statistics, the usual DDP practice: faster on
        CPUs (no collective per layer), but no longer the one-process computation.
    cpu_amp : bool
        bfloat16 autocast for the embedding on a CPU with native bfloat16 arithmetic
        (AVX512-BF16 or AMX, :func:`sbicluster.devices.cpu_has_bf16`; refused on other CPUs).
        Off by default: the shipped CPU model was trained in float32.
    augment_views : int
        Show each training cutout in a random one of the first ``augment_views`` rotations and
        mirror images of the square (1, 2, 4 or 8; :mod:`.augment`); 1 (default) trains on the
        cutouts as simulated. The simulators are unchanged in distribution by these views, so the
        posterior learned is the same; a pool read for several epochs offers more distinct images.
    retain_freed_memory : bool
        On CPU, keep the memory freed between steps in the process instead of returning it to the
        system (:func:`sbicluster.allocator.retain_freed_memory`; glibc only, process-wide and
        lasting). The same computation, without the page faults of re-mapping each step's
        activations. On by default; runs recorded before the setting existed ran without it.
    fused_optimizer : bool
        Take each AdamW step with torch's fused implementation (one pass over all parameters)
        instead of a loop over the parameter tensors: the same update to float32 rounding, a few
        milliseconds less per step on CPU. On by default; runs recorded before the setting
        existed ran without it.
    validation_chunk : int or None
        Validation samples per forward pass; ``None`` (default) takes the batch size, so that a
        validation pass holds no larger activations than a training step. On CPU that keeps
        validation in the memory the training steps reuse: chunks of 512 cutouts (what runs
        recorded before the setting existed used) allocate activations above glibc's largest
        ``mmap`` threshold, fault them in afresh at every pass, and took about 1.6 times as long.
        Each sample's losses do not depend on the chunk (the network is in evaluation mode), so
        only the speed and float32 rounding change.
    loss_weights : dict
        ``classifier`` and ``visibility`` weights (the flow NLL has weight 1), and optionally
        ``balance``, the weight λ of the balanced-NPE penalty (default 0: plain NPE).
    softening : list of float or None
        Per-band asinh softening in e⁻/s; ``None`` estimates it from the validation set's noise.
    dataset : str or None
        HDF5 pool from :func:`sbicluster.training.write_dataset` to train on instead of online
        simulation.
    tensorboard : bool
        Also write the logged scalars as TensorBoard events to ``out_dir/tensorboard``.
    init_from : str or None
        A trained model's folder (or built-in model name) whose network weights and input
        normalisation start the run instead of the seeded initialisation: a warm start
        (:mod:`.warm_start`). Its bands, image shape, prior and architecture must be the run's;
        the run takes a fresh optimizer and its own schedule (warm-up, then cosine decay from
        ``lr``). ``None`` (default): a new network.
    """

    embedding: str = "small"
    embedding_overrides: dict | None = None
    flow_overrides: dict | None = None
    steps: int = 2000
    max_time_s: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    grad_clip: float = 5.0
    val_size: int = 1024
    val_every: int = 100
    patience: int = 10
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_amp: bool = False
    global_batchnorm: bool = True
    augment_views: int = 1
    retain_freed_memory: bool = True
    fused_optimizer: bool = True
    validation_chunk: int | None = None
    loss_weights: dict = field(default_factory=lambda: {"classifier": 1.0, "visibility": 0.5})
    softening: list | None = None
    dataset: str | None = None
    tensorboard: bool = False
    init_from: str | None = None

    @property
    def validation_chunk_size(self) -> int:
        """Validation samples per forward pass: ``validation_chunk``, or the batch size."""
        return self.batch_size if self.validation_chunk is None else self.validation_chunk

    def to_dict(self) -> dict:
        """All fields as a JSON-serialisable dictionary (what checkpoints and cards record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        """The configuration recorded in ``data``, old field names included.

        Parameters
        ----------
        data : dict
            :meth:`to_dict` output of this or an older version (see :func:`upgrade_config_dict`).

        Returns
        -------
        TrainingConfig

        Raises
        ------
        InputError
            If ``data`` has fields this version does not know.
        """
        data = upgrade_config_dict(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown training configuration fields {unknown}")
        return cls(**data)


ADDED_FIELDS = {
    "cpu_amp": False,
    "global_batchnorm": True,
    "augment_views": 1,
    "retain_freed_memory": False,
    "fused_optimizer": False,
    "validation_chunk": 512,
    "init_from": None,
}
"""Fields added after the first checkpoints were written, with the value older runs had."""

SPEED_ONLY_FIELDS = frozenset({"retain_freed_memory", "fused_optimizer", "validation_chunk"})
"""Fields that change how fast a run goes, not what it computes: a run resumes under any value."""


def upgrade_config_dict(data: dict) -> dict:
    """A recorded configuration with the field names of this version.

    Older versions called the network size ``preset`` and its override dictionaries
    ``embedding`` and ``flow``. A dictionary with a ``preset`` field is read with those meanings;
    one without it is returned unchanged (as a copy).

    Parameters
    ----------
    data : dict
        A configuration dictionary from a checkpoint's ``state.json`` or a card's
        ``training.config``.

    Returns
    -------
    dict
    """
    data = dict(data)
    for name, default in ADDED_FIELDS.items():
        data.setdefault(name, default)
    if "preset" not in data:
        return data
    old_embedding, old_flow = data.pop("embedding", None), data.pop("flow", None)
    data["embedding"] = data.pop("preset")
    data.setdefault("embedding_overrides", old_embedding)
    data.setdefault("flow_overrides", old_flow)
    return data


def default_config(device: str = "auto", **overrides) -> TrainingConfig:
    """The configuration the command line uses for the shipped default model.

    On CPU: the ``cpu`` embedding under a 30-minute budget (:data:`CPU_BUDGET_S`), batch 64, the
    cosine schedule following the time budget, no early stopping (the budget is the limit). On
    CUDA: the ``paper`` embedding, batch 512, 100,000 steps.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or a CUDA device.
    **overrides
        Any :class:`TrainingConfig` field.

    Returns
    -------
    TrainingConfig

    Raises
    ------
    InputError
        If ``device`` is not usable here (:func:`sbicluster.devices.resolve_device`).
    """
    if resolve_device(device).type == "cuda":
        base = {
            "embedding": "paper",
            "steps": 100_000,
            "batch_size": 512,
            "lr": 5e-4,
            "warmup_steps": 1000,
            "val_size": 4096,
            "val_every": 500,
            "patience": 20,
            "checkpoint_every": 2000,
        }
    else:
        base = {
            "embedding": "cpu",
            "steps": 20_000,
            "max_time_s": CPU_BUDGET_S,
            "batch_size": 64,
            "lr": 1e-3,
            "warmup_steps": 100,
            "val_size": 1024,
            "val_every": 100,
            "patience": 0,
            "checkpoint_every": 200,
        }
    base.update(device=device)
    base.update(overrides)
    return TrainingConfig(**base)
