"""Inference split over Dask workers: :func:`predict_on_workers`.

The cutouts are cut into chunks of ``chunk_size`` (a multiple of the network's ``batch_size``),
each a Dask task that runs :func:`sbicluster.inference.predict` with the run's seed on a worker
process with one torch thread. Every cutout's draws come from its own generator
(:func:`sbicluster.inference.cutout_noise`) and every chunk starts on a batch boundary, so each
task performs exactly the passes the single-process run performs on those cutouts: the results
are those of ``predict(..., seed=seed)`` in one process with one torch thread, whatever the
number of workers. Results come back in order and are handed to the ``sink`` chunk by chunk
(:class:`sbicluster.outputs.DrawWriter` writes them into the output folder, which replaces
``out`` only when complete), with at most two chunks per worker in flight, so the main process's
memory does not grow with N × S.

Workers come from a ``LocalCluster`` of ``workers`` processes, or from any running scheduler by
address (e.g. one started by dask-jobqueue on SLURM). The model travels to each worker once.

This module owns the chunking and scheduling of inference; it must not read or write files nor
define how a chunk is inferred (:mod:`sbicluster.inference` does).
"""

from __future__ import annotations

import copy
import sys
from collections import deque
from collections.abc import Callable

import numpy as np

from .checks import is_whole_number
from .errors import InputError
from .inference import Prediction, check_batch_size
from .model import ClusterModel

__all__ = ["CHUNK_BATCHES", "check_chunk_size", "predict_chunk", "predict_on_workers"]

CHUNK_BATCHES = 16
"""Default cutouts per task, in network batches (16 × 256 = 4,096 cutouts)."""

IN_FLIGHT_PER_WORKER = 2
"""Chunks submitted ahead per worker: one running, one waiting to start."""


def check_chunk_size(chunk_size: int, batch_size: int) -> None:
    """Refuse a chunk that is not a positive multiple of ``batch_size``.

    Raises
    ------
    InputError
        With the nearest valid sizes.
    """
    check_batch_size(batch_size)
    if not is_whole_number(chunk_size):
        raise InputError(f"--chunk-size must be a positive integer, got {chunk_size!r}")
    if chunk_size % batch_size:
        lower = max(batch_size, chunk_size - chunk_size % batch_size)
        raise InputError(
            f"--chunk-size {chunk_size} must be a multiple of --batch-size {batch_size} (e.g. "
            f"{lower} or {lower + batch_size}), so that each worker's passes are those of one "
            "process"
        )


def predict_chunk(
    model: ClusterModel,
    images: np.ndarray,
    first_index: int,
    *,
    num_samples: int,
    seed: int,
    batch_size: int,
    views: int,
    device: str,
) -> Prediction:
    """One task: :func:`~sbicluster.inference.predict` on cutouts ``first_index`` … of the run,
    with one torch thread, on ``device`` (resolved on the worker)."""
    import torch

    from .devices import resolve_device
    from .inference import predict

    torch.set_num_threads(1)  # the same arithmetic on every worker, and no oversubscription
    model = model.to(resolve_device(device))
    return predict(
        model,
        images,
        num_samples=num_samples,
        seed=seed,
        first_index=first_index,
        batch_size=batch_size,
        views=views,
        progress=False,
    )


def predict_on_workers(
    model: ClusterModel,
    images: np.ndarray,
    *,
    num_samples: int,
    seed: int,
    batch_size: int = 256,
    views: int = 8,
    chunk_size: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    sink: Callable[[int, np.ndarray], None] | None = None,
) -> Prediction:
    """:func:`sbicluster.inference.predict` with ``seed``, split into Dask tasks.

    Parameters
    ----------
    model : ClusterModel
        The trained model (sent to each worker once).
    images : numpy.ndarray
        (N, C, H, W) cutouts in e⁻/s per pixel, band order ``model.bands``.
    num_samples, seed, batch_size, views
        As for :func:`~sbicluster.inference.predict`.
    chunk_size : int, optional
        Cutouts per task, a multiple of ``batch_size`` (default ``CHUNK_BATCHES × batch_size``).
    workers : int, optional
        Processes of a new local Dask cluster (default 1). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    device : str
        Device each worker infers on (``cpu``, ``cuda``, ``auto``: resolved on the worker).
    progress : bool
        Progress bar over cutouts (only on a terminal).
    sink : callable, optional
        ``sink(start, draws)`` for each chunk's (n, S, D) draws, in order; the returned
        ``samples`` is then ``None``.

    Returns
    -------
    Prediction

    Raises
    ------
    InputError
        A bad ``chunk_size`` or ``workers``, or an unreachable scheduler.
    """
    from tqdm.auto import tqdm

    from .dask_cluster import check_workers, dask_client

    chunk_size = CHUNK_BATCHES * batch_size if chunk_size is None else chunk_size
    check_chunk_size(chunk_size, batch_size)
    check_workers(workers)
    n = images.shape[0]
    samples = None if sink else np.empty((n, num_samples, model.prior.dim), dtype=np.float32)
    p_cluster = np.empty(n, dtype=np.float32)
    visibility = np.empty(n, dtype=np.float32)
    starts = list(range(0, n, chunk_size))
    options = {
        "num_samples": num_samples,
        "seed": seed,
        "batch_size": batch_size,
        "views": views,
        "device": device,
    }
    client, cluster = dask_client(workers, scheduler)
    bar = tqdm(
        total=n, desc="inference", unit="cutout", disable=not (progress and sys.stderr.isatty())
    )
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        # the model travels on the CPU (the workers move it to their device)
        portable = model if model.device.type == "cpu" else copy.deepcopy(model).cpu()
        [shared_model] = client.scatter([portable], broadcast=True)
        pending: deque = deque()
        queue = deque(starts)

        def submit_next() -> None:
            start = queue.popleft()
            [chunk] = client.scatter([np.ascontiguousarray(images[start : start + chunk_size])])
            future = client.submit(predict_chunk, shared_model, chunk, start, **options, pure=False)
            pending.append((start, future))

        while queue and len(pending) < IN_FLIGHT_PER_WORKER * n_workers:
            submit_next()
        while pending:
            start, future = pending.popleft()
            result = future.result()  # raises the worker's exception here
            future.release()
            if queue:
                submit_next()
            stop = start + len(result.p_cluster)
            p_cluster[start:stop], visibility[start:stop] = result.p_cluster, result.visibility
            if sink is None:
                samples[start:stop] = result.samples
            else:
                sink(start, result.samples)
            bar.update(stop - start)
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    return Prediction(samples, p_cluster, visibility)
