"""The training loop: :func:`train` and its parts (one step, validation, the stop decision).

This module owns the order of events in a run: build the data source, model and optimizer (the
model from a trained one's weights for a warm start, :mod:`.warm_start`); resume from a
checkpoint; take steps; validate every ``val_every`` steps and keep the best weights; decide
when to stop (step limit, time budget, early stopping, ``stop_after_steps``, SIGINT/SIGTERM);
checkpoint every ``checkpoint_every`` steps and on every stop; and write the final artifact
(:func:`sbicluster.artifact.save_model`). Which run folders may be written and resumed is decided
by :func:`check_run_dir` before any work. It must not define
the network (:mod:`sbicluster.model`), the simulator, the data layout (:mod:`.data`), the
checkpoint format (:mod:`.checkpoint`) or what is logged (:mod:`.tracking`).

Losses (per batch; weights in :attr:`TrainingConfig.loss_weights`, documented defaults)::

    total = NLL_flow(clusters only) + 1.0 · BCE(cluster label) + 0.5 · MSE(log(1 + visibility))
            [+ λ · balancing penalty, off by default]

The flow term is the maximum-likelihood (NPE) loss, −log q(θ | x), on cluster samples only;
backgrounds carry no θ. The classifier and visibility terms use every sample. With
``loss_weights["balance"] = λ > 0`` the balanced-NPE penalty of Delaunoy et al. 2023, estimated
without bias from two halves of each batch (:mod:`sbicluster.balance`), is added and logged as
``train_balance`` / ``val_balance`` (single values may be negative); the validation value is its
mean over chunks of 512 samples.

Reproducibility: all randomness comes from seeded ``torch.Generator`` streams (training and
validation data, :mod:`.data`) and a seeded model initialisation. A checkpoint stores weights,
optimizer moments, the data stream's state, step counter and early-stopping state, so
``train(..., resume=True)`` continues exactly as an uninterrupted run (on the same device).

Several processes (``torchrun --nproc_per_node P -m sbicluster train ...``): each takes its share
of every global batch of a pool (:mod:`.distributed`); DDP averages the gradients, so the run
follows the one-process run of the same global batch to float32 rounding. Rank 0 alone logs,
checkpoints and writes the model; every process agrees on each stop. A checkpoint holds the one
data stream all processes share, so a run resumes exactly with any number of processes.
Fresh simulations (no pool) and the balancing penalty are refused with more than one process.

Stops and resuming: every stop writes a checkpoint whose ``state.json`` records ``stop_reason``.

- ``signal SIGINT`` / ``signal SIGTERM``: the model so far is written too, then
  :class:`~sbicluster.errors.TrainingInterrupted` is raised (the command line exits 130 / 143).
  Resuming continues the run with what is left of its time budget (wall time counts across
  resumes, as ``elapsed_s`` in ``log.csv``), on the same learning-rate schedule.
- ``stop_after_steps``: resumes the same way.
- ``time budget``: resuming gives the run a fresh budget of ``max_time_s`` seconds from the
  resume; the schedule's time fraction is already 1, so it trains on at the final learning rate
  ``lr · min_lr_ratio`` (the step limit still applies).
- ``steps`` (the step limit) and ``early stopping``: the run is complete; resuming is refused with
  an :class:`~sbicluster.errors.InputError` (start a new run folder, or ``overwrite=True``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from pathlib import Path

import torch

from simulators.base import Simulator
from simulators.batch import SimulationBatch

from ..allocator import retain_freed_memory
from ..checks import is_whole_number
from ..devices import cpu_has_bf16, resolve_device
from ..errors import InputError, OutputExistsError, TrainingInterrupted
from ..files import check_writable_dir
from ..inference import SYMMETRY_VIEWS, check_views
from ..model import ClusterModel, default_architecture, weighted_loss
from .augment import AUGMENT_SEED_OFFSET, SymmetryAugmented
from .card import training_card
from .checkpoint import has_checkpoint, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .config import SPEED_ONLY_FIELDS, TrainingConfig, upgrade_config_dict
from .data import DatasetBatches, OnlineSource, TrainingData, estimate_softening
from .distributed import (
    ProcessGroup,
    join_process_group,
    select_rank_device,
    use_global_batchnorm,
)
from .schedule import lr_at
from .tracking import SilentTracker, Tracker, logged_terms
from .warm_start import load_warm_start

__all__ = ["train", "train_step", "validate", "check_run_dir", "check_augmentation"]

logger = logging.getLogger(__name__)

VALIDATION_CHUNK = 512
"""Validation samples per forward pass when :func:`validate` is not given a chunk."""

RUN_FILES = ("model", "log.csv", "checkpoint", "tensorboard")
"""What a training run writes into its folder (``pool.h5``, training data, is not counted)."""

COMPLETE_STOPS = ("steps", "early stopping")
"""Stop reasons after which a run is complete and cannot be resumed."""


class _SignalFlag:
    """Sets ``raised`` to the signal's name on SIGINT/SIGTERM while active (main thread only)."""

    def __init__(self) -> None:
        self.raised, self._old = None, {}

    def __enter__(self) -> _SignalFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _RunningMean:
    """Mean of each training loss term over the steps since the last reset."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, parts: dict[str, float]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def mean(self) -> dict[str, float]:
        return {k: s / max(1, self.n) for k, s in self.sums.items()}


def check_run_dir(
    out_dir: str | Path,
    *,
    config: TrainingConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Check, before any work, that a training run may write to (or resume from) ``out_dir``.

    Nothing is created or removed.

    Parameters
    ----------
    out_dir : str or Path
        The run folder.
    config : TrainingConfig, optional
        With ``resume``: the checkpoint must have been written with this configuration (fields of
        :data:`~.config.SPEED_ONLY_FIELDS` may differ).
    resume : bool
        Continue the run whose checkpoint is in ``out_dir/checkpoint``.
    overwrite : bool
        Start afresh even though ``out_dir`` holds a previous run (its files are replaced).

    Returns
    -------
    Path
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        ``out_dir`` is not a writable folder; ``resume`` together with ``overwrite``; ``resume``
        without a checkpoint, with a checkpoint of another configuration, or of a complete run.
    OutputExistsError
        ``out_dir`` holds a previous run (``model/``, ``log.csv``, ``checkpoint/``) and neither
        ``resume`` nor ``overwrite`` was given.
    """
    out_dir = check_writable_dir(out_dir, what="--out")
    if resume and overwrite:
        raise InputError(
            "--resume and --overwrite exclude each other: --resume continues the run in "
            f"{out_dir}, --overwrite starts it afresh"
        )
    if not resume:
        previous = [name for name in RUN_FILES if (out_dir / name).exists()]
        if previous and not overwrite:
            raise OutputExistsError(
                f"--out {out_dir}: holds a previous training run ({', '.join(previous)}); pass "
                "--resume to continue it or --overwrite to start afresh (or choose another --out)"
            )
        return out_dir
    ckpt_dir = out_dir / "checkpoint"
    if not has_checkpoint(ckpt_dir):
        raise InputError(
            f"cannot resume: no checkpoint in {ckpt_dir}; run without --resume to start afresh"
        )
    saved_meta = read_checkpoint_meta(ckpt_dir)
    if config is not None:
        saved = _computed(upgrade_config_dict(saved_meta["config"]))
        current = _computed(config.to_dict())
        if saved != current:  # checked before loading: another architecture's tensors do not fit
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise InputError(
                f"checkpoint in {ckpt_dir} was written with a different configuration "
                f"(fields {diff}); resume with the same settings or start a new out_dir"
            )
    reason = saved_meta.get("stop_reason")
    if reason in COMPLETE_STOPS:
        why = "its step limit" if reason == "steps" else "early stopping"
        raise InputError(
            f"cannot resume: the run in {out_dir} is complete (stopped on {why} after "
            f"{saved_meta['step']} steps; model in {out_dir / 'model'}); to train longer start a "
            "new run with more --steps in another --out, or pass --overwrite to start afresh"
        )
    return out_dir


def _computed(config: dict) -> dict:
    """A recorded configuration without the fields that change only a run's speed."""
    return {k: v for k, v in config.items() if k not in SPEED_ONLY_FIELDS}


def _data_source(simulator: Simulator, config: TrainingConfig, group: ProcessGroup) -> TrainingData:
    """The pool reader when ``config.dataset`` is set (this process's share of each batch), else
    fresh simulations; shown in random symmetric views when ``config.augment_views > 1``."""
    if config.dataset:
        source = DatasetBatches(
            config.dataset,
            torch.Generator().manual_seed(config.seed),
            config.val_size,
            rank=group.rank,
            world_size=group.world_size,
        )
    else:
        source = OnlineSource(simulator, config.seed, config.val_size)
    if config.augment_views == 1:
        return source
    return SymmetryAugmented(source, config.augment_views, config.seed + AUGMENT_SEED_OFFSET)


def _autocast(config: TrainingConfig, device: torch.device) -> bool:
    """Whether the embedding trains under bfloat16 autocast on ``device``.

    Raises
    ------
    InputError
        ``cpu_amp`` on a CPU without native bfloat16 arithmetic.
    """
    if device.type == "cuda":
        return bool(config.amp)
    if config.cpu_amp and not cpu_has_bf16():
        raise InputError(
            "--cpu-bf16: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where "
            "bfloat16 autocast would be slower than float32; train without it"
        )
    return bool(config.cpu_amp)


def check_augmentation(config: TrainingConfig, simulator: Simulator) -> None:
    """Refuse, before any work, symmetric views the observations cannot take.

    Raises
    ------
    InputError
        ``augment_views`` not 1, 2, 4 or 8; views of observations that are not (C, H, W) images
        (catalogue rows); 4 or 8 views of non-square cutouts.
    """
    if config.augment_views not in SYMMETRY_VIEWS:
        raise InputError(
            f"--augment-views must be one of {SYMMETRY_VIEWS}, got {config.augment_views}"
        )
    shape = tuple(simulator.observation_shape)
    if config.augment_views > 1 and len(shape) != 3:
        raise InputError(
            f"--augment-views {config.augment_views}: the simulator's observations of shape "
            f"{shape} are not images; train catalogue models without it"
        )
    if config.augment_views > 1:
        check_views(config.augment_views, shape)


def _check_parallel_config(config: TrainingConfig, group: ProcessGroup) -> None:
    """Refuse, before any work, what a data-parallel run cannot do."""
    if not group.parallel:
        return
    if not config.dataset:
        raise InputError(
            f"training in {group.world_size} processes needs a simulation pool: simulate one with "
            "`sbicluster simulate-pool` and pass --pool-dir (fresh simulations are drawn by one "
            "process only)"
        )
    if config.loss_weights.get("balance", 0.0) > 0:
        raise InputError(
            "the balancing penalty (--balance-weight) does not split over processes: train it "
            "in one process"
        )
    if config.batch_size < group.world_size:
        raise InputError(
            f"--batch-size {config.batch_size} is smaller than the {group.world_size} processes "
            "that share each batch"
        )


class _BatchLosses(torch.nn.Module):
    """The model's training losses as a module's forward, the call that DDP synchronises."""

    def __init__(self, model: ClusterModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, theta, images, label, visibility, weights: dict, amp: bool, counts):
        return self.model.losses(
            theta,
            images,
            label,
            visibility,
            weights=weights,
            autocast=amp,
            global_counts=counts,
        )


class DataParallel:
    """A model's data-parallel training across the processes of ``group``: global-batch batch
    normalisation and a DDP-wrapped loss (see :mod:`.distributed`).

    Parameters
    ----------
    model : ClusterModel
        Converted in place to global-batch batch normalisation.
    group : ProcessGroup
        The processes (more than one).
    global_batchnorm : bool
        Normalise with the global batch's statistics (the one-process computation); False keeps
        each process's own (faster on CPUs).
    """

    def __init__(
        self, model: ClusterModel, group: ProcessGroup, *, global_batchnorm: bool = True
    ) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.group = group
        if global_batchnorm:
            use_global_batchnorm(model)
        device = model.device
        self.losses = DistributedDataParallel(
            _BatchLosses(model),
            device_ids=[device.index] if device.type == "cuda" else None,
            # a share of a batch may hold no cluster, leaving the flow unused in that process
            find_unused_parameters=True,
        )


def _build_model(
    simulator: Simulator, config: TrainingConfig, softening: list[float], device: torch.device
) -> ClusterModel:
    """The untrained model, initialised from its own stream seeded with ``config.seed`` (so that
    it does not depend on global random state)."""
    arch = default_architecture(
        config.embedding,
        len(simulator.bands),
        softening,
        embedding_overrides=config.embedding_overrides,
        flow_overrides=config.flow_overrides,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ClusterModel(simulator.prior, simulator.bands, simulator.observation_shape, arch)
        return model.to(device)


def _fresh_meta(config: TrainingConfig, softening: list[float]) -> dict:
    """The progress record of a run that has not started (what ``state.json`` stores)."""
    return {
        "step": 0,
        "best_val": float("inf"),
        "best_step": -1,
        "bad_evals": 0,
        "elapsed_s": 0.0,
        "config": config.to_dict(),
        "softening": softening,
        "best_state": None,
        "history": [],
        "time_limit_s": config.max_time_s,
        "stop_reason": None,
    }


def _resume(
    ckpt_dir: Path,
    config: TrainingConfig,
    model: ClusterModel,
    opt: torch.optim.Optimizer,
    data: TrainingData,
) -> dict:
    """Load the checkpoint (already checked by :func:`check_run_dir`) and set the run's time limit:
    a run that stopped on its time budget gets a fresh one from now."""
    loaded = load_checkpoint(ckpt_dir, model, opt, data)
    loaded["config"] = config.to_dict()
    if config.max_time_s is not None:
        if loaded.get("stop_reason") == "time budget":
            loaded["time_limit_s"] = loaded["elapsed_s"] + config.max_time_s
        else:
            loaded.setdefault("time_limit_s", config.max_time_s)
    loaded["stop_reason"] = None
    return loaded


def train_step(
    model: ClusterModel,
    opt: torch.optim.Optimizer,
    batch: SimulationBatch,
    config: TrainingConfig,
    lr: float,
    amp: bool,
    *,
    parallel: DataParallel | None = None,
) -> dict[str, float]:
    """One AdamW step at learning rate ``lr`` with global gradient-norm clipping; returns the
    batch's loss terms (before the step).

    With ``parallel``, ``batch`` is this process's share of the global batch, the gradient is
    that of the global batch's loss (averaged by DDP) and the returned terms are the global
    batch's, the same in every process.
    """
    for param_group in opt.param_groups:
        param_group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if parallel is None:
        parts = model.losses(
            batch.theta,
            batch.images,
            batch.label,
            batch.visibility,
            weights=config.loss_weights,
            autocast=amp,
        )
        parts["total"].backward()
    else:
        counts = parallel.group.global_counts(batch.label)
        parts = parallel.losses(
            batch.theta,
            batch.images,
            batch.label,
            batch.visibility,
            config.loss_weights,
            amp,
            counts,
        )
        # DDP averages the gradients of the P partial losses: P × partial sums to the global mean
        (parts["total"] * parallel.group.world_size).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    terms = {k: float(v.detach()) for k, v in parts.items()}
    return terms if parallel is None else parallel.group.sum(terms)


def _check_validation_chunk(chunk) -> None:
    """Refuse a validation chunk that is not a whole number ≥ 1."""
    if not is_whole_number(chunk):
        raise InputError(f"validation chunk {chunk!r}: must be a whole number ≥ 1")


@torch.no_grad()
def validate(
    model: ClusterModel,
    val: SimulationBatch,
    loss_weights: dict,
    amp: bool = False,
    group: ProcessGroup | None = None,
    chunk: int = VALIDATION_CHUNK,
) -> dict[str, float]:
    """Loss terms on the validation set, in chunks of ``chunk`` samples.

    ``nll`` and ``balance`` are averaged over cluster samples, ``bce`` and ``mse`` over all
    samples; ``total`` is their weighted sum. The model is left in training mode. With a
    data-parallel ``group``, each process evaluates every ``world_size``-th chunk and the sums are
    combined, so every process returns the same terms.

    Parameters
    ----------
    model : ClusterModel
    val : SimulationBatch
        On the model's device.
    loss_weights : dict
        ``TrainingConfig.loss_weights``.
    amp : bool
        bfloat16 autocast for the embedding.
    group : ProcessGroup, optional
        The processes sharing the work (default: this one alone).
    chunk : int
        Samples per forward pass (``TrainingConfig.validation_chunk`` in training); the terms do
        not depend on it beyond float32 rounding.

    Returns
    -------
    dict
        ``total``, ``nll``, ``bce``, ``mse``, ``balance``.
    """
    _check_validation_chunk(chunk)
    group = group or ProcessGroup()
    model.eval()
    sums, n = {}, len(val)
    for key in ("total", "nll", "bce", "mse", "balance"):  # the same keys, in order, everywhere
        sums[key], sums[f"_{key}"] = 0.0, 0
    stride = chunk * group.world_size
    for start in range(chunk * group.rank, n, stride):
        b = val[start : start + chunk]
        parts = model.losses(
            b.theta, b.images, b.label, b.visibility, weights=loss_weights, autocast=amp
        )
        n_cl = int(b.label.sum())
        for k, v in parts.items():
            w = n_cl if k in ("nll", "balance") else len(b)
            sums[k] = sums.get(k, 0.0) + float(v) * w
            sums[f"_{k}"] = sums.get(f"_{k}", 0) + w
    sums = group.sum(sums)
    out = {k: sums[k] / max(1, sums[f"_{k}"]) for k in ("nll", "bce", "mse", "balance")}
    out["total"] = weighted_loss(out, loss_weights)
    model.train()
    return out


def _record_validation(meta: dict, model: ClusterModel, val: dict[str, float]) -> None:
    """Keep the weights of the best validation so far; count validations without improvement."""
    if val["total"] < meta["best_val"]:
        meta.update(best_val=val["total"], best_step=meta["step"], bad_evals=0, best_metrics=val)
        meta["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        meta["bad_evals"] += 1


_SIGNAL_CODES = {"SIGINT": 2.0, "SIGTERM": 15.0}


def _agreed_signal(raised: str | None, group: ProcessGroup) -> str | None:
    """The signal caught by any process (SIGTERM over SIGINT), the same in every process."""
    if not group.parallel:
        return raised
    code = group.max(_SIGNAL_CODES.get(raised, 0.0) if raised else 0.0)
    return next((name for name, c in _SIGNAL_CODES.items() if c == code), None)


def _stop_reason(
    meta: dict,
    config: TrainingConfig,
    *,
    validated: bool,
    steps_this_call: int,
    stop_after_steps: int | None,
    signal_raised: str | None,
) -> str | None:
    """Why to stop after the step just taken (checkpointing first), or None to go on.

    In order of precedence: ``early stopping`` (only right after a validation, once ``patience``
    validations in a row did not improve), ``stop_after_steps``, ``signal <NAME>``. The step
    limit and the time budget end the loop elsewhere.
    """
    if validated and config.patience and meta["bad_evals"] >= config.patience:
        return "early stopping"
    if stop_after_steps is not None and steps_this_call >= stop_after_steps:
        return "stop_after_steps"
    if signal_raised:
        return f"signal {signal_raised}"
    return None


def train(
    simulator: Simulator,
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> ClusterModel:
    """Train a model on simulations and write it to ``out_dir/model``.

    Parameters
    ----------
    simulator : Simulator
        ``simulate``, ``prior``, ``bands``, ``observation_shape``, ``device`` (where its
        generators are created, so simulation runs there) and ``card()``.
    config : TrainingConfig
        Settings.
    out_dir : str or Path
        Run directory: ``log.csv``, ``checkpoint/``, ``model/`` (the artifact), ``tensorboard/``.
    resume : bool
        Continue from ``out_dir/checkpoint`` (identical continuation for the same config/seed).
        A run that stopped on its time budget gets a fresh budget; a complete run (step limit,
        early stopping) is refused (see the module docstring).
    overwrite : bool
        Start afresh in an ``out_dir`` that holds a previous run: its ``checkpoint/``,
        ``tensorboard/``, ``model/`` and ``log.csv`` are removed before the first step, so no
        stale checkpoint can be resumed later. Without it (and without ``resume``) such an
        ``out_dir`` is refused.
    progress : bool
        Progress bar (only on a terminal).
    stop_after_steps : int, optional
        Run at most this many steps in this call, then checkpoint and return (the schedule still
        follows ``config.steps``; continue with ``resume=True``).

    Returns
    -------
    ClusterModel
        The model with the best validation loss, in evaluation mode, card filled.

    Raises
    ------
    InputError
        ``out_dir`` not a writable folder; ``resume`` with ``overwrite``; ``resume`` without a
        checkpoint, with a checkpoint from a different configuration, or of a complete run.
    OutputExistsError
        ``out_dir`` holds a previous run and neither ``resume`` nor ``overwrite`` was given.
    TrainingInterrupted
        After SIGINT or SIGTERM, once the checkpoint and the model so far are written; carries
        the signal, the checkpoint folder and the process exit code (130 / 143).
    """
    select_rank_device()
    device = resolve_device(config.device)
    group = join_process_group(device)
    try:
        return _train(
            simulator, config, out_dir, device, group, resume, overwrite, progress, stop_after_steps
        )
    finally:
        group.close()


def _train(
    simulator: Simulator,
    config: TrainingConfig,
    out_dir: str | Path,
    device: torch.device,
    group: ProcessGroup,
    resume: bool,
    overwrite: bool,
    progress: bool,
    stop_after_steps: int | None,
) -> ClusterModel:
    """:func:`train` within the process group ``group`` (one process or several)."""
    from ..artifact import save_model

    _check_parallel_config(config, group)
    check_augmentation(config, simulator)
    amp = _autocast(config, device)
    val_chunk = config.validation_chunk_size
    _check_validation_chunk(val_chunk)
    out_dir = check_run_dir(out_dir, config=config, resume=resume, overwrite=overwrite)
    # a warm start's source is read once, before anything is written; a resumed run has its weights
    warm_start = load_warm_start(config, simulator) if config.init_from and not resume else None
    if device.type == "cpu" and config.retain_freed_memory and retain_freed_memory():
        logger.info("CPU training: freed memory stays in the process between steps")
    group.barrier()  # every process has checked the folder before rank 0 changes it
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"

    data = _data_source(simulator, config, group)
    val = data.validation().to(device)
    if warm_start is not None and warm_start.softening is not None:
        softening = warm_start.softening  # the source network reads inputs so normalised
    elif resume and config.init_from:
        softening = read_checkpoint_meta(ckpt_dir)["softening"]
    else:
        softening = config.softening or estimate_softening(val.images)
    model = _build_model(simulator, config, softening, device)
    if warm_start is not None:
        model.load_state_dict(warm_start.model.state_dict())
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        **({"fused": True} if config.fused_optimizer else {}),
    )
    meta = _fresh_meta(config, softening)
    if warm_start is not None:
        meta["initialised_from"] = warm_start.record
    if resume:
        meta.update(_resume(ckpt_dir, config, model, opt, data))
    elif overwrite and group.is_main:  # start afresh: nothing of the previous run may remain
        for name in RUN_FILES:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    group.barrier()
    parallel = (
        DataParallel(model, group, global_batchnorm=config.global_batchnorm)
        if group.parallel
        else None
    )

    def checkpoint() -> None:
        meta["elapsed_s"] = time.perf_counter() - t0
        if group.is_main:
            save_checkpoint(ckpt_dir, model, opt, data, meta)

    terms = logged_terms(config.loss_weights)
    model.train()
    t0 = time.perf_counter() - meta["elapsed_s"]
    stop_reason = "steps"
    first_step = meta["step"]
    running = _RunningMean()
    tracker = (
        Tracker(
            out_dir,
            terms,
            total_steps=config.steps,
            initial_step=first_step,
            append=resume,
            progress=progress,
            tensorboard=config.tensorboard,
        )
        if group.is_main
        else SilentTracker()
    )
    with contextlib.closing(data), tracker, _SignalFlag() as flag:
        while meta["step"] < config.steps:
            elapsed = time.perf_counter() - t0
            over_time = meta["time_limit_s"] is not None and elapsed > meta["time_limit_s"]
            if group.any(over_time):  # rank 0's clock and the others' may differ by a step
                stop_reason = "time budget"
                break
            step = meta["step"]
            lr = lr_at(step, config, elapsed / config.max_time_s if config.max_time_s else 0.0)
            batch = data.next(config.batch_size).to(device)
            running.add(train_step(model, opt, batch, config, lr, amp, parallel=parallel))
            meta["step"] = step + 1
            tracker.step()
            validated = meta["step"] % config.val_every == 0 or meta["step"] == config.steps
            if validated:
                vl = validate(model, val, config.loss_weights, amp, group, val_chunk)
                meta["elapsed_s"] = time.perf_counter() - t0
                tracker.log(meta["step"], meta["elapsed_s"], lr, running.mean(), vl)
                running = _RunningMean()
                _record_validation(meta, model, vl)
            reason = _stop_reason(
                meta,
                config,
                validated=validated,
                steps_this_call=meta["step"] - first_step,
                stop_after_steps=stop_after_steps,
                signal_raised=_agreed_signal(flag.raised, group),
            )
            if reason is not None:
                stop_reason = reason
                break
            if meta["step"] % config.checkpoint_every == 0:
                checkpoint()
        meta["stop_reason"] = stop_reason
        checkpoint()  # at every stop, so that any run can be resumed (or known to be complete)

    meta["elapsed_s"] = time.perf_counter() - t0
    final_val = validate(model, val, config.loss_weights, amp, group, val_chunk)
    if meta.get("best_state") is not None and final_val["total"] > meta["best_val"]:
        model.load_state_dict(meta["best_state"])
        final_val = meta.get("best_metrics", final_val)
    model.eval()
    model.card = training_card(
        out_dir.name,
        simulator.card(),
        config,
        meta,
        stop_reason=stop_reason,
        device=device,
        amp=amp,
        terms=terms,
        metrics=final_val,
        processes=group.world_size,
    )
    if group.is_main:
        save_model(model, out_dir / "model", overwrite=True)
    group.barrier()  # the model is on disk before any process returns
    logger.info(
        "training stopped (%s) after %d steps; model written to %s",
        stop_reason,
        meta["step"],
        out_dir / "model",
    )
    if stop_reason.startswith("signal "):
        raise TrainingInterrupted(stop_reason.split()[1], ckpt_dir, meta["step"], model)
    return model
