"""Writing results: summary tables, posterior InferenceData, sample files and mock cutouts.

This module owns the on-disk formats sbicluster produces. Every file is written through
:func:`sbicluster.files.atomic_path` (or into the temporary folder of
:func:`sbicluster.files.atomic_folder`), so an interrupted run never leaves a half-written file in
place of a good one. :class:`DrawWriter` streams posterior draws, a chunk of cutouts at a time,
into ``posterior.nc`` and ``samples.npz`` and keeps only their per-cutout summaries, so writing
N cutouts never holds all N × S draws in memory; the files are the same as those written from an
in-memory array by :func:`write_inference_data` and :func:`write_samples`. Parameter names, units, labels and positions come from the prior
(:class:`simulators.priors.ClusterPrior`); none are repeated here. It must not read user images
or run a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from simulators.priors import ClusterPrior

from .errors import InputError, OutputExistsError
from .files import atomic_path
from .io import FLAG_DESCRIPTIONS, FLAG_PRIOR_EDGE

__all__ = [
    "DrawWriter",
    "posterior_stats",
    "summary_table",
    "write_table",
    "inference_data",
    "write_inference_data",
    "write_samples",
    "write_cutouts_fits",
    "check_outputs",
    "HDI_PROB",
    "PRIOR_EDGE_FRACTION",
]

PRIOR_EDGE_FRACTION = 0.02
"""Posterior medians closer than this fraction of the prior range to a bound are flagged."""

HDI_PROB = 0.94
"""Probability mass of the highest-density interval reported in summaries."""


def check_outputs(paths: Sequence[str | Path], overwrite: bool) -> None:
    """Refuse to continue when any of ``paths`` exists and ``overwrite`` is false.

    Raises
    ------
    OutputExistsError
        Naming the first existing file and the ``--overwrite`` option.
    """
    if overwrite:
        return
    for p in paths:
        if Path(p).exists():
            raise OutputExistsError(
                f"{p}: already exists; pass --overwrite (overwrite=True) to replace it"
            )


def _check_samples(samples: np.ndarray, prior: ClusterPrior) -> None:
    """Raise :class:`InputError` unless ``samples`` is (N, S, D) with D = ``prior.dim``."""
    if samples.ndim != 3 or samples.shape[-1] != prior.dim:
        raise InputError(
            f"samples must have shape (N, S, {prior.dim}) (one column per parameter "
            f"{prior.names}), got {samples.shape}"
        )


def _hdi(samples: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Narrowest interval holding ``prob`` of the draws, per row of ``samples`` (N, S)."""
    sorted_ = np.sort(samples, axis=1)
    s = sorted_.shape[1]
    k = max(1, int(np.floor(prob * s)))
    widths = sorted_[:, k:] - sorted_[:, : s - k]
    start = np.argmin(widths, axis=1)
    rows = np.arange(sorted_.shape[0])
    return sorted_[rows, start], sorted_[rows, start + k]


_STATS_VALUES = 1 << 22
"""Draws summarised per call inside :func:`summary_table` (bounds its sorting copies to ~64 MB)."""


def posterior_stats(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-cutout percentiles and HDI of (n, S, D) draws; rows are independent.

    Returns
    -------
    dict
        ``pct`` (3, n, D): 16th, 50th, 84th percentiles; ``hdi_lo``, ``hdi_hi`` (n, D): the
        :data:`HDI_PROB` highest-density interval. Same units as ``samples``.
    """
    pct = np.percentile(samples, [16, 50, 84], axis=1)
    lo, hi = zip(*(_hdi(samples[:, :, j], HDI_PROB) for j in range(samples.shape[2])), strict=True)
    return {"pct": pct, "hdi_lo": np.stack(lo, axis=1), "hdi_hi": np.stack(hi, axis=1)}


def _concat_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {
        "pct": np.concatenate([p["pct"] for p in parts], axis=1),
        "hdi_lo": np.concatenate([p["hdi_lo"] for p in parts], axis=0),
        "hdi_hi": np.concatenate([p["hdi_hi"] for p in parts], axis=0),
    }


def summary_table(
    samples: np.ndarray | None,
    prior: ClusterPrior,
    *,
    ids: Sequence[str],
    p_cluster: np.ndarray,
    visibility: np.ndarray,
    flags: np.ndarray,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    ra: np.ndarray | None = None,
    dec: np.ndarray | None = None,
    meta: dict | None = None,
    stats: dict[str, np.ndarray] | None = None,
) -> Table:
    """One row per cutout: identity, P(cluster), visibility and posterior summaries.

    Parameters
    ----------
    samples : numpy.ndarray or None
        (N, S, D) posterior draws in prior units, D = ``prior.dim``; ``None`` when ``stats``
        are given.
    prior : ClusterPrior
        Gives parameter names, units (:attr:`ClusterPrior.astropy_units`) and bounds.
    ids : sequence of str
        Cutout identifiers.
    p_cluster, visibility : numpy.ndarray
        (N,) probability of being a cluster and predicted visibility (S/N).
    flags : numpy.ndarray
        (N,) int bit mask (see :data:`sbicluster.io.FLAG_NAMES`).
    x, y, ra, dec : numpy.ndarray, optional
        (N,) positions: pixels (0-based) and degrees.
    meta : dict, optional
        Extra table metadata (e.g. model name).
    stats : dict, optional
        :func:`posterior_stats` of the draws, already computed (e.g. by :class:`DrawWriter`
        while streaming them to disk).

    Returns
    -------
    astropy.table.Table
        Columns ``id, x, y, ra, dec, p_cluster, visibility, flag``, then per parameter
        ``<name>_median, _p16, _p84, _hdi3, _hdi97`` with astropy units, then physical medians
        ``age`` (Myr), ``mass`` (M☉) and ``r_h`` (pc).

    Raises
    ------
    InputError
        ``samples`` is not (N, S, ``prior.dim``).
    """
    if stats is None:
        _check_samples(samples, prior)
        step = max(1, _STATS_VALUES // max(1, samples.shape[1] * samples.shape[2]))
        stats = _concat_stats(
            [posterior_stats(samples[i : i + step]) for i in range(0, len(samples), step)]
        )
    pct = stats["pct"]  # (3, N, D)
    n = pct.shape[1]
    nan = np.full(n, np.nan)
    table = Table()
    table["id"] = np.asarray(ids, dtype=str)
    for name, values, unit in (
        ("x", x, u.pix),
        ("y", y, u.pix),
        ("ra", ra, u.deg),
        ("dec", dec, u.deg),
    ):
        table[name] = (nan if values is None else np.asarray(values, float)) * unit
    table["p_cluster"] = np.asarray(p_cluster, dtype=float)
    table["visibility"] = np.asarray(visibility, dtype=float)
    low, high = prior.low().numpy(), prior.high().numpy()
    margin = PRIOR_EDGE_FRACTION * (high - low)
    at_edge = ((pct[1] < low + margin) | (pct[1] > high - margin)).any(axis=1)
    table["flag"] = np.asarray(flags, dtype=np.int32) | np.where(
        at_edge, FLAG_PRIOR_EDGE, 0
    ).astype(np.int32)
    table["flag"].description = "bit mask: " + "; ".join(
        f"{k} = {v}" for k, v in FLAG_DESCRIPTIONS.items()
    )
    for j, (name, unit) in enumerate(zip(prior.names, prior.astropy_units, strict=True)):
        lo, hi = stats["hdi_lo"][:, j], stats["hdi_hi"][:, j]
        table[f"{name}_median"] = pct[1, :, j] * unit
        table[f"{name}_p16"] = pct[0, :, j] * unit
        table[f"{name}_p84"] = pct[2, :, j] * unit
        table[f"{name}_hdi3"] = lo * unit
        table[f"{name}_hdi97"] = hi * unit
    # physical medians; the log parameters are in dex of yr, M☉ and pc (see the prior's units)
    age, mass, rh = (prior.index(name) for name in ("log_age", "log_mass", "log_rh"))
    table["age"] = 10 ** (pct[1, :, age] - 6.0) * u.Myr
    table["mass"] = 10 ** pct[1, :, mass] * u.solMass
    table["r_h"] = 10 ** pct[1, :, rh] * u.pc
    table.meta.update(
        {
            "description": "sbicluster posterior summary, one row per cutout",
            "hdi_prob": HDI_PROB,
            "flag_bits": {str(k): v for k, v in FLAG_DESCRIPTIONS.items()},
            "parameters": {
                p.name: {"unit": p.unit, "description": p.description} for p in prior.parameters
            },
            **(meta or {}),
        }
    )
    return table


def write_table(table: Table, path: str | Path) -> Path:
    """Write ``table`` atomically; the format follows the suffix (.ecsv, .fits, .csv)."""
    path = Path(path)
    fmt = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits"}.get(
        path.suffix.lower(), "ascii.ecsv"
    )
    with atomic_path(path) as tmp:
        table.write(tmp, format=fmt, overwrite=True)
    return path


def inference_data(
    samples: np.ndarray, prior: ClusterPrior, *, ids: Sequence[str], card: dict | None = None
):
    """Posterior draws as :class:`arviz.InferenceData` with dims ``cutout × draw``.

    Parameters
    ----------
    samples : numpy.ndarray
        (N, S, D) draws, D = ``prior.dim``.
    prior : ClusterPrior
        Parameter names, units and labels become variable attributes.
    ids : sequence of str
        Cutout identifiers (the ``cutout`` coordinate).
    card : dict, optional
        Model card, stored as JSON in the group's attributes.

    Returns
    -------
    arviz.InferenceData
        One ``posterior`` group, a variable per parameter with shape (chain=1, draw, cutout).
    """
    import arviz as az

    _check_samples(samples, prior)
    data = {name: samples[None, :, :, j].transpose(0, 2, 1) for j, name in enumerate(prior.names)}
    idata = az.from_dict(
        posterior=data,
        coords={"cutout": np.asarray(ids, dtype=str)},
        dims={name: ["cutout"] for name in prior.names},
    )
    idata.posterior.attrs.update(_posterior_attrs(prior, card))
    for p in prior.parameters:
        idata.posterior[p.name].attrs.update(
            {"unit": p.unit, "label": p.label, "description": p.description}
        )
    return idata


def write_inference_data(idata, path: str | Path) -> Path:
    """Write InferenceData to NetCDF atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return path


def _posterior_attrs(prior: ClusterPrior, card: dict | None) -> dict:
    return {
        "model_card": json.dumps(card or {}),
        "prior": json.dumps(prior.to_dict()),
        "created_by": "sbicluster",
    }


class DrawWriter:
    """Stream posterior draws, a chunk of cutouts at a time, into ``posterior.nc`` (and ``samples.npz``).

    Only the per-cutout summaries (:func:`posterior_stats`) stay in memory, so the memory of
    writing N cutouts does not grow with N × S. ``posterior.nc`` gets the layout
    :func:`inference_data` + :func:`write_inference_data` give (read back by
    :func:`arviz.from_netcdf` with the same group, dims, coordinates, attributes and values);
    ``samples.npz`` holds the arrays of :func:`write_samples`. The files are written in place:
    give paths inside a temporary folder (:func:`sbicluster.files.atomic_folder`).

    Parameters
    ----------
    prior : ClusterPrior
        Parameter names, units and labels.
    ids : sequence of str
        Cutout identifiers, N of them.
    num_samples : int
        Draws per cutout, S.
    posterior_path : str or Path
        Where to write the NetCDF file.
    samples_path : str or Path, optional
        Where to write the ``.npz`` file (none when omitted).
    card : dict, optional
        Model card, stored as JSON in the posterior group's attributes.

    Examples
    --------
    >>> with DrawWriter(prior, ids, 1000, "out/posterior.nc") as writer:  # doctest: +SKIP
    ...     writer.write(0, draws)  # (n, S, D) float32 for cutouts 0 .. n - 1
    >>> writer.stats  # doctest: +SKIP
    """

    def __init__(
        self,
        prior: ClusterPrior,
        ids: Sequence[str],
        num_samples: int,
        posterior_path: str | Path,
        *,
        samples_path: str | Path | None = None,
        card: dict | None = None,
    ):
        import arviz as az
        import h5netcdf
        import h5py

        self.prior, self.num_samples = prior, int(num_samples)
        self.ids = np.asarray(ids, dtype=str)
        n, s = len(self.ids), self.num_samples
        self._parts: list[dict[str, np.ndarray]] = []
        self._next = 0
        self._nc = h5netcdf.File(str(posterior_path), "w")
        group = self._nc.create_group("posterior")
        group.dimensions = {"chain": 1, "draw": s, "cutout": n}
        # the attributes and coordinates arviz.from_dict + to_netcdf give
        for key, value in {**az.data.base.make_attrs(), **_posterior_attrs(prior, card)}.items():
            group.attrs[key] = value
        group.create_variable("chain", ("chain",), data=np.arange(1, dtype=np.int64))
        group.create_variable("draw", ("draw",), data=np.arange(s, dtype=np.int64))
        group.create_variable(
            "cutout", ("cutout",), data=self.ids.astype(object), dtype=h5py.string_dtype()
        )
        chunks = (1, max(1, min(s, 128)), max(1, min(n, 256)))
        self._vars = []
        for p in prior.parameters:
            var = group.create_variable(
                p.name,
                ("chain", "draw", "cutout"),
                dtype=np.float32,
                fillvalue=np.float32(np.nan),
                chunks=chunks,
                compression="gzip",
            )
            var.attrs.update({"unit": p.unit, "label": p.label, "description": p.description})
            self._vars.append(var)
        self._zip = self._npy = None
        if samples_path is not None:
            import zipfile

            self._zip = zipfile.ZipFile(samples_path, "w", compression=zipfile.ZIP_DEFLATED)
            for key, value in (("ids", self.ids), ("names", np.asarray(prior.names, str))):
                with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)
            self._npy = self._zip.open("samples.npy", "w", force_zip64=True)
            header = {"descr": "<f4", "fortran_order": False, "shape": (n, s, prior.dim)}
            np.lib.format.write_array_header_2_0(self._npy, header)

    def write(self, start: int, draws: np.ndarray) -> None:
        """Write the (n, S, D) draws of cutouts ``start`` … ``start + n − 1`` (in order)."""
        _check_samples(draws, self.prior)
        if start != self._next or draws.shape[1] != self.num_samples:
            raise ValueError(
                f"expected draws of cutout {self._next} with S = {self.num_samples}, got cutout "
                f"{start} with S = {draws.shape[1]}"
            )
        draws = np.asarray(draws, dtype=np.float32)
        stop = start + len(draws)
        for j, var in enumerate(self._vars):
            var[0, :, start:stop] = draws[:, :, j].T
        if self._npy is not None:
            self._npy.write(np.ascontiguousarray(draws, dtype="<f4").tobytes())
        self._parts.append(posterior_stats(draws))
        self._next = stop

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """:func:`posterior_stats` of all draws written so far (for :func:`summary_table`)."""
        return _concat_stats(self._parts)

    def close(self) -> None:
        """Finish the files (they are complete only once every cutout has been written)."""
        if self._npy is not None:
            self._npy.close()
            self._npy = None
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._nc is not None:
            self._nc.close()
            self._nc = None

    def __enter__(self) -> DrawWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if exc[0] is None and self._next != len(self.ids):
            raise ValueError(f"draws of {self._next} of {len(self.ids)} cutouts were written")


def write_samples(
    path: str | Path, samples: np.ndarray, ids: Sequence[str], names: Sequence[str]
) -> Path:
    """Write draws to ``.npz`` (arrays ``samples`` (N, S, D), ``ids``, ``names``) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                samples=samples.astype(np.float32),
                ids=np.asarray(ids, str),
                names=np.asarray(names, str),
            )
    return path


def _band_keywords(band: str) -> dict:
    parts = band.split("_")
    if len(parts) == 3:
        return {"INSTRUME": parts[0], "DETECTOR": parts[1], "FILTER": parts[2]}
    return {"FILTER": band}


def write_cutouts_fits(
    path: str | Path,
    images: np.ndarray,
    bands: Sequence[str],
    *,
    pixel_scale: float,
    meta: dict | None = None,
) -> Path:
    """Write cutouts in the layout :func:`sbicluster.io.read_cutouts` reads.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    images : numpy.ndarray
        (N, C, H, W) e⁻/s per pixel.
    bands : sequence of str
        Band of each of the C planes (``INSTRUMENT_DETECTOR_FILTER``).
    pixel_scale : float
        arcsec/px, written as a tangent-plane WCS.
    meta : dict, optional
        Extra primary-header keywords (short names, scalar values).

    Returns
    -------
    Path
    """
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "sbicluster"
    primary.header["NCUTOUT"] = (images.shape[0], "number of cutouts in each band HDU")
    for k, v in (meta or {}).items():
        primary.header[k[:8].upper()] = v
    hdus = [primary]
    h, w = images.shape[-2:]
    for c, band in enumerate(bands):
        hdu = fits.ImageHDU(np.ascontiguousarray(images[:, c], dtype=np.float32), name=band)
        hdr = hdu.header
        for k, v in _band_keywords(band).items():
            hdr[k] = v
        hdr["BUNIT"] = "ELECTRONS/S"
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdr["CRPIX1"], hdr["CRPIX2"] = (w + 1) / 2, (h + 1) / 2
        hdr["CRVAL1"], hdr["CRVAL2"] = 204.25, -29.87  # an arbitrary sky position (M83)
        hdr["CDELT1"], hdr["CDELT2"] = -pixel_scale / 3600.0, pixel_scale / 3600.0
        hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
        hdus.append(hdu)
    path = Path(path)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path
