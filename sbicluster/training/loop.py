"""The training loop: :func:`train` and its parts (one step, validation, the stop decision).

This module owns the order of events in a run: build the data source, model and optimizer; resume
from a checkpoint; take steps; validate every ``val_every`` steps and keep the best weights; decide
when to stop (step limit, time budget, early stopping, ``stop_after_steps``, SIGINT/SIGTERM);
checkpoint every ``checkpoint_every`` steps and on every stop but the step limit and the time
budget; and write the final artifact (:func:`sbicluster.artifact.save_model`). It must not define
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
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

import torch

from simulators.base import Simulator
from simulators.batch import SimulationBatch

from ..devices import resolve_device
from ..errors import InputError
from ..model import ClusterModel, default_architecture, weighted_loss
from .card import training_card
from .checkpoint import has_checkpoint, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .config import TrainingConfig, upgrade_config_dict
from .data import DatasetBatches, OnlineSource, TrainingData, estimate_softening
from .schedule import lr_at
from .tracking import Tracker, logged_terms

__all__ = ["train", "validate"]

logger = logging.getLogger(__name__)

VALIDATION_CHUNK = 512
"""Validation samples per forward pass."""


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


def _data_source(simulator: Simulator, config: TrainingConfig) -> TrainingData:
    """The pool reader when ``config.dataset`` is set, else fresh simulations."""
    if config.dataset:
        return DatasetBatches(
            config.dataset, torch.Generator().manual_seed(config.seed), config.val_size
        )
    return OnlineSource(simulator, config.seed, config.val_size)


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
    }


def _resume(
    ckpt_dir: Path,
    config: TrainingConfig,
    model: ClusterModel,
    opt: torch.optim.Optimizer,
    data: TrainingData,
) -> dict:
    """Load the checkpoint and check that it was written with ``config`` (old field names read
    with :func:`~sbicluster.training.config.upgrade_config_dict`)."""
    if not has_checkpoint(ckpt_dir):
        raise InputError(
            f"cannot resume: no checkpoint in {ckpt_dir}; run without --resume to start afresh"
        )
    saved = upgrade_config_dict(read_checkpoint_meta(ckpt_dir)["config"])
    current = config.to_dict()
    if saved != current:  # checked before loading: another architecture's tensors do not fit
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise InputError(
            f"checkpoint in {ckpt_dir} was written with a different configuration "
            f"(fields {diff}); resume with the same settings or start a new out_dir"
        )
    loaded = load_checkpoint(ckpt_dir, model, opt, data)
    loaded["config"] = current
    return loaded


def _train_step(
    model: ClusterModel,
    opt: torch.optim.Optimizer,
    batch: SimulationBatch,
    config: TrainingConfig,
    lr: float,
    amp: bool,
) -> dict[str, float]:
    """One AdamW step at learning rate ``lr`` with global gradient-norm clipping; returns the
    batch's loss terms (before the step)."""
    for group in opt.param_groups:
        group["lr"] = lr
    parts = model.losses(
        batch.theta,
        batch.images,
        batch.label,
        batch.visibility,
        weights=config.loss_weights,
        autocast=amp,
    )
    opt.zero_grad(set_to_none=True)
    parts["total"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    return {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def validate(
    model: ClusterModel, val: SimulationBatch, loss_weights: dict, amp: bool = False
) -> dict[str, float]:
    """Loss terms on the validation set, in chunks of :data:`VALIDATION_CHUNK` samples.

    ``nll`` and ``balance`` are averaged over cluster samples, ``bce`` and ``mse`` over all
    samples; ``total`` is their weighted sum. The model is left in training mode.

    Parameters
    ----------
    model : ClusterModel
    val : SimulationBatch
        On the model's device.
    loss_weights : dict
        ``TrainingConfig.loss_weights``.
    amp : bool
        bfloat16 autocast for the embedding.

    Returns
    -------
    dict
        ``total``, ``nll``, ``bce``, ``mse``, ``balance``.
    """
    model.eval()
    sums, n = {}, len(val)
    for start in range(0, n, VALIDATION_CHUNK):
        b = val[start : start + VALIDATION_CHUNK]
        parts = model.losses(
            b.theta, b.images, b.label, b.visibility, weights=loss_weights, autocast=amp
        )
        n_cl = int(b.label.sum())
        for k, v in parts.items():
            w = n_cl if k in ("nll", "balance") else len(b)
            sums[k] = sums.get(k, 0.0) + float(v) * w
            sums[f"_{k}"] = sums.get(f"_{k}", 0) + w
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
        ``resume`` without a checkpoint, or a checkpoint from a different configuration.
    """
    from ..artifact import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"
    device = resolve_device(config.device)
    amp = bool(config.amp and device.type == "cuda")

    data = _data_source(simulator, config)
    val = data.validation().to(device)
    softening = config.softening or estimate_softening(val.images)
    model = _build_model(simulator, config, softening, device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    meta = _fresh_meta(config, softening)
    if resume:
        meta.update(_resume(ckpt_dir, config, model, opt, data))

    def checkpoint() -> None:
        meta["elapsed_s"] = time.perf_counter() - t0
        save_checkpoint(ckpt_dir, model, opt, data, meta)

    terms = logged_terms(config.loss_weights)
    model.train()
    t0 = time.perf_counter() - meta["elapsed_s"]
    stop_reason = "steps"
    first_step = meta["step"]
    running = _RunningMean()
    with (
        contextlib.closing(data),
        Tracker(
            out_dir,
            terms,
            total_steps=config.steps,
            initial_step=first_step,
            append=resume,
            progress=progress,
            tensorboard=config.tensorboard,
        ) as tracker,
        _SignalFlag() as flag,
    ):
        while meta["step"] < config.steps:
            elapsed = time.perf_counter() - t0
            if config.max_time_s is not None and elapsed > config.max_time_s:
                stop_reason = "time budget"
                break
            step = meta["step"]
            lr = lr_at(step, config, elapsed / config.max_time_s if config.max_time_s else 0.0)
            batch = data.next(config.batch_size).to(device)
            running.add(_train_step(model, opt, batch, config, lr, amp))
            meta["step"] = step + 1
            tracker.step()
            validated = meta["step"] % config.val_every == 0 or meta["step"] == config.steps
            if validated:
                vl = validate(model, val, config.loss_weights, amp)
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
                signal_raised=flag.raised,
            )
            if reason is not None or meta["step"] % config.checkpoint_every == 0:
                checkpoint()
            if reason is not None:
                stop_reason = reason
                if reason.startswith("signal"):
                    logger.warning(
                        "received %s: checkpoint written to %s; resume with resume=True",
                        flag.raised,
                        ckpt_dir,
                    )
                break

    meta["elapsed_s"] = time.perf_counter() - t0
    final_val = validate(model, val, config.loss_weights, amp)
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
    )
    save_model(model, out_dir / "model", overwrite=True)
    logger.info(
        "training stopped (%s) after %d steps; model written to %s",
        stop_reason,
        meta["step"],
        out_dir / "model",
    )
    return model
