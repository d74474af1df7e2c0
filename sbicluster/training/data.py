"""Where training batches come from: the :class:`TrainingData` protocol, fresh simulations
(:class:`OnlineSource`), a pre-simulated HDF5 pool (:class:`DatasetBatches`, written by
:func:`write_dataset`), and the per-band input softening estimated from the validation set
(:func:`estimate_softening`).

This module owns the order in which samples reach the optimiser, the fixed validation set, the
state that a checkpoint needs to continue the same stream (generator state, epoch permutation and
position), and the on-disk layout of a pool. It must not know the model, the loss or the loop.

Randomness: an online source draws its training batches from a generator seeded with ``seed`` and
its validation set from one seeded with ``seed + VALIDATION_SEED_OFFSET``, both on the
simulator's device. A pool's epoch permutations come from a CPU generator seeded with ``seed``.

Pool layout (HDF5; a sharded pool folder of :mod:`sbicluster.pool` holds several such files):
datasets ``theta`` (N, d) float32, ``images`` (N, C, H, W) float32 e⁻/s,
``label`` (N,) int64 and ``visibility`` (N,) float32, all stored contiguously (not chunked), and
the attribute ``simulator_card`` (JSON). In contiguous storage each row of ``images`` is one byte
range of the file, found without a chunk index or the chunk cache: :class:`DatasetBatches` maps
the dataset into memory (:func:`image_rows`) and gathers a batch's rows in one indexing step
(128 random rows of a 64 × 64 × 3 pool in 1–2 ms from the page cache, against 15–40 ms row by
row through h5py, measured on 2 cores busy with other work); a chunked or compressed ``images``
dataset is still read, row by row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from simulators.base import Simulator, iter_simulation_chunks
from simulators.batch import SimulationBatch

from ..errors import InputError
from ..files import atomic_path

__all__ = [
    "TrainingData",
    "OnlineSource",
    "DatasetBatches",
    "write_dataset",
    "estimate_softening",
    "image_rows",
    "VALIDATION_SEED_OFFSET",
]

VALIDATION_SEED_OFFSET = 7_919_999
"""Offset of the online validation stream's seed from ``TrainingConfig.seed``."""

POOL_COLUMNS = ("theta", "images", "label", "visibility")
"""Datasets of a pool file, one row per sample."""


@runtime_checkable
class TrainingData(Protocol):
    """A source of training batches and of the fixed validation set.

    Implementations must be deterministic given their construction arguments and state: after
    ``load_state(state())`` they yield the same batches as the source that was saved.
    """

    def next(self, n: int) -> SimulationBatch:
        """The next ``n`` training samples."""
        ...

    def validation(self) -> SimulationBatch:
        """The fixed validation set (the same batch on every call)."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors from which :meth:`load_state` continues the stream (checkpoint keys start with
        ``rng.`` or ``disk.``)."""
        ...

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state`."""
        ...

    def close(self) -> None:
        """Release files or workers (the source is not used afterwards)."""
        ...


class OnlineSource:
    """Fresh simulations for every batch.

    Parameters
    ----------
    simulator : Simulator
        The forward model; its generators live on ``simulator.device``.
    seed : int
        Seed of the training stream; the validation stream uses ``seed + VALIDATION_SEED_OFFSET``.
    val_size : int
        Size of the validation set, simulated in one call on first use.
    """

    def __init__(self, simulator: Simulator, seed: int, val_size: int) -> None:
        self.simulator, self.val_size = simulator, val_size
        self.generator = torch.Generator(device=simulator.device).manual_seed(seed)
        self._val_generator = torch.Generator(device=simulator.device).manual_seed(
            seed + VALIDATION_SEED_OFFSET
        )
        self._val: SimulationBatch | None = None

    def next(self, n: int) -> SimulationBatch:
        """``n`` new simulations (on the simulator's device)."""
        return self.simulator.simulate(n, self.generator)

    def validation(self) -> SimulationBatch:
        """``val_size`` simulations from the validation stream, drawn once."""
        if self._val is None:
            self._val = self.simulator.simulate(self.val_size, self._val_generator)
        return self._val

    def state(self) -> dict[str, torch.Tensor]:
        """The training generator's state (``rng.train``)."""
        return {"rng.train": self.generator.get_state()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the training generator."""
        self.generator.set_state(tensors["rng.train"].cpu())

    def close(self) -> None:
        """Nothing to release."""


def image_rows(file, path: str | Path):
    """The ``images`` dataset of an open pool file as an array to index by rows: a read-only
    :class:`numpy.memmap` of the file when the dataset is stored contiguously and uncompressed
    (the layout :func:`write_dataset` writes), else the h5py dataset itself.

    Parameters
    ----------
    file : h5py.File
        The pool, open for reading.
    path : str or Path
        Its path on disk.

    Returns
    -------
    numpy.memmap or h5py.Dataset
        Shape (N, C, H, W), float32 e⁻/s.
    """
    images = file["images"]
    offset = images.id.get_offset()
    if images.chunks is None and images.compression is None and offset is not None:
        return np.memmap(path, dtype=images.dtype, mode="r", offset=offset, shape=images.shape)
    return images


class DatasetBatches:
    """Shuffled epochs over a pool written by :func:`write_dataset`, or a sharded pool folder
    (:mod:`sbicluster.pool`) read as the concatenation of its shards.

    The last ``val_size`` rows are the validation set and are never trained on. Each epoch draws
    a permutation of the training rows from ``generator``; :meth:`next` returns consecutive slices
    of it. Built with the same path, seed and ``val_size``, two readers yield identical batches in
    identical order (used to train competing models on exactly the same data). Memory does not
    grow with the images of the pool: only the small per-sample columns (θ, label, visibility:
    24 bytes a sample) are held; images are read from disk batch by batch.

    In data-parallel training (:mod:`.distributed`) every process builds the reader with the same
    path, seed and ``val_size`` and its own ``rank``: all draw the same permutations, and each
    reads only its share of every global batch (``rank``, ``rank + world_size``, … of the batch's
    rows in pool order), so the shares partition the batch a single process would train on, and
    the stream state (identical in every process) is checkpointed once.

    Parameters
    ----------
    path : str
        HDF5 pool file (layout in this module's docstring) or sharded pool folder.
    generator : torch.Generator
        Source of the epoch permutations (CPU).
    val_size : int
        Number of validation rows at the end of the pool.
    rank, world_size : int
        This process's index among ``world_size`` data-parallel processes (default: one process).

    Raises
    ------
    InputError
        If the pool has no more than ``val_size`` rows, or is a folder with missing shards.
    """

    def __init__(
        self,
        path: str,
        generator: torch.Generator,
        val_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        import h5py

        self.rank, self.world_size = rank, world_size
        from ..pool import is_pool_dir, pool_shard_paths

        paths = pool_shard_paths(path) if is_pool_dir(path) else [Path(path)]
        self.files = [h5py.File(p, "r") for p in paths]
        self._images = [image_rows(f, p) for f, p in zip(self.files, paths, strict=True)]
        sizes = [f["images"].shape[0] for f in self.files]
        n = sum(sizes)
        if n <= val_size:
            self.close()
            raise InputError(f"dataset {path} has {n} samples; need more than val_size={val_size}")
        self._starts = np.cumsum([0, *sizes])
        self.n_train, self.val_size, self.generator = n - val_size, val_size, generator
        self.order, self.pos = None, 0
        # the small per-sample columns live in memory; images are gathered per batch (a memory
        # map of contiguous storage; else row by row: h5py's fancy indexing is far slower)
        self._columns = {
            k: np.concatenate([f[k][:] for f in self.files])
            for k in ("theta", "label", "visibility")
        }

    def _read(self, idx: np.ndarray) -> SimulationBatch:
        idx = np.sort(idx)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        rows = idx - self._starts[shard]
        parts = []
        for s in np.unique(shard):  # shards in order, rows sorted within each: pool order
            source, wanted = self._images[s], rows[shard == s]
            if isinstance(source, np.memmap):
                parts.append(np.asarray(source[wanted]))
            else:
                parts.append(np.stack([source[int(r)] for r in wanted]))
        return SimulationBatch(
            torch.as_tensor(self._columns["theta"][idx]).float(),
            torch.as_tensor(
                np.concatenate(parts) if parts else np.empty((0, *self._images[0].shape[1:]))
            ).float(),
            torch.as_tensor(self._columns["label"][idx]).long(),
            torch.as_tensor(self._columns["visibility"][idx]).float(),
            {},
        )

    def label_fraction(self) -> float:
        """Fraction of the pool's samples (training and validation) that hold a cluster."""
        return float(self._columns["label"].mean())

    def validation(self) -> SimulationBatch:
        """The validation rows (the pool's last ``val_size``)."""
        return self._read(np.arange(self.n_train, self.n_train + self.val_size))

    def next(self, n: int) -> SimulationBatch:
        """The next ``n`` training rows of the current epoch (a new permutation when it runs out),
        in pool order within the batch; in data-parallel training, this process's share of them."""
        if self.order is None or self.pos + n > self.n_train:
            self.order = torch.randperm(self.n_train, generator=self.generator).numpy()
            self.pos = 0
        idx = self.order[self.pos : self.pos + n]
        self.pos += n
        return self._read(np.sort(idx)[self.rank :: self.world_size])

    def state(self) -> dict[str, torch.Tensor]:
        """Generator state (``rng.train``), position (``disk.pos``) and permutation
        (``disk.order``, once drawn)."""
        out = {"rng.train": self.generator.get_state(), "disk.pos": torch.tensor([self.pos])}
        if self.order is not None:
            out["disk.order"] = torch.as_tensor(self.order)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue the epoch saved by :meth:`state`."""
        self.generator.set_state(tensors["rng.train"].cpu())
        self.pos = int(tensors["disk.pos"][0])
        self.order = tensors["disk.order"].numpy() if "disk.order" in tensors else None

    def close(self) -> None:
        """Close the files (and drop their memory maps)."""
        self._images = []
        for f in self.files:
            f.close()


def write_dataset(
    simulator: Simulator,
    n: int,
    path: str | Path,
    generator: torch.Generator,
    *,
    chunk: int = 1024,
    progress: bool = True,
) -> Path:
    """Pre-simulate ``n`` samples into an HDF5 pool usable as ``TrainingConfig.dataset``.

    The samples are those of :func:`simulators.base.iter_simulation_chunks` with this ``chunk``,
    in order; the file is written beside ``path`` and renamed onto it when complete.

    Parameters
    ----------
    simulator : Simulator
        The forward model.
    n : int
        Number of samples.
    path : str or Path
        Output file (layout in this module's docstring).
    generator : torch.Generator
        Randomness, on ``simulator.device``.
    chunk : int
        Samples simulated per call (bounds memory; changes the random stream).
    progress : bool
        Progress bar (only on a terminal).

    Returns
    -------
    Path
        ``path``.
    """
    import h5py

    path = Path(path)
    shapes = {
        "theta": ((n, simulator.prior.dim), "f4"),
        "images": ((n, *simulator.observation_shape), "f4"),
        "label": ((n,), "i8"),
        "visibility": ((n,), "f4"),
    }
    with atomic_path(path, suffix=".tmp") as tmp, h5py.File(tmp, "w") as f:
        # no ``chunks=``: contiguous storage, what the row-by-row reader wants
        ds = {k: f.create_dataset(k, shape, dtype) for k, (shape, dtype) in shapes.items()}
        f.attrs["simulator_card"] = json.dumps(simulator.card(), default=float)
        start = 0
        for batch in iter_simulation_chunks(
            simulator,
            n,
            generator,
            chunk=chunk,
            progress=progress and sys.stderr.isatty(),
            desc="simulate",
        ):
            rows = slice(start, start + len(batch))
            for k in POOL_COLUMNS:
                ds[k][rows] = getattr(batch, k).numpy()
            start += len(batch)
    return path


def estimate_softening(images: torch.Tensor) -> list[float]:
    """Per-band asinh softening (e⁻/s): the median over cutouts of the robust pixel noise.

    ``1.4826 · MAD`` of each cutout's pixels per band, median over cutouts; floored at 1e-6.
    Computed once from the (fixed) validation set and frozen into the model card.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) cutouts in e⁻/s.

    Returns
    -------
    list of float
        C softenings in e⁻/s.
    """
    x = images.detach().float().reshape(images.shape[0], images.shape[1], -1)
    med = x.median(dim=-1, keepdim=True).values
    mad = (x - med).abs().median(dim=-1).values * 1.4826
    return [max(float(v), 1e-6) for v in mad.median(dim=0).values.cpu()]
