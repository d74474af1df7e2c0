"""Sharded simulation pools, simulated as Dask tasks: :func:`simulate_pool`.

A pool folder holds ``pool.json`` (the index) and shards ``shard-00000.h5``, ``shard-00001.h5``,
…, each an HDF5 pool in the layout of :func:`sbicluster.training.write_dataset`, written
atomically (a shard exists under its name only once complete). Shard ``i`` is simulated from a
generator seeded with :func:`shard_seed` ``(seed, i)``, in a process of its own with one torch
thread, so the pool's bytes do not depend on how many workers simulated it, nor on which. A run
that is killed leaves its complete shards; the same command run again simulates only the missing
ones (:func:`pool_status`). Training reads the pool folder like a single pool file
(:class:`sbicluster.training.DatasetBatches`); its last rows validate.

Work is scheduled by Dask distributed: a ``LocalCluster`` of ``workers`` single-threaded
processes by default, or any running scheduler by address (e.g. one started by dask-jobqueue on
a SLURM cluster), whose workers must see the pool folder at the same path (a shared file system).

This module owns the pool's layout and index and the scheduling of shards; it must not simulate
(the simulator does) nor train.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import is_whole_number
from .dask_cluster import check_workers, dask_client
from .errors import InputError, OutputExistsError
from .files import atomic_path, check_writable_dir

__all__ = [
    "INDEX_NAME",
    "PoolStatus",
    "is_pool_dir",
    "pool_shard_paths",
    "pool_status",
    "read_index",
    "shard_name",
    "shard_seed",
    "simulate_pool",
    "simulate_shard",
]

INDEX_NAME = "pool.json"
"""The index file of a pool folder."""

POOL_FORMAT = 1
"""Version of the index layout."""

log = logging.getLogger(__name__)


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00042.h5``)."""
    return f"shard-{index:05d}.h5"


def shard_seed(seed: int, index: int) -> int:
    """Seed of shard ``index`` of a pool seeded with ``seed``: a 63-bit integer from NumPy's
    ``SeedSequence([seed, index])``, so shards draw independent streams."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def is_pool_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a pool index."""
    return (Path(path) / INDEX_NAME).is_file()


def read_index(folder: str | Path) -> dict:
    """The index (``pool.json``) of a pool folder.

    Raises
    ------
    InputError
        No index, or one that is not a pool index this version reads.
    """
    path = Path(folder) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{folder}: no {INDEX_NAME}; not a pool from `sbicluster simulate-pool`"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable pool index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != POOL_FORMAT:
        raise InputError(f"{path}: not a pool index of format {POOL_FORMAT}")
    return index


@dataclass(frozen=True)
class PoolStatus:
    """Which shards of a pool are complete.

    Attributes
    ----------
    folder : Path
        The pool folder.
    sizes : tuple of int
        Samples of each shard, in order.
    complete : tuple of bool
        Whether each shard's file is present with its full number of rows.
    """

    folder: Path
    sizes: tuple[int, ...]
    complete: tuple[bool, ...]

    @property
    def missing(self) -> list[int]:
        """Indices of the shards still to simulate."""
        return [i for i, done in enumerate(self.complete) if not done]

    @property
    def done(self) -> bool:
        """Every shard is complete."""
        return all(self.complete)


def _shard_rows(path: Path) -> int | None:
    """Rows of a shard file, or ``None`` when it is absent or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f["images"].shape[0])
    except (OSError, KeyError):
        return None


def pool_status(folder: str | Path) -> PoolStatus:
    """The completeness of each shard of the pool in ``folder`` (:func:`read_index`'s errors)."""
    folder = Path(folder)
    index = read_index(folder)
    sizes = tuple(int(s) for s in index["shard_sizes"])
    complete = tuple(_shard_rows(folder / shard_name(i)) == size for i, size in enumerate(sizes))
    return PoolStatus(folder, sizes, complete)


def pool_shard_paths(folder: str | Path) -> list[Path]:
    """The shard files of a complete pool, in order.

    Raises
    ------
    InputError
        Not a pool folder, or a pool with missing shards (say how to finish it).
    """
    status = pool_status(folder)
    if not status.done:
        raise InputError(
            f"pool {folder} is incomplete: {len(status.missing)} of {len(status.sizes)} shards "
            "missing; run the same `sbicluster simulate-pool` command again to finish it"
        )
    return [Path(folder) / shard_name(i) for i in range(len(status.sizes))]


def simulate_shard(card: dict, index: int, size: int, seed: int, path: str, chunk: int) -> str:
    """Simulate shard ``index`` of a pool into ``path`` (atomically); runs on a Dask worker.

    Parameters
    ----------
    card : dict
        The simulator's card (:func:`simulators.registry.simulator_from_card` rebuilds it).
    index : int
        Shard number.
    size : int
        Samples in the shard.
    seed : int
        The pool's seed (the shard's own is :func:`shard_seed` ``(seed, index)``).
    path : str
        The shard file.
    chunk : int
        Samples simulated per call (part of the random stream: the index records it).

    Returns
    -------
    str
        ``path``.
    """
    import torch

    from simulators.registry import simulator_from_card

    from .training.data import write_dataset

    torch.set_num_threads(1)  # the same arithmetic on every worker, and no oversubscription
    simulator = simulator_from_card(card, device="cpu")
    generator = torch.Generator().manual_seed(shard_seed(seed, index))
    write_dataset(simulator, size, path, generator, chunk=chunk, progress=False)
    return path


def _shard_sizes(n: int, shard_size: int) -> list[int]:
    full, rest = divmod(n, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _check_request(n: int, shard_size: int, workers: int | None, chunk: int) -> None:
    for name, value in (("--n", n), ("--shard-size", shard_size), ("--chunk", chunk)):
        if not is_whole_number(value, numpy_integers=True):
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    check_workers(workers)


def _prepare_folder(folder: Path, index: dict, overwrite: bool) -> None:
    """Make ``folder`` hold ``index``: a new pool, the same pool to resume, or (``overwrite``) a
    different pool's files removed first. Anything else is refused before any work."""
    folder = check_writable_dir(folder, what="--out")
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if is_pool_dir(folder):
        old = read_index(folder)
        if {k: v for k, v in old.items() if k != "status"} == {
            k: v for k, v in index.items() if k != "status"
        }:
            return  # the same pool: resume
        if not overwrite:
            raise OutputExistsError(
                f"--out {folder}: holds a different pool (n, shard size, seed, chunk or simulator "
                "differ); pass --overwrite to replace it, or choose a new folder"
            )
        for name in entries:
            if name == INDEX_NAME or (name.startswith("shard-") and name.endswith(".h5")):
                (folder / name).unlink()
    elif entries:
        raise OutputExistsError(
            f"--out {folder}: already holds {', '.join(entries[:3])}"
            f"{' ...' if len(entries) > 3 else ''} and no pool index; choose a new or empty folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _write_index(folder, index)


def _write_index(folder: Path, index: dict) -> None:
    with atomic_path(folder / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=1, default=float) + "\n")


def simulate_pool(
    simulator,
    n: int,
    shard_size: int,
    out: str | Path,
    *,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> PoolStatus:
    """Simulate ``n`` samples into a sharded pool folder, one Dask task per shard.

    Parameters
    ----------
    simulator : Simulator
        The forward model (its card is sent to the workers, which rebuild it on their CPU).
    n : int
        Samples in the pool.
    shard_size : int
        Samples per shard (the last shard holds the rest).
    out : str or Path
        The pool folder: new, empty, or holding this same pool (then only missing shards are
        simulated).
    seed : int
        The pool's seed; shard ``i`` uses :func:`shard_seed` ``(seed, i)``.
    workers : int, optional
        Processes of the local Dask cluster (default 1). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to use instead.
    chunk : int
        Samples per simulator call within a shard (bounds a worker's memory; part of the
        random stream, recorded in the index).
    overwrite : bool
        Replace a different pool in ``out``.
    progress : bool
        Progress bar over shards (only on a terminal).
    on_shard : callable, optional
        Called with each shard's index as it completes (in completion order).

    Returns
    -------
    PoolStatus
        The finished pool's status (every shard complete).

    Raises
    ------
    InputError
        Non-positive sizes, an unusable ``out`` or an unreachable scheduler.
    OutputExistsError
        ``out`` holds other files, or a different pool without ``overwrite``.
    """
    from tqdm.auto import tqdm

    _check_request(n, shard_size, workers, chunk)
    out = Path(out)
    sizes = _shard_sizes(int(n), int(shard_size))
    index = {
        "format": POOL_FORMAT,
        "n": int(n),
        "shard_size": int(shard_size),
        "shard_sizes": sizes,
        "seed": int(seed),
        "chunk": int(chunk),
        "seeding": "shard i: torch.Generator().manual_seed(shard_seed(seed, i)), one torch thread",
        "simulator_card": json.loads(json.dumps(simulator.card(), default=float)),
        "status": "incomplete",
    }
    _prepare_folder(out, index, overwrite)
    status = pool_status(out)
    todo = status.missing
    if todo:
        log.info("simulating %d of %d shards into %s", len(todo), len(sizes), out)
        client, cluster = dask_client(workers, scheduler)
        bar = tqdm(
            total=len(sizes),
            initial=len(sizes) - len(todo),
            desc="simulate-pool",
            unit="shard",
            disable=not (progress and sys.stderr.isatty()),
        )
        try:
            from distributed import as_completed

            futures = {
                client.submit(
                    simulate_shard,
                    index["simulator_card"],
                    i,
                    sizes[i],
                    int(seed),
                    str(out.resolve() / shard_name(i)),
                    int(chunk),
                    key=f"sbicluster-shard-{i}-{out.resolve()}",
                    pure=False,
                ): i
                for i in todo
            }
            for future in as_completed(futures):
                future.result()  # raises the worker's exception here
                bar.update(1)
                if on_shard is not None:
                    on_shard(futures[future])
        finally:
            bar.close()
            client.close()
            if cluster is not None:
                cluster.close()
        status = pool_status(out)
    if not status.done:  # a worker reported success but its file is not there (shared FS?)
        raise InputError(
            f"pool {out}: shards {status.missing[:5]} missing after the run; do the workers see "
            "this folder at the same path?"
        )
    _write_index(out, {**index, "status": "complete"})
    return status
