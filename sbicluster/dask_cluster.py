"""Where Dask work runs: :func:`dask_client` (a new local cluster or a running scheduler) and
:func:`check_workers`.

Simulation pools (:mod:`sbicluster.pool`) and inference split over workers
(:mod:`sbicluster.parallel_inference`) both schedule their tasks here. This module owns the
choice between a ``LocalCluster`` of single-threaded worker processes and a scheduler given by
address (e.g. one started by dask-jobqueue on SLURM); it must not know what the tasks do.
"""

from __future__ import annotations

import logging

from .checks import is_whole_number
from .errors import InputError

__all__ = ["check_workers", "dask_client"]


def check_workers(workers: int | None) -> None:
    """Refuse a ``--workers`` that is not a positive integer (``None``: the default, 1).

    Raises
    ------
    InputError
    """
    if workers is not None and not is_whole_number(workers, numpy_integers=True):
        raise InputError(f"--workers must be a positive integer, got {workers!r}")


def dask_client(workers: int | None, scheduler: str | None):
    """A Dask client: to ``scheduler`` when given, else to a new ``LocalCluster`` of ``workers``
    single-threaded processes (default 1).

    Parameters
    ----------
    workers : int, optional
        Processes of the local cluster; ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running scheduler, ``tcp://host:8786``.

    Returns
    -------
    (distributed.Client, distributed.LocalCluster or None)
        Close both when done (the cluster is None for a scheduler given by address).

    Raises
    ------
    InputError
        If the scheduler cannot be reached within 30 s.
    """
    from distributed import Client, LocalCluster

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        # Dask's own logging set-up reports every connection at INFO: quiet unless verbose
        logging.getLogger("distributed").setLevel(logging.WARNING)
    check_workers(workers)
    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    cluster = LocalCluster(
        n_workers=workers or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster
