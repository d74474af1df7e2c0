"""Training a :class:`~sbicluster.model.ClusterModel` from simulations generated batch by batch.

This module owns the training loop: online simulation on the training device (or a pre-simulated
HDF5 dataset), a fixed validation set, AdamW with linear warm-up + cosine decay, bfloat16 mixed
precision for the embedding on CUDA, gradient clipping, early stopping on the validation loss, a
progress bar and CSV (optionally TensorBoard) log, checkpoints every N steps and on SIGINT/SIGTERM,
exact resumption, and the final artifact (:func:`sbicluster.artifact.save_model`). It must not
define the network (:mod:`sbicluster.model`) or the simulator.

Losses (per batch; weights in :class:`TrainingConfig.loss_weights`, documented defaults)::

    total = NLL_flow(clusters only) + 1.0 · BCE(cluster label) + 0.5 · MSE(log(1 + visibility))
            [+ λ · balancing penalty, off by default]

The flow term is the maximum-likelihood (NPE) loss, −log q(θ | x), on cluster samples only;
backgrounds carry no θ. The classifier and visibility terms use every sample. With
``loss_weights["balance"] = λ > 0`` the balanced-NPE penalty of Delaunoy et al. 2023, estimated
without bias from two halves of each batch (:mod:`sbicluster.balance`), is added and logged as
``train_balance`` / ``val_balance`` (single values may be negative); the validation value is its
mean over chunks of 512 samples.

Reproducibility: all randomness comes from two ``torch.Generator`` streams seeded from
``config.seed`` (training, validation). A checkpoint stores weights, optimizer moments, the
training generator state, step counter and early-stopping state in safetensors + JSON (no pickle),
so ``train(..., resume=True)`` continues exactly as an uninterrupted run (on the same device).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from simulators.batch import SimulationBatch

from .errors import InputError
from .model import ClusterModel, default_architecture, weighted_loss

__all__ = [
    "TrainingConfig",
    "train",
    "default_config",
    "estimate_softening",
    "write_dataset",
    "DatasetBatches",
    "CPU_BUDGET_S",
]

logger = logging.getLogger(__name__)

CPU_BUDGET_S = 1800.0
"""Wall-time budget of the default CPU training (≈ 30 min on 2 cores)."""


@dataclass
class TrainingConfig:
    """Settings of :func:`train`.

    Parameters
    ----------
    preset : str
        Model preset: ``small`` (tests), ``cpu`` (default CPU model), ``paper`` (GPU).
    embedding, flow : dict or None
        Overrides of the preset's embedding config (``width``, ``blocks``, ``features``, ``pool``)
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
        Seed of the training and validation streams.
    device : str
        ``auto`` (CUDA if available), ``cpu``, ``cuda``, ...
    amp : bool
        bfloat16 autocast for the embedding on CUDA (ignored on CPU).
    loss_weights : dict
        ``classifier`` and ``visibility`` weights (the flow NLL has weight 1), and optionally
        ``balance``, the weight λ of the balanced-NPE penalty (default 0: plain NPE).
    softening : list of float or None
        Per-band asinh softening in e⁻/s; ``None`` estimates it from the validation set's noise.
    dataset : str or None
        HDF5 file from :func:`write_dataset` to train on instead of online simulation.
    tensorboard : bool
        Also write TensorBoard scalars to ``out_dir/tensorboard``.
    """

    preset: str = "small"
    embedding: dict | None = None
    flow: dict | None = None
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
    loss_weights: dict = field(default_factory=lambda: {"classifier": 1.0, "visibility": 0.5})
    softening: list | None = None
    dataset: str | None = None
    tensorboard: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def default_config(device: str = "auto", **overrides) -> TrainingConfig:
    """The configuration the command line uses for the shipped default model.

    On CPU: the ``cpu`` preset under a 30-minute budget (:data:`CPU_BUDGET_S`), batch 64, the
    cosine schedule following the time budget, no early stopping (the budget is the limit). On CUDA:
    the ``paper`` preset, batch 512, 100,000 steps.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or a CUDA device.
    **overrides
        Any :class:`TrainingConfig` field.
    """
    dev = _resolve_device(device)
    if dev.type == "cuda":
        base = {
            "preset": "paper",
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
            "preset": "cpu",
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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def estimate_softening(images: torch.Tensor) -> list[float]:
    """Per-band asinh softening (e⁻/s): the median over cutouts of the robust pixel noise.

    ``1.4826 · MAD`` of each cutout's pixels per band, median over cutouts; floored at 1e-6.
    Computed once from the (fixed) validation set and frozen into the model card.
    """
    x = images.detach().float().reshape(images.shape[0], images.shape[1], -1)
    med = x.median(dim=-1, keepdim=True).values
    mad = (x - med).abs().median(dim=-1).values * 1.4826
    return [max(float(v), 1e-6) for v in mad.median(dim=0).values.cpu()]


# ---------------------------------------------------------------------------- data sources
class _OnlineSource:
    def __init__(self, simulator, generator: torch.Generator) -> None:
        self.simulator, self.generator = simulator, generator

    def next(self, n: int) -> SimulationBatch:
        return self.simulator.simulate(n, self.generator)

    def state(self) -> dict[str, torch.Tensor]:
        return {"rng.train": self.generator.get_state()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(tensors["rng.train"].cpu())


class DatasetBatches:
    """Shuffled epochs over a pool written by :func:`write_dataset` (what ``train(dataset=...)``
    reads).

    The last ``val_size`` rows are the validation set and are never trained on. Each epoch draws
    a permutation of the training rows from ``generator``; :meth:`next` returns consecutive slices
    of it. Built with the same path, seed and ``val_size``, two readers yield identical batches in
    identical order (used to train competing models on exactly the same data).

    Parameters
    ----------
    path : str
        HDF5 file with datasets ``theta`` (N, 4), ``images`` (N, C, H, W) e⁻/s, ``label`` (N,) and
        ``visibility`` (N,).
    generator : torch.Generator
        Source of the epoch permutations (CPU).
    val_size : int
        Number of validation rows at the end of the file.

    Raises
    ------
    InputError
        If the file has no more than ``val_size`` rows.
    """

    def __init__(self, path: str, generator: torch.Generator, val_size: int) -> None:
        import h5py

        self.file = h5py.File(path, "r")
        n = self.file["images"].shape[0]
        if n <= val_size:
            raise InputError(f"dataset {path} has {n} samples; need more than val_size={val_size}")
        self.n_train, self.val_size, self.generator = n - val_size, val_size, generator
        self.order, self.pos = None, 0
        # the small per-sample columns live in memory; images are read row by row (h5py's
        # fancy indexing costs ~1 ms per row, ~30x a plain row read)
        self._columns = {k: self.file[k][:] for k in ("theta", "label", "visibility")}

    def _read(self, idx: np.ndarray) -> SimulationBatch:
        idx = np.sort(idx)
        images = self.file["images"]
        return SimulationBatch(
            torch.as_tensor(self._columns["theta"][idx]).float(),
            torch.as_tensor(np.stack([images[int(i)] for i in idx])).float(),
            torch.as_tensor(self._columns["label"][idx]).long(),
            torch.as_tensor(self._columns["visibility"][idx]).float(),
            {},
        )

    def validation(self) -> SimulationBatch:
        """The validation rows (the file's last ``val_size``)."""
        return self._read(np.arange(self.n_train, self.n_train + self.val_size))

    def next(self, n: int) -> SimulationBatch:
        """The next ``n`` training rows of the current epoch (a new permutation when it runs out)."""
        if self.order is None or self.pos + n > self.n_train:
            self.order = torch.randperm(self.n_train, generator=self.generator).numpy()
            self.pos = 0
        idx = self.order[self.pos : self.pos + n]
        self.pos += n
        return self._read(idx)

    def state(self) -> dict[str, torch.Tensor]:
        out = {"rng.train": self.generator.get_state(), "disk.pos": torch.tensor([self.pos])}
        if self.order is not None:
            out["disk.order"] = torch.as_tensor(self.order)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(tensors["rng.train"].cpu())
        self.pos = int(tensors["disk.pos"][0])
        self.order = tensors["disk.order"].numpy() if "disk.order" in tensors else None


def write_dataset(
    simulator,
    n: int,
    path: str | Path,
    generator: torch.Generator,
    *,
    chunk: int = 1024,
    progress: bool = True,
) -> Path:
    """Pre-simulate ``n`` samples into an HDF5 file usable as ``TrainingConfig.dataset``.

    Parameters
    ----------
    simulator : ClusterSimulator or compatible
    n : int
        Number of samples.
    path : str or Path
        Output file (written to ``path.tmp`` then renamed).
    generator : torch.Generator
        Randomness.
    chunk : int
        Samples simulated per call.

    Returns
    -------
    Path
    """
    import h5py
    from tqdm.auto import tqdm

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    c, h, w = simulator.image_shape
    with h5py.File(tmp, "w") as f:
        ds = {
            "theta": f.create_dataset("theta", (n, 4), "f4"),
            "images": f.create_dataset(
                "images", (n, c, h, w), "f4", chunks=(min(chunk, n), c, h, w)
            ),
            "label": f.create_dataset("label", (n,), "i8"),
            "visibility": f.create_dataset("visibility", (n,), "f4"),
        }
        f.attrs["simulator_card"] = json.dumps(simulator.card(), default=float)
        for start in tqdm(
            range(0, n, chunk), disable=not (progress and sys.stderr.isatty()), desc="simulate"
        ):
            b = simulator.simulate(min(chunk, n - start), generator)
            sl = slice(start, start + len(b))
            for k in ds:
                ds[k][sl] = getattr(b, k).cpu().numpy()
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- checkpoints
def _save_checkpoint(
    path: Path, model: ClusterModel, opt: torch.optim.Optimizer, source, meta: dict
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for k, v in source.state().items():
        tensors[k] = v.contiguous()
    if meta.get("best_state") is not None:
        for k, v in meta["best_state"].items():
            tensors[f"best.{k}"] = v.detach().cpu().contiguous()
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    info = {k: v for k, v in meta.items() if k != "best_state"}
    (path / "state.json.tmp").write_text(json.dumps(info, indent=2, default=float))
    os.replace(tmp, path / "state.safetensors")
    os.replace(path / "state.json.tmp", path / "state.json")


def _load_checkpoint(path: Path, model: ClusterModel, opt: torch.optim.Optimizer, source) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    dev = model.device
    model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    sd = opt.state_dict()
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v if name == "step" else v.to(dev)
    sd["state"] = state
    opt.load_state_dict(sd)
    source.load_state({k: v for k, v in tensors.items() if k.startswith(("rng.", "disk."))})
    best = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
    meta["best_state"] = best or None
    return meta


# ---------------------------------------------------------------------------- loop
def _lr_at(step: int, cfg: TrainingConfig, time_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over whichever runs out first: steps or the time budget
    (``time_frac`` = elapsed / max_time_s; a time budget makes the schedule depend on speed, so
    exact resumption is guaranteed only for step-limited runs)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(
        1.0, max(time_frac, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    )
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    )


@torch.no_grad()
def _validate(
    model: ClusterModel, val: SimulationBatch, cfg: TrainingConfig, amp: bool
) -> dict[str, float]:
    model.eval()
    sums, n = {}, len(val)
    for start in range(0, n, 512):
        b = val[start : start + 512]
        parts = model.losses(
            b.theta, b.images, b.label, b.visibility, weights=cfg.loss_weights, autocast=amp
        )
        n_cl = int(b.label.sum())
        for k, v in parts.items():
            w = n_cl if k in ("nll", "balance") else len(b)
            sums[k] = sums.get(k, 0.0) + float(v) * w
            sums[f"_{k}"] = sums.get(f"_{k}", 0) + w
    out = {k: sums[k] / max(1, sums[f"_{k}"]) for k in ("nll", "bce", "mse", "balance")}
    out["total"] = weighted_loss(out, cfg.loss_weights)
    model.train()
    return out


def _logged_terms(cfg: TrainingConfig) -> tuple[str, ...]:
    """Loss terms in the CSV log; the balancing penalty only when it is switched on."""
    base = ("total", "nll", "bce", "mse")
    return (*base, "balance") if cfg.loss_weights.get("balance", 0.0) > 0 else base


class _SignalFlag:
    """Sets ``raised`` on SIGINT/SIGTERM while active (main thread only)."""

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


def train(
    simulator,
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
    simulator : ClusterSimulator or compatible
        ``simulate(n, generator)``, ``prior``, ``bands``, ``image_shape``, ``card()`` and optionally
        ``device`` (the generator is created there, so simulation runs on that device).
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
    from tqdm.auto import tqdm

    from .artifact import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoint"
    device = _resolve_device(config.device)
    amp = bool(config.amp and device.type == "cuda")
    sim_device = torch.device(getattr(simulator, "device", "cpu"))
    gen_train = torch.Generator(device=sim_device).manual_seed(config.seed)
    gen_val = torch.Generator(device=sim_device).manual_seed(config.seed + 7_919_999)

    if config.dataset:
        source = DatasetBatches(
            config.dataset, torch.Generator().manual_seed(config.seed), config.val_size
        )
        val = source.validation()
    else:
        source = _OnlineSource(simulator, gen_train)
        val = simulator.simulate(config.val_size, gen_val)
    val = val.to(device)
    softening = config.softening or estimate_softening(val.images)
    arch = default_architecture(
        config.preset, len(simulator.bands), softening, embedding=config.embedding, flow=config.flow
    )
    # model initialisation uses its own seeded stream so that it does not depend on global state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ClusterModel(simulator.prior, simulator.bands, simulator.image_shape, arch).to(
            device
        )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    meta = {
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
    if resume:
        if not (ckpt_dir / "state.json").is_file():
            raise InputError(
                f"cannot resume: no checkpoint in {ckpt_dir}; run without --resume to start afresh"
            )
        loaded = _load_checkpoint(ckpt_dir, model, opt, source)
        if loaded["config"] != config.to_dict():
            diff = sorted(
                k for k in config.to_dict() if loaded["config"].get(k) != config.to_dict()[k]
            )
            raise InputError(
                f"checkpoint in {ckpt_dir} was written with a different configuration "
                f"(fields {diff}); resume with the same settings or start a new out_dir"
            )
        meta.update(loaded)

    log_path = out_dir / "log.csv"
    terms = _logged_terms(config)
    fields = ["step", "elapsed_s", "lr", *(f"{s}_{k}" for s in ("train", "val") for k in terms)]
    new_log = not (resume and log_path.exists())
    log_file = open(log_path, "w" if new_log else "a", newline="")  # noqa: SIM115
    writer = csv.DictWriter(log_file, fieldnames=fields)
    if new_log:
        writer.writeheader()
    tb = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out_dir / "tensorboard"))

    def checkpoint() -> None:
        _save_checkpoint(ckpt_dir, model, opt, source, meta)

    model.train()
    t0 = time.perf_counter() - meta["elapsed_s"]
    stop_reason = "steps"
    first_step = meta["step"]
    running: dict[str, float] = {}
    bar = tqdm(
        total=config.steps,
        initial=meta["step"],
        desc="train",
        unit="step",
        disable=not (progress and sys.stderr.isatty()),
    )
    try:
        with _SignalFlag() as flag:
            while meta["step"] < config.steps:
                if config.max_time_s is not None and time.perf_counter() - t0 > config.max_time_s:
                    stop_reason = "time budget"
                    break
                step = meta["step"]
                time_frac = (
                    (time.perf_counter() - t0) / config.max_time_s if config.max_time_s else 0.0
                )
                lr = _lr_at(step, config, time_frac)
                for g in opt.param_groups:
                    g["lr"] = lr
                b = source.next(config.batch_size).to(device)
                parts = model.losses(
                    b.theta,
                    b.images,
                    b.label,
                    b.visibility,
                    weights=config.loss_weights,
                    autocast=amp,
                )
                opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                meta["step"] = step + 1
                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                running["_n"] = running.get("_n", 0) + 1
                bar.update(1)
                if meta["step"] % config.val_every == 0 or meta["step"] == config.steps:
                    vl = _validate(model, val, config, amp)
                    meta["elapsed_s"] = time.perf_counter() - t0
                    row = {
                        "step": meta["step"],
                        "elapsed_s": round(meta["elapsed_s"], 3),
                        "lr": lr,
                        **{
                            f"train_{k}": running.get(k, float("nan"))
                            / max(1, running.get("_n", 0))
                            for k in terms
                        },
                        **{f"val_{k}": vl[k] for k in terms},
                    }
                    writer.writerow(row)
                    log_file.flush()
                    if tb is not None:
                        for k, v in row.items():
                            if k != "step":
                                tb.add_scalar(k, v, meta["step"])
                    running = {}
                    bar.set_postfix(val=f"{vl['total']:.3f}", nll=f"{vl['nll']:.3f}")
                    if vl["total"] < meta["best_val"]:
                        meta.update(
                            best_val=vl["total"],
                            best_step=meta["step"],
                            bad_evals=0,
                            best_metrics=vl,
                        )
                        meta["best_state"] = {
                            k: v.detach().clone() for k, v in model.state_dict().items()
                        }
                    else:
                        meta["bad_evals"] += 1
                    if config.patience and meta["bad_evals"] >= config.patience:
                        stop_reason = "early stopping"
                        meta["elapsed_s"] = time.perf_counter() - t0
                        checkpoint()
                        break
                if meta["step"] % config.checkpoint_every == 0:
                    meta["elapsed_s"] = time.perf_counter() - t0
                    checkpoint()
                if stop_after_steps is not None and meta["step"] - first_step >= stop_after_steps:
                    stop_reason = "stop_after_steps"
                    meta["elapsed_s"] = time.perf_counter() - t0
                    checkpoint()
                    break
                if flag.raised:
                    stop_reason = f"signal {flag.raised}"
                    meta["elapsed_s"] = time.perf_counter() - t0
                    checkpoint()
                    logger.warning(
                        "received %s: checkpoint written to %s; resume with resume=True",
                        flag.raised,
                        ckpt_dir,
                    )
                    break
    finally:
        bar.close()
        log_file.close()
        if tb is not None:
            tb.close()

    meta["elapsed_s"] = time.perf_counter() - t0
    final_val = _validate(model, val, config, amp)
    if meta.get("best_state") is not None and final_val["total"] > meta["best_val"]:
        model.load_state_dict(meta["best_state"])
        final_val = meta.get("best_metrics", final_val)
    model.eval()
    sim_card = simulator.card()
    model.card = {
        "name": out_dir.name,
        "simulator": sim_card,
        "photometry_table_id": sim_card.get("photometry_table_id", sim_card.get("table_id")),
        "training": {
            "config": config.to_dict(),
            "steps_done": meta["step"],
            "best_step": meta["best_step"],
            "stop_reason": stop_reason,
            "wall_time_s": meta["elapsed_s"],
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else _cpu_name(),
            "threads": torch.get_num_threads(),
            "amp": amp,
            "loss": "NLL_flow(clusters) + w_classifier * BCE + w_visibility * MSE(log1p visibility)"
            + (" + w_balance * balancing penalty (BNPE)" if "balance" in terms else ""),
            "note": (
                f"CPU run: preset {config.preset!r} under a {config.max_time_s:.0f} s wall-time budget"
                if device.type == "cpu" and config.max_time_s
                else ""
            ),
        },
        "metrics": {f"val_{k}": float(final_val[k]) for k in terms},
    }
    save_model(model, out_dir / "model", overwrite=True)
    logger.info(
        "training stopped (%s) after %d steps; model written to %s",
        stop_reason,
        meta["step"],
        out_dir / "model",
    )
    return model


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"
