"""The Python entry point: :func:`infer` turns FITS cutouts into posterior samples and tables.

This module mirrors ``sbicluster infer``: it checks the output folder and the size of the run,
reads and validates the input (:mod:`sbicluster.io`), runs the model
(:func:`sbicluster.inference.predict`) and, when asked, writes the outputs
(:mod:`sbicluster.outputs`) into a temporary folder that replaces ``out`` only once complete
(:func:`sbicluster.files.atomic_folder`). It owns no numerics of its own.

Size rule (checked before any inference): the draws take N × S × D × 4 bytes (float32; N cutouts,
S draws, D = 4 parameters), once in ``posterior.nc`` and once more in ``samples.npz``. A run is
refused when those files would not fit in the free space of the ``out`` filesystem, or when its
working memory (the draws of one sub-chunk of cutouts, :data:`WORKING_COPIES` times over, plus
all N × S × D draws when they are kept in memory) exceeds the memory available.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from .devices import resolve_device
from .errors import InputError
from .files import atomic_folder, check_output_folder
from .io import Cutouts, read_catalog_cutouts, read_cutouts
from .outputs import DrawWriter, summary_table, write_table

__all__ = [
    "infer",
    "InferenceResult",
    "check_run_size",
    "model_pixel_scale",
    "model_zero_points",
    "OUTPUT_FILES",
    "OUTPUT_NAMES",
    "stream_to_folder",
    "WORKING_COPIES",
]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("summary.ecsv", "posterior.nc")
"""Files written to the output folder by every run (``samples.npz`` is optional)."""

OUTPUT_NAMES = (*OUTPUT_FILES, "samples.npz", "corner")
"""Entries of an output folder that belong to a run: an overwrite replaces all of them (a run
without ``samples.npz`` removes the previous one; ``corner/`` comes from ``sbicluster corner``)."""

WORKING_COPIES = 8
"""Copies of one sub-chunk's draws alive at once while sampling and summarising (base noise,
flow output, host copy, sorting copies); a conservative count for the size rule."""

_BYTES_PER_DRAW_VALUE = 4  # float32


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_run_size(
    n: int,
    num_samples: int,
    dim: int,
    *,
    out: str | Path | None = None,
    save_samples: bool = False,
    keep_samples: bool = True,
) -> None:
    """Refuse a run whose draws would not fit on disk or in memory (see the module notes).

    Parameters
    ----------
    n, num_samples, dim : int
        Cutouts N, draws per cutout S and parameters D.
    out : str or Path, optional
        Output folder; its filesystem must hold N × S × D × 4 bytes (twice with ``save_samples``).
    save_samples : bool
        ``samples.npz`` is written too.
    keep_samples : bool
        All draws are kept in memory (the Python API's :attr:`InferenceResult.samples`).

    Raises
    ------
    InputError
        One line with the estimate, the limit and what to change.
    """
    from .inference import SAMPLE_ROWS

    draws = n * num_samples * dim * _BYTES_PER_DRAW_VALUE
    shape = f"{n} cutouts × {num_samples} draws × {dim} parameters × 4 B"
    if out is not None:
        written = draws * (2 if save_samples else 1)
        probe = Path(out)
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if written > free:
            raise InputError(
                f"--samples {num_samples} would write {_gb(written)} of draws ({shape}"
                f"{', twice with --save-samples' if save_samples else ''}) but {probe} has "
                f"{_gb(free)} free; use fewer --samples or split the input"
            )
    available = _available_memory()
    if available is None:
        return
    per_chunk = min(n, max(1, SAMPLE_ROWS // num_samples)) * num_samples * dim
    working = per_chunk * _BYTES_PER_DRAW_VALUE * WORKING_COPIES + (draws if keep_samples else 0)
    if working > available:
        held = f"{_gb(draws)} of draws held in memory ({shape}) and " if keep_samples else ""
        raise InputError(
            f"--samples {num_samples} needs {held}{_gb(working)} of working memory in all but "
            f"{_gb(available)} is available; use fewer --samples"
            + (" or split the input" if keep_samples else "")
        )


def model_pixel_scale(card: dict) -> float | None:
    """The model's pixel scale in arcsec/px, read from its card (None if the card has none)."""
    preset = card.get("simulator", {}).get("preset", {})
    for key in ("pixel_scale", "pixel_scale_arcsec"):
        if key in preset:
            return float(preset[key])
    return None


def model_zero_points(card: dict) -> dict[str, float]:
    """The model's Vega magnitude giving 1 e⁻/s per band (mag), from its card ({} if unknown)."""
    setups = card.get("simulator", {}).get("preset", {}).get("band_setups", [])
    return {b["name"]: float(b["zero_point"]) for b in setups if "name" in b and "zero_point" in b}


@dataclass
class InferenceResult:
    """Posterior results for a set of cutouts.

    Attributes
    ----------
    summary : astropy.table.Table
        One row per cutout (see :func:`sbicluster.outputs.summary_table`).
    samples : numpy.ndarray or None
        (N, S, 4) posterior draws in the prior's units; ``None`` when :func:`infer` streamed
        them to ``posterior_path`` without keeping them (``keep_samples=False``).
    cutouts : Cutouts
        The validated input cutouts (images in e⁻/s, ids, positions, flags).
    card : dict
        The model card.
    posterior_path : Path, optional
        The ``posterior.nc`` written by :func:`infer`, if any.
    """

    summary: Table
    samples: np.ndarray | None
    cutouts: Cutouts
    card: dict
    posterior_path: Path | None = None

    def _prior(self):
        from simulators.priors import ClusterPrior

        return ClusterPrior.from_dict(self.card["prior"])

    def _draw_chunks(self, size: int = 256):
        """(start, draws) for chunks of ``size`` cutouts, from memory or from ``posterior.nc``."""
        n = len(self.cutouts.ids)
        if self.samples is not None:
            for start in range(0, n, size):
                yield start, self.samples[start : start + size]
            return
        import h5netcdf

        names = self._prior().names
        with h5netcdf.File(str(self.posterior_path), "r") as fh:
            group = fh["posterior"]
            for start in range(0, n, size):
                yield start, np.stack([group[k][0, :, start : start + size].T for k in names], -1)

    def to_inference_data(self):
        """The draws as :class:`arviz.InferenceData` (dims cutout × draw, units as attributes)."""
        from .outputs import inference_data

        if self.samples is None:
            import arviz as az

            return az.from_netcdf(str(self.posterior_path))
        return inference_data(self.samples, self._prior(), ids=self.cutouts.ids, card=self.card)

    def write(
        self, out_dir: str | Path, *, overwrite: bool = False, save_samples: bool = False
    ) -> list[Path]:
        """Write ``summary.ecsv``, ``posterior.nc`` (and ``samples.npz``) as one unit into ``out_dir``.

        The files are written into a temporary sibling folder that replaces ``out_dir`` only
        when complete (:func:`sbicluster.files.atomic_folder`): files of an earlier run
        (``samples.npz``, ``corner/``) do not survive an overwrite, and an interruption leaves
        the earlier run intact.

        Raises
        ------
        InputError
            ``out_dir`` is a file, lies under a file or cannot be written.
        OutputExistsError
            ``out_dir`` holds files and ``overwrite`` is false; nothing is written then.
        """
        out_dir = Path(out_dir)
        n_samples = self.summary.meta.get("num_samples")
        if self.samples is not None:
            n_samples = self.samples.shape[1]
        with atomic_folder(out_dir, overwrite=overwrite, owned=OUTPUT_NAMES) as tmp:
            _write_outputs(
                tmp,
                self.summary,
                self._draw_chunks(),
                self._prior(),
                self.cutouts.ids,
                int(n_samples),
                self.card,
                save_samples,
            )
        names = list(OUTPUT_FILES) + (["samples.npz"] if save_samples else [])
        return [out_dir / name for name in names]


def _write_outputs(folder: Path, summary, chunks, prior, ids, num_samples, card, save_samples):
    """Stream ``chunks`` of draws into ``folder``'s files and write ``summary`` beside them."""
    with DrawWriter(
        prior,
        ids,
        num_samples,
        folder / "posterior.nc",
        samples_path=folder / "samples.npz" if save_samples else None,
        card=card,
    ) as writer:
        for start, draws in chunks:
            writer.write(start, draws)
    write_table(summary, folder / "summary.ecsv")


def stream_to_folder(
    out: str | Path,
    run,
    table,
    *,
    prior,
    ids,
    num_samples: int,
    card: dict,
    overwrite: bool,
    save_samples: bool,
    keep_samples: bool,
) -> tuple[Table, np.ndarray | None]:
    """Run an inference whose draws stream into the output folder ``out``, written as one unit.

    ``summary.ecsv``, ``posterior.nc`` (and ``samples.npz``) go into a temporary sibling folder
    that replaces ``out`` when complete (:func:`sbicluster.files.atomic_folder`), so an
    interrupted run leaves the previous outputs intact.

    Parameters
    ----------
    out : str or Path
        The output folder (already checked by :func:`sbicluster.files.check_output_folder`).
    run : callable
        ``run(sink)`` infers every object, handing each chunk's (n, S, D) draws to
        ``sink(start, draws)`` in order, and returns the prediction (P(cluster), visibility).
    table : callable
        ``table(prediction, stats)`` → the summary table, from the prediction and the per-object
        :func:`~sbicluster.outputs.posterior_stats` of the streamed draws.
    prior : ClusterPrior
        Parameter names, units and labels.
    ids : sequence of str
        Object identifiers, in order.
    num_samples : int
        Draws per object, S.
    card : dict
        Model card stored with the draws.
    overwrite : bool
        Replace the outputs of an earlier run (:data:`OUTPUT_NAMES`).
    save_samples : bool
        Also write ``samples.npz``.
    keep_samples : bool
        Also return all draws as an (N, S, D) array.

    Returns
    -------
    (astropy.table.Table, numpy.ndarray or None)
        The summary table and the draws (None unless ``keep_samples``).
    """
    kept = np.empty((len(ids), num_samples, prior.dim), np.float32) if keep_samples else None
    with atomic_folder(out, overwrite=overwrite, owned=OUTPUT_NAMES) as tmp:
        with DrawWriter(
            prior,
            ids,
            num_samples,
            tmp / "posterior.nc",
            samples_path=tmp / "samples.npz" if save_samples else None,
            card=card,
        ) as writer:

            def sink(start: int, draws: np.ndarray) -> None:
                writer.write(start, draws)
                if kept is not None:
                    kept[start : start + len(draws)] = draws

            prediction = run(sink)
        summary = table(prediction, writer.stats)
        write_table(summary, tmp / "summary.ecsv")
    return summary, kept


def infer(
    source: str | Path | Sequence[str | Path],
    *,
    model=None,
    catalog: str | Path | None = None,
    bands: Sequence[str] | None = None,
    num_samples: int = 1000,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    views: int = 8,
    out: str | Path | None = None,
    overwrite: bool = False,
    save_samples: bool = False,
    progress: bool = True,
    keep_samples: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_size: int | None = None,
) -> InferenceResult:
    """Posterior samples, P(cluster) and visibility for every cutout in ``source``.

    Parameters
    ----------
    source : str, Path or sequence of them
        A FITS file of cutouts or a folder of them (see :mod:`sbicluster.io`); with ``catalog``,
        one large image per band.
    model : ClusterModel, str or Path, optional
        A loaded model or a model directory; the shipped default model when omitted.
    catalog : str or Path, optional
        Table of positions (``x``/``y`` px or ``ra``/``dec`` deg) to cut from the images.
    bands : sequence of str, optional
        Band of each image HDU (or image file), overriding the FITS ``FILTER`` keywords.
    num_samples : int
        Posterior draws per cutout, ≥ 2.
    device : str
        ``auto`` (CUDA if available), ``cpu``, ``cuda``...
    seed : int
        Seed of the posterior sampling: each cutout's draws come from its own generator seeded
        from ``(seed, its position)`` (:func:`sbicluster.inference.cutout_noise`), so the same
        seed gives the same draws, in one process or split over workers.
    batch_size : int
        Cutouts per network pass (bounds memory).
    views : int
        Symmetric views (1, 2, 4 or 8 rotations and mirror images of each cutout) over which
        P(cluster) and the visibility are averaged; see :func:`sbicluster.inference.predict`.
    out : str or Path, optional
        Folder to write ``summary.ecsv`` and ``posterior.nc`` into, as one unit: the files go
        into a temporary sibling folder that replaces ``out`` when complete. ``out`` may not
        exist yet or be empty; it is checked before any work.
    overwrite : bool
        Replace the outputs of an earlier run in ``out`` (all of them: ``summary.ecsv``,
        ``posterior.nc``, ``samples.npz``, ``corner/``; other entries are kept).
    save_samples : bool
        Also write ``samples.npz``.
    progress : bool
        Show a progress bar.
    keep_samples : bool
        Keep all N × S × 4 draws in :attr:`InferenceResult.samples`. With ``out`` and
        ``keep_samples=False`` (the command line) the draws are streamed to disk a chunk at a
        time and memory does not grow with N × S; ``samples`` is then ``None`` and
        :meth:`InferenceResult.to_inference_data` reads ``posterior.nc``.
    workers : int, optional
        Split the cutouts into Dask tasks run by a new local cluster of this many single-threaded
        processes (:mod:`sbicluster.parallel_inference`); the results are those of one process
        with one torch thread.
    scheduler : str, optional
        Instead of ``workers``: the address of a running Dask scheduler (``tcp://host:8786``).
    chunk_size : int, optional
        Cutouts per task with ``workers`` or ``scheduler``: a multiple of ``batch_size``
        (default 16 × ``batch_size``).

    Returns
    -------
    InferenceResult

    Raises
    ------
    InputError, ModelError, OutputExistsError
        With a message naming the file and the problem; a bad ``out`` and a run too large
        for the disk or memory (see the module notes) are refused before any inference.

    Examples
    --------
    >>> import sbicluster
    >>> result = sbicluster.infer("cutouts.fits", num_samples=500)  # doctest: +SKIP
    >>> result.summary["id", "p_cluster", "log_age_median"]  # doctest: +SKIP
    """
    from simulators.priors import ClusterPrior

    from .artifact import load_model
    from .inference import check_batch_size, check_views, predict
    from .validation import blank_draws_out_of_range, blank_out_of_range, check_pixel_range

    if num_samples < 2:
        raise InputError(
            f"num_samples must be an integer >= 2 (the summary's percentiles and 94% HDI need two "
            f"draws per cutout), got {num_samples!r}; use e.g. --samples 1000"
        )
    check_batch_size(batch_size)
    check_views(views)
    split = workers is not None or scheduler is not None
    if split:
        from .dask_cluster import check_workers
        from .parallel_inference import CHUNK_BATCHES, check_chunk_size

        if workers is not None and scheduler is not None:
            raise InputError("give --workers or --scheduler, not both")
        check_workers(workers)
        check_chunk_size(
            CHUNK_BATCHES * batch_size if chunk_size is None else chunk_size, batch_size
        )
    elif chunk_size is not None:
        raise InputError("--chunk-size splits work over --workers or a --scheduler: give one")
    if out is None:
        keep_samples = True
    else:
        out = check_output_folder(out, overwrite=overwrite)  # fail before any work
    sizes = {"out": out, "save_samples": save_samples, "keep_samples": keep_samples}
    check_run_size(1, num_samples, 4, **sizes)  # absurd --samples, before loading anything
    dev = resolve_device(device)
    if model is None or isinstance(model, str | Path):
        model = load_model(model, device=str(dev))
    card = model.card
    model_bands = tuple(model.bands)
    image_size = int(model.image_shape[-1])
    scale = model_pixel_scale(card)
    zps = model_zero_points(card)
    if catalog is not None:
        images = [source] if isinstance(source, str | Path) else list(source)
        cutouts = read_catalog_cutouts(
            images,
            catalog,
            model_bands,
            image_size=image_size,
            pixel_scale=scale,
            bands=bands,
            zero_points=zps,
        )
    else:
        if not isinstance(source, str | Path):
            raise InputError(
                "several input paths need --catalog; give one FITS file or a folder of them"
            )
        cutouts = read_cutouts(
            source,
            model_bands,
            image_size=image_size,
            pixel_scale=scale,
            bands=bands,
            zero_points=zps,
        )
    prior = ClusterPrior.from_dict(card["prior"])
    check_run_size(len(cutouts), num_samples, prior.dim, **sizes)
    check_pixel_range(cutouts, card)  # flags out-of-range cutouts; refuses all-out-of-range input
    log.info("inferring %d cutouts with %d draws each on %s", len(cutouts), num_samples, dev)
    meta = {
        "model": card.get("name", "unnamed"),
        "num_samples": num_samples,
        "symmetry_views": views,
        "seed": seed,
        "input": [str(s) for s in ([source] if isinstance(source, str | Path) else source)],
        "catalog": None if catalog is None else str(catalog),
        "seeding": "cutout i: torch.Generator().manual_seed(cutout_seed(seed, i))",
        "bands": list(model_bands),
        "image_size": image_size,
    }

    def run(sink=None):
        options = {
            "num_samples": num_samples,
            "seed": seed,
            "batch_size": batch_size,
            "views": views,
            "progress": progress,
            "sink": None if sink is None else blank_draws_out_of_range(sink, cutouts.flags),
        }
        if split:
            from .inference import validate_images
            from .parallel_inference import predict_on_workers

            validate_images(model, cutouts.images)  # here, not first on a worker
            prediction = predict_on_workers(
                model,
                np.asarray(cutouts.images, dtype=np.float32),
                chunk_size=chunk_size,
                workers=workers,
                scheduler=scheduler,
                device=str(dev),
                **options,
            )
        else:
            prediction = predict(model, cutouts.images, **options)
        blank_out_of_range(prediction, cutouts.flags)
        return prediction

    def table(prediction, stats=None):
        return summary_table(
            prediction.samples,
            prior,
            ids=cutouts.ids,
            p_cluster=prediction.p_cluster,
            visibility=prediction.visibility,
            flags=cutouts.flags,
            x=cutouts.x,
            y=cutouts.y,
            ra=cutouts.ra,
            dec=cutouts.dec,
            meta=meta,
            stats=stats,
        )

    if out is None:
        pred = run()
        return InferenceResult(table(pred), pred.samples, cutouts, card)
    summary, kept = stream_to_folder(
        out,
        run,
        table,
        prior=prior,
        ids=cutouts.ids,
        num_samples=num_samples,
        card=card,
        overwrite=overwrite,
        save_samples=save_samples,
        keep_samples=keep_samples,
    )
    return InferenceResult(summary, kept, cutouts, card, Path(out) / "posterior.nc")
