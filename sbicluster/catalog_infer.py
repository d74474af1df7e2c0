"""Catalogue in, posteriors out: photometric catalogues through a catalogue model.

This module owns :func:`infer_catalog`: read a cluster catalogue (:mod:`sbicluster.catalog_io`),
turn its apparent magnitudes into the catalogue model's rows (absolute magnitudes ``m − μ`` for
the given distance modulus μ, log errors, measured / not-detected flags; the layout of
:mod:`simulators.catalogue`), sample the posterior of every row and write the same outputs as for
cutouts (``summary.ecsv``, ``posterior.nc``, optionally ``samples.npz``; ``sbicluster corner``
draws the corner plots) with the writers of :mod:`sbicluster.outputs`. It must not know how the
model was trained.

Rows are never dropped: a row with no measured band gets NaN draws and the flags
``no_bands`` and ``out_of_range``; a band with a NaN, non-positive or absurd magnitude or error is
treated as missing and the row flagged ``bad_value``; fewer than three measured bands is flagged
``few_bands``. P(cluster) is not estimated from photometry (NaN in the summary); ``visibility``
is the measured S/N of the reference band (1.0857 / σ, 0 if it is not measured).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simulators.catalogue import CATALOGUE_KIND

from .catalog_io import (
    ROW_FLAG_DESCRIPTIONS,
    ROW_FLAG_NO_BANDS,
    PhotometryCatalog,
    read_photometry_catalog,
)
from .devices import resolve_device
from .errors import InputError
from .files import check_output_folder
from .io import FLAG_OUT_OF_RANGE

__all__ = ["CatalogResult", "is_catalogue_card", "catalogue_rows", "infer_catalog"]

log = logging.getLogger(__name__)

DISTANCE_MODULUS_RANGE = (15.0, 40.0)
"""Distance moduli accepted (mag): from the Magellanic Clouds' neighbourhood to beyond 1 Gpc."""


@dataclass
class CatalogResult:
    """What :func:`infer_catalog` returns.

    Attributes
    ----------
    summary : astropy.table.Table
        One row per catalogue row, in the catalogue's order.
    samples : numpy.ndarray or None
        (N, S, D) draws, or ``None`` when streamed to ``posterior.nc`` only.
    catalog : PhotometryCatalog
        The catalogue as read.
    rows : numpy.ndarray
        (N, C, 4) model inputs.
    card : dict
        The model card.
    """

    summary: object
    samples: np.ndarray | None
    catalog: PhotometryCatalog
    rows: np.ndarray
    card: dict


def is_catalogue_card(card: dict) -> bool:
    """Whether a model card belongs to a catalogue model (its simulator is a catalogue simulator)."""
    sim = card.get("simulator") if isinstance(card, dict) else None
    return isinstance(sim, dict) and sim.get("simulator") == CATALOGUE_KIND


def check_distance_modulus(value) -> float:
    """A finite distance modulus within :data:`DISTANCE_MODULUS_RANGE`, mag.

    Raises
    ------
    InputError
        Missing, not finite or outside the range.
    """
    if value is None:
        raise InputError(
            "a catalogue model needs the distance modulus: pass --distance-modulus (m - M, mag; "
            "e.g. 29.98 for NGC 628)"
        )
    try:
        mu = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--distance-modulus {value!r} is not a number") from None
    lo, hi = DISTANCE_MODULUS_RANGE
    if not (math.isfinite(mu) and lo <= mu <= hi):
        raise InputError(
            f"--distance-modulus {value}: expected a distance modulus in {lo}-{hi} mag"
        )
    return mu


def catalogue_rows(
    catalog: PhotometryCatalog, simulator_card: dict, distance_modulus: float
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (N, C, 4) for a catalogue, and the extra row flags.

    Parameters
    ----------
    catalog : PhotometryCatalog
        Apparent magnitudes per file band.
    simulator_card : dict
        The model's simulator card (band columns, proxies, nominal detection limits).
    distance_modulus : float
        μ, mag.

    Returns
    -------
    rows : numpy.ndarray
        float32 (N, C, 4).
    flags : numpy.ndarray
        int32 (N,): the catalogue's row flags, plus ``out_of_range`` where no band is measured.

    Raises
    ------
    InputError
        A file band that is not among the model's band columns.
    """
    preset = simulator_card["preset"]
    columns = list(preset["bands"])
    proxies = preset.get("file_band_proxies", {})
    limits = preset["nominal_limit"]
    n, c = len(catalog), len(columns)
    rows = np.zeros((n, c, 4), np.float32)
    used = {}
    for j, band in enumerate(catalog.bands):
        col = proxies.get(band, band)
        if col not in columns:
            raise InputError(
                f"{catalog.source}: band {band} is not one of the model's bands "
                f"({', '.join(columns)})"
            )
        if col in used:
            raise InputError(
                f"{catalog.source}: bands {used[col]} and {band} both map to the model column {col}"
            )
        used[col] = band
        k = columns.index(col)
        measured = catalog.state[:, j] == 1
        nondet = catalog.state[:, j] == 2
        rows[:, k, 0] = np.where(
            measured,
            catalog.mag[:, j] - distance_modulus,
            np.where(nondet, limits[col] - distance_modulus, 0.0),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            rows[:, k, 1] = np.where(measured, np.log10(catalog.err[:, j]), 0.0)
        rows[:, k, 2] = measured
        rows[:, k, 3] = nondet
    flags = catalog.flags.copy()
    flags[(flags & ROW_FLAG_NO_BANDS) != 0] |= FLAG_OUT_OF_RANGE
    return rows, flags


def _measured_snr(catalog: PhotometryCatalog, simulator_card: dict) -> np.ndarray:
    preset = simulator_card["preset"]
    proxies = preset.get("file_band_proxies", {})
    ref = preset["reference_band"]
    for j, band in enumerate(catalog.bands):
        if proxies.get(band, band) == ref:
            with np.errstate(invalid="ignore", divide="ignore"):
                snr = 2.5 / math.log(10.0) / catalog.err[:, j]
            return np.where(catalog.state[:, j] == 1, snr, 0.0)
    return np.zeros(len(catalog))


def infer_catalog(
    path: str | Path,
    *,
    model=None,
    distance_modulus: float | None = None,
    bands: tuple[str, ...] | None = None,
    columns: str | None = None,
    num_samples: int = 1000,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    out: str | Path | None = None,
    overwrite: bool = False,
    save_samples: bool = False,
    progress: bool = True,
    keep_samples: bool = True,
) -> CatalogResult:
    """Posterior samples for every row of a photometric catalogue.

    Parameters
    ----------
    path : str or Path
        LEGUS ``.tab`` file, other whitespace table (with ``columns``), ECSV or FITS table.
    model : ClusterModel, str or Path
        A catalogue model, its folder or a built-in name (``legus-uvis``).
    distance_modulus : float
        μ = m − M of the galaxy, mag (required).
    bands : tuple of str, optional
        Bands of a LEGUS table's five magnitude columns (default: from the file name).
    columns : str, optional
        Column map (see :mod:`sbicluster.catalog_io`).
    num_samples : int
        Posterior draws per row, ≥ 2.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    seed : int
        Seed of the sampling.
    batch_size : int
        Rows per network pass.
    out : str or Path, optional
        Output folder (written as one unit; refused if it holds files and not ``overwrite``).
    overwrite : bool
        Replace the outputs of an earlier run in ``out``.
    save_samples : bool
        Also write ``samples.npz``.
    progress : bool
        Show a progress bar.
    keep_samples : bool
        Keep all draws in memory (always when ``out`` is ``None``).

    Returns
    -------
    CatalogResult

    Raises
    ------
    InputError, ModelError, OutputExistsError
        Bad catalogue, missing distance modulus, not a catalogue model, or an existing output.
    """
    from simulators.priors import ClusterPrior

    from .api import check_run_size, stream_to_folder
    from .artifact import load_model
    from .inference import check_batch_size, predict
    from .io import FLAG_DESCRIPTIONS
    from .outputs import summary_table
    from .validation import blank_draws_out_of_range, blank_out_of_range

    if num_samples < 2:
        raise InputError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    check_batch_size(batch_size)
    mu = check_distance_modulus(distance_modulus)
    if out is None:
        keep_samples = True
    else:
        out = check_output_folder(out, overwrite=overwrite)
    dev = resolve_device(device)
    if model is None or isinstance(model, str | Path):
        model = load_model(model, device=str(dev))
    card = model.card
    if not is_catalogue_card(card):
        raise InputError(
            f"model {card.get('name', '(unnamed)')} is an image model; a catalogue needs a "
            "catalogue model (e.g. --model legus-uvis)"
        )
    sim_card = card["simulator"]
    supported = tuple(model.bands) + tuple(sim_card["preset"].get("file_band_proxies", {}))
    catalog = read_photometry_catalog(path, supported=supported, bands=bands, columns=columns)
    rows, flags = catalogue_rows(catalog, sim_card, mu)
    prior = ClusterPrior.from_dict(card["prior"])
    sizes = {"out": out, "save_samples": save_samples, "keep_samples": keep_samples}
    check_run_size(len(catalog), num_samples, prior.dim, **sizes)
    snr = _measured_snr(catalog, sim_card)
    meta = {
        "model": card.get("name", "unnamed"),
        "num_samples": num_samples,
        "seed": seed,
        "input": str(path),
        "catalog_layout": catalog.layout,
        "catalog_bands": list(catalog.bands),
        "distance_modulus": mu,
        "bands": list(model.bands),
        "p_cluster": "not estimated from photometry (NaN)",
        "visibility": "measured S/N of the reference band, 1.0857 / sigma (0 if not measured)",
        "catalogue_flag_bits": {str(k): v for k, v in ROW_FLAG_DESCRIPTIONS.items()},
    }
    log.info("inferring %d catalogue rows with %d draws each on %s", len(catalog), num_samples, dev)

    def run(sink=None):
        generator = torch.Generator(device=dev).manual_seed(seed)
        pred = predict(
            model,
            rows,
            num_samples=num_samples,
            generator=generator,
            batch_size=batch_size,
            views=1,
            progress=progress,
            sink=None if sink is None else blank_draws_out_of_range(sink, flags),
        )
        blank_out_of_range(pred, flags)
        return pred

    def table(prediction, stats=None):
        t = summary_table(
            prediction.samples,
            prior,
            ids=catalog.ids,
            p_cluster=np.full(len(catalog), np.nan),
            visibility=snr,
            flags=flags,
            x=catalog.x,
            y=catalog.y,
            ra=catalog.ra,
            dec=catalog.dec,
            meta=meta,
            stats=stats,
        )
        t["flag"].description = "bit mask: " + "; ".join(
            f"{k} = {v}" for k, v in {**FLAG_DESCRIPTIONS, **ROW_FLAG_DESCRIPTIONS}.items()
        )
        t["n_bands"] = (catalog.state == 1).sum(1).astype(np.int16)
        t["n_bands"].description = "bands measured"
        if "class_mode" in catalog.extra:
            t["class_mode"] = catalog.extra["class_mode"].astype(np.int16)
            t["class_mode"].description = "catalogue visual class (mode)"
        return t

    if out is None:
        pred = run()
        return CatalogResult(table(pred), pred.samples, catalog, rows, card)
    summary, kept = stream_to_folder(
        out,
        run,
        table,
        prior=prior,
        ids=catalog.ids,
        num_samples=num_samples,
        card=card,
        overwrite=overwrite,
        save_samples=save_samples,
        keep_samples=keep_samples,
    )
    return CatalogResult(summary, kept, catalog, rows, card)
