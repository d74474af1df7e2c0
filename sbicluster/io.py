"""Reading user images into model-ready cutouts: FITS in, validated e⁻/s arrays out.

This module owns everything between a user's files and the ``(N, band, y, x)`` float32 array in
e⁻/s per pixel the model reads: the accepted FITS layouts, band matching by header keywords,
unit conversion, pixel-scale checks, catalogue-driven cutting from large images, and the
treatment of masked pixels. It must not run a model or write results.

Accepted inputs
---------------
1. A multi-extension FITS file with one image HDU per band. Each HDU holds a single cutout
   ``(H, W)`` or a stack ``(N, H, W)``; the band comes from ``FILTER`` (``FILTER1``/``FILTER2`` for
   ACS) with ``INSTRUME``/``DETECTOR``, from ``EXTNAME`` when it names a model band, or from an
   explicit ``bands`` argument giving the band of each image HDU in order.
2. A single HDU holding a cube ``(N, C, H, W)`` with keywords ``BAND1 … BANDC`` naming the bands.
3. A folder of such files (``*.fits``, ``*.fits.gz``, ``*.fit``), read in sorted order.
4. One large image per band plus a catalogue (ECSV, CSV or FITS table) with ``ra``/``dec``
   (degrees) or ``x``/``y`` (0-based pixel) columns: cutouts are cut with
   :class:`astropy.nddata.Cutout2D`.

Units (the model reads e⁻/s per pixel): ``BUNIT`` of ``ELECTRONS/S`` (or ``e-/s``; a missing
``BUNIT`` is taken as this, with a warning) is used as is; ``ELECTRONS`` or ``COUNTS`` are divided
by ``EXPTIME`` (s, which must be positive); flux densities ``ERG/S/CM2/A`` or ``JY`` are divided by
``PHOTFLAM`` or ``PHOTFNU`` (flux density of 1 e⁻/s, as in HST headers); any other unit is
converted with a Vega zero point keyword (``MAGZERO``, ``ZEROPNT`` or ``MAGZPT``: magnitude of one
pixel unit) and the model's zero point of the band. Anything else is refused with a message
saying how to convert.

Cutout ids: a file holding one cutout gives it the file's name without the FITS suffix
(``.fits``, ``.fit``, ``.fts``, optionally ``.gz``): ``cut.1.fits`` → ``cut.1``; a file holding N > 1
cutouts gives ``<name>:0`` … ``<name>:N-1`` (``cut.1:0``). Catalogue-driven cutouts take the
catalogue's ``id`` column or ``<catalogue name>:<row>``. Ids must be unique in a run (they name
rows of the outputs and corner plots): two files of a folder whose ids collide (``cut.fits`` and
``cut.fits.gz``) or a catalogue ``id`` column with repeated values raise
:class:`~sbicluster.errors.InputError`.

Masked pixels: non-finite pixels are replaced by the median of the finite pixels of the same
band of the same cutout, and the cutout is flagged :data:`FLAG_MASKED` in the output table. A
cutout band with no finite pixel, or with a constant value, cannot be analysed and raises
:class:`~sbicluster.errors.InputError`.

Pixel values far outside the model's training data (mostly negative, or brighter than any
cluster of the prior) are checked after reading, by :mod:`sbicluster.validation`, which sets
:data:`FLAG_OUT_OF_RANGE`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from .errors import InputError

__all__ = [
    "Cutouts",
    "read_cutouts",
    "read_catalog_cutouts",
    "match_band",
    "FLAG_MASKED",
    "FLAG_PRIOR_EDGE",
    "FLAG_OUT_OF_RANGE",
    "FLAG_NAMES",
    "FLAG_DESCRIPTIONS",
    "PIXEL_SCALE_TOLERANCE",
]

log = logging.getLogger(__name__)

FLAG_MASKED = 1
"""Bit set when non-finite pixels were replaced by the band median of the cutout."""
FLAG_PRIOR_EDGE = 2
"""Bit set (by :func:`sbicluster.outputs.summary_table`) when a parameter's posterior median lies
within 2 % of the prior range of a prior bound: the estimate is limited by the prior."""
FLAG_OUT_OF_RANGE = 4
"""Bit set (by :func:`sbicluster.validation.check_pixel_range`) when the cutout's pixel values lie
far outside anything the model was trained on (mostly negative, or brighter than any cluster of
the prior); its P(cluster), visibility and posterior draws and summaries are NaN."""
FLAG_NAMES = {
    FLAG_MASKED: "masked_pixels",
    FLAG_PRIOR_EDGE: "prior_edge",
    FLAG_OUT_OF_RANGE: "out_of_range",
}
FLAG_DESCRIPTIONS = {
    FLAG_MASKED: "masked_pixels: non-finite pixels replaced by the band median of the cutout",
    FLAG_PRIOR_EDGE: "prior_edge: a posterior median lies within 2% of the prior range of a prior bound",
    FLAG_OUT_OF_RANGE: "out_of_range: pixel values far outside the training data (mostly negative, "
    "or brighter than any cluster of the prior); p_cluster, visibility and posterior summaries are NaN",
}
PIXEL_SCALE_TOLERANCE = 0.03
"""Largest accepted relative difference between the image and model pixel scales."""

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
_RATE_UNITS = {"ELECTRONS/S", "ELECTRONS/SEC", "E-/S", "ELECTRON/S", "ELECTRONS S-1", "E/S"}
_COUNT_UNITS = {"ELECTRONS", "ELECTRON", "E-", "COUNTS", "COUNT"}
_FLAM_UNITS = {
    "ERG/S/CM2/A",
    "ERG/CM2/S/A",
    "ERG/S/CM2/ANGSTROM",
    "ERG/CM2/S/ANGSTROM",
    "ERGS/CM2/S/A",
}
_FNU_UNITS = {"JY", "JANSKY"}
_ZP_KEYS = ("MAGZERO", "ZEROPNT", "MAGZPT")


@dataclass
class Cutouts:
    """Model-ready cutouts with their identifiers and provenance.

    Attributes
    ----------
    images : numpy.ndarray
        float32, shape (N, C, H, W), e⁻/s per pixel, bands in the model's order.
    ids : list of str
        One identifier per cutout.
    x, y : numpy.ndarray
        float64 (N,): pixel position (0-based) of the cutout centre in its parent image, NaN
        when the input was already cut.
    ra, dec : numpy.ndarray
        float64 (N,), degrees; NaN when unknown.
    flags : numpy.ndarray
        int32 (N,): bit mask, see :data:`FLAG_NAMES`.
    sources : list of str
        File each cutout came from.
    """

    images: np.ndarray
    ids: list[str]
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    flags: np.ndarray
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    @staticmethod
    def concatenate(parts: Sequence[Cutouts]) -> Cutouts:
        """Join several :class:`Cutouts` (e.g. from the files of a folder)."""
        return Cutouts(
            np.concatenate([p.images for p in parts]),
            [i for p in parts for i in p.ids],
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.ra for p in parts]),
            np.concatenate([p.dec for p in parts]),
            np.concatenate([p.flags for p in parts]),
            [s for p in parts for s in p.sources],
        )


def _where(path: Path | str, hdu: int | str | None = None) -> str:
    return f"{path}[{hdu}]" if hdu is not None else str(path)


def match_band(header: fits.Header, model_bands: Sequence[str], where: str = "") -> str:
    """The model band an image HDU belongs to, from its header.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the image HDU (merged with the primary header by the caller).
    model_bands : sequence of str
        The model's band names, e.g. ``("WFC3_UVIS_F336W", ...)``.
    where : str
        ``file[HDU]`` text for error messages.

    Returns
    -------
    str
        One of ``model_bands``.

    Raises
    ------
    InputError
        If the header names no filter, or one the model does not use, or if ``EXTNAME`` names a
        model band and the filter keywords name a different one (the file contradicts itself;
        ``--bands`` says which is right).
    """
    by_upper = {b.upper(): b for b in model_bands}
    extname = str(header.get("EXTNAME", "")).strip().upper()  # FITS upper-cases EXTNAME
    if extname in by_upper:
        by_filter = _band_from_filters(header, model_bands, by_upper)
        if by_filter is not None and by_filter != by_upper[extname]:
            raise InputError(
                f"{where}: EXTNAME says band {by_upper[extname]} but the filter keywords say "
                f"{by_filter}; fix the header or say which is right with --bands"
            )
        return by_upper[extname]
    found = _band_from_filters(header, model_bands, by_upper)
    if found is not None:
        return found
    filters = _filters(header)
    if not filters:
        raise InputError(
            f"{where}: no FILTER keyword (or EXTNAME naming a band) in the header; "
            f"add FILTER or pass the bands explicitly (--bands {','.join(model_bands)})"
        )
    instrument = str(header.get("INSTRUME", "")).strip().upper()
    raise InputError(
        f"{where}: filter {'/'.join(filters)} ({instrument or 'unknown instrument'}) is not one of "
        f"the model's bands {list(model_bands)}; pass --bands to map HDUs to bands explicitly"
    )


def _filters(header: fits.Header) -> list[str]:
    """Upper-cased values of FILTER/FILTER1/FILTER2, CLEAR positions left out."""
    return [
        str(header[k]).strip().upper()
        for k in ("FILTER", "FILTER1", "FILTER2")
        if k in header and not str(header[k]).upper().startswith("CLEAR")
    ]


def _band_from_filters(
    header: fits.Header, model_bands: Sequence[str], by_upper: Mapping[str, str]
) -> str | None:
    """The model band the filter keywords (with INSTRUME/DETECTOR) name, or None."""
    filters = _filters(header)
    instrument = str(header.get("INSTRUME", "")).strip().upper()
    detector = str(header.get("DETECTOR", "")).strip().upper()
    for filt in filters:
        if filt in by_upper:  # FILTER holds the model's full band name
            return by_upper[filt]
        full = f"{instrument}_{detector}_{filt}"
        if full in by_upper:
            return by_upper[full]
        by_filter = [b for b in model_bands if b.upper().endswith("_" + filt)]
        if len(by_filter) == 1 and (not instrument or by_filter[0].startswith(instrument)):
            return by_filter[0]
    return None


def _number(value) -> float:
    """A header value as a float; NaN when it is not a number (e.g. ``EXPTIME = 'abc'``)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _to_rate(
    data: np.ndarray, header: fits.Header, where: str, zero_point: float | None = None
) -> np.ndarray:
    """Convert pixel values to e⁻/s following BUNIT, EXPTIME, PHOTFLAM/PHOTFNU or a zero point.

    ``zero_point`` is the model's Vega magnitude giving 1 e⁻/s in this band (used only with a
    header zero point, see the module docstring).
    """
    if "BUNIT" not in header:
        log.warning("%s: no BUNIT keyword; assuming the pixels are electrons/s", where)
    unit = str(header.get("BUNIT", "ELECTRONS/S")).strip().upper()
    if unit in _RATE_UNITS:
        return data
    if unit in _COUNT_UNITS:
        exptime = header.get("EXPTIME")
        if exptime is None:
            raise InputError(f"{where}: BUNIT is {unit} but there is no EXPTIME to convert to e-/s")
        seconds = _number(exptime)
        if not seconds > 0:
            raise InputError(
                f"{where}: EXPTIME must be positive (a number of seconds) to convert {unit} to "
                f"e-/s, got {exptime!r}; fix the EXPTIME keyword"
            )
        return data / seconds
    compact = unit.replace(" ", "").replace("**", "").replace("^", "")
    for key, units in (("PHOTFLAM", _FLAM_UNITS), ("PHOTFNU", _FNU_UNITS)):
        if compact in units:
            value = header.get(key)
            if value is None or not _number(value) > 0:
                raise InputError(
                    f"{where}: BUNIT is {unit} but {key} is missing or not positive ({value}); "
                    f"add {key} (flux density per e-/s) or give the images in electrons/s"
                )
            return data / _number(value)
    header_zp = next((header[k] for k in _ZP_KEYS if k in header), None)
    if header_zp is not None and zero_point is not None:
        zp = _number(header_zp)
        if not np.isfinite(zp):
            raise InputError(
                f"{where}: the zero point keyword holds {header_zp!r}, not a number (Vega magnitude "
                "of one pixel unit); fix the keyword"
            )
        # a pixel value f has magnitude zp_image - 2.5 log10 f; in e-/s it is 10**(-0.4 (m - zp_model))
        return data * 10 ** (0.4 * (zero_point - zp))
    raise InputError(
        f"{where}: unsupported BUNIT {unit!r}; the model needs electrons/s per pixel "
        "(BUNIT = 'ELECTRONS/S'; 'ELECTRONS'/'COUNTS' with EXPTIME; 'ERG/S/CM2/A' with PHOTFLAM; "
        "'JY' with PHOTFNU; or any unit with a Vega zero point keyword MAGZERO/ZEROPNT); convert the images "
        "or add the keyword"
    )


def _check_pixel_scale(header: fits.Header, expected: float | None, where: str) -> None:
    """Compare the WCS pixel scale (arcsec/px) with the model's, if both are known."""
    if expected is None:
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # noqa: BLE001 - a broken WCS is as good as none here
            return
    if not wcs.has_celestial:
        return
    scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial))) * 3600.0
    if abs(scale / expected - 1.0) > PIXEL_SCALE_TOLERANCE:
        raise InputError(
            f"{where}: pixel scale {scale:.4f} arcsec/px differs from the model's {expected:.4f} "
            f"arcsec/px by more than {PIXEL_SCALE_TOLERANCE:.0%}; resample the images or use a "
            "model trained for this pixel scale"
        )


def _clean(
    cube: np.ndarray, wheres: Sequence[str], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite pixels by band medians; refuse all-NaN or constant bands.

    ``cube`` is (N, C, H, W); ``wheres`` the ``file[HDU]`` of each band; ``names`` the cutouts' ids.
    Returns the cleaned cube and per-cutout flags.
    """
    flags = np.zeros(cube.shape[0], dtype=np.int32)
    finite = np.isfinite(cube)
    n_finite = finite.sum(axis=(2, 3))
    if np.any(n_finite == 0):
        i, c = np.argwhere(n_finite == 0)[0]
        raise InputError(
            f"{wheres[c]}: cutout {names[i]} has no finite pixel (all NaN/masked); "
            "remove it or give it valid data"
        )
    bad = ~finite.all(axis=(1, 2, 3))
    if bad.any():
        cube = cube.copy()
        for i in np.flatnonzero(bad):
            for c in range(cube.shape[1]):
                mask = ~finite[i, c]
                if mask.any():
                    cube[i, c][mask] = np.median(cube[i, c][~mask].astype(np.float64))
        flags[bad] |= FLAG_MASKED
    spread = cube.max(axis=(2, 3)) - cube.min(axis=(2, 3))
    if np.any(spread == 0):
        i, c = np.argwhere(spread == 0)[0]
        raise InputError(
            f"{wheres[c]}: cutout {names[i]} is constant ({float(cube[i, c, 0, 0]):g} in every "
            "pixel); "
            "this is not sky-noise-limited image data (empty or saturated?); remove it"
        )
    return cube.astype(np.float32, copy=False), flags


def _open(path: Path):
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        for hdu in hdul:  # force reading: truncated files fail here, not later
            _ = hdu.data
    except (OSError, TypeError, ValueError) as err:
        raise InputError(f"{path}: not a readable FITS file ({err})") from err
    return hdul


def _image_hdus(hdul) -> list[int]:
    return [
        i
        for i, h in enumerate(hdul)
        if getattr(h, "is_image", False) and h.data is not None and h.data.ndim >= 2
    ]


def _read_file(
    path: Path,
    model_bands: Sequence[str],
    image_size: int,
    pixel_scale: float | None,
    bands: Sequence[str] | None,
    zero_points: Mapping[str, float] | None = None,
) -> Cutouts:
    with _open(path) as hdul:
        indices = _image_hdus(hdul)
        if not indices:
            raise InputError(f"{path}: no image HDU with 2 or more dimensions")
        primary = hdul[0].header
        if len(indices) == 1 and hdul[indices[0]].data.ndim == 4:
            k = indices[0]
            header = hdul[k].header
            cube = hdul[k].data  # converted band by band below, to bound memory
            names = bands or [header.get(f"BAND{c + 1}") for c in range(cube.shape[1])]
            if any(n is None for n in names):
                raise InputError(
                    f"{_where(path, k)}: a (N, band, y, x) cube needs BAND1..BAND{cube.shape[1]} keywords or --bands"
                )
            if len(names) != cube.shape[1]:
                raise InputError(
                    f"{_where(path, k)}: cube has {cube.shape[1]} bands but {len(names)} band names were given"
                )
            per_band = {n: (cube[:, c], header, k) for c, n in enumerate(names)}
        else:
            if bands is not None and len(bands) != len(indices):
                raise InputError(
                    f"{path}: {len(indices)} image HDUs but {len(bands)} bands given with --bands"
                )
            per_band = {}
            for j, k in enumerate(indices):
                header = hdul[k].header.copy()
                for key in (
                    "INSTRUME",
                    "DETECTOR",
                    "EXPTIME",
                    "BUNIT",
                    "FILTER",
                    "FILTER1",
                    "FILTER2",
                ):
                    if key not in header and key in primary:
                        header[key] = primary[key]
                name = (
                    bands[j]
                    if bands is not None
                    else match_band(header, model_bands, _where(path, k))
                )
                if name in per_band:
                    raise InputError(
                        f"{_where(path, k)}: band {name} appears twice (also in HDU {per_band[name][2]})"
                    )
                data = hdul[k].data  # converted below, one band at a time
                per_band[name] = (data[None] if data.ndim == 2 else data, header, k)
        unknown = [n for n in per_band if n not in model_bands]
        if unknown:
            raise InputError(
                f"{path}: band(s) {unknown} are not the model's bands {list(model_bands)}"
            )
        missing = [b for b in model_bands if b not in per_band]
        if missing:
            raise InputError(
                f"{path}: the model needs {len(model_bands)} bands {list(model_bands)}; missing {missing}"
            )
        shapes = {b: per_band[b][0].shape for b in model_bands}
        if len(set(shapes.values())) != 1:
            raise InputError(f"{path}: the bands' image shapes differ: {shapes}")
        for b in model_bands:
            data, header, k = per_band[b]
            where = _where(path, k)
            if data.ndim != 3:
                raise InputError(
                    f"{where}: expected (y, x) or (N, y, x) image data, got shape {data.shape}"
                )
            if data.shape[-2:] != (image_size, image_size):
                raise InputError(
                    f"{where}: cutouts are {data.shape[-2]}x{data.shape[-1]} px but the model reads "
                    f"{image_size}x{image_size}; cut them to that size (or give a large image and a catalogue)"
                )
            _check_pixel_scale(header, pixel_scale, where)
        # e-/s computed in float64 one band at a time and stored as float32, the images' dtype
        # from here on: memory holds the float32 cube plus one band in float64, not the file
        # in float64 several times over
        n = per_band[model_bands[0]][0].shape[0]
        rates = np.empty((n, len(model_bands), image_size, image_size), dtype=np.float32)
        for c, b in enumerate(model_bands):
            data, header, k = per_band[b]
            rates[:, c] = _to_rate(
                np.asarray(data, dtype=np.float64),
                header,
                _where(path, k),
                (zero_points or {}).get(b),
            )
    stem = _file_stem(path)
    ids = [stem] if n == 1 else [f"{stem}:{i}" for i in range(n)]
    cube, flags = _clean(rates, [_where(path, per_band[b][2]) for b in model_bands], ids)
    nan = np.full(n, np.nan)
    return Cutouts(
        cube, ids, nan.copy(), nan.copy(), nan.copy(), nan.copy(), flags, [str(path)] * n
    )


def _file_stem(path: Path) -> str:
    """The file name without its FITS suffix (``cut.1.fits.gz`` → ``cut.1``)."""
    name = path.name
    for suffix in sorted(_FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _check_unique_ids(ids: Sequence[str], sources: Sequence[str]) -> None:
    """Refuse repeated cutout ids, naming the files (or catalogue rows) that give them."""
    first: dict[str, int] = {}
    for i, cid in enumerate(ids):
        if cid in first:
            j = first[cid]
            a, b = sources[j], sources[i]
            where = f"{a} and {b}" if a != b else f"{a} (rows {j} and {i})"
            raise InputError(
                f"{where} both give the cutout id {cid!r}; ids must be unique in a run: rename "
                "one file (or make the catalogue's id column unique)"
            )
        first[cid] = i


def read_cutouts(
    path: str | Path,
    model_bands: Sequence[str],
    *,
    image_size: int,
    pixel_scale: float | None = None,
    bands: Sequence[str] | None = None,
    zero_points: Mapping[str, float] | None = None,
) -> Cutouts:
    """Read cutouts from a FITS file or a folder of FITS files.

    Parameters
    ----------
    path : str or Path
        A FITS file (layouts 1–2 of the module docstring) or a folder of them.
    model_bands : sequence of str
        The model's bands; the output follows this order.
    image_size : int
        Cutout side the model reads, px.
    pixel_scale : float, optional
        Model pixel scale, arcsec/px; checked against the WCS when the header has one.
    bands : sequence of str, optional
        Band of each image HDU in order (or of each cube plane), overriding header keywords.
    zero_points : mapping of str to float, optional
        The model's Vega magnitude giving 1 e⁻/s per band, for images calibrated by a header
        zero point (see the module docstring).

    Returns
    -------
    Cutouts

    Raises
    ------
    InputError
        With ``file[HDU]: problem`` for any input that cannot be reconciled with the model.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(_FITS_SUFFIXES))
        if not files:
            raise InputError(f"{path}: folder holds no FITS files ({', '.join(_FITS_SUFFIXES)})")
        cutouts = Cutouts.concatenate(
            [_read_file(f, model_bands, image_size, pixel_scale, bands, zero_points) for f in files]
        )
        _check_unique_ids(cutouts.ids, cutouts.sources)
        return cutouts
    return _read_file(path, model_bands, image_size, pixel_scale, bands, zero_points)


def _read_catalog(path: Path) -> Table:
    try:
        if path.suffix.lower() == ".csv":
            return Table.read(path, format="ascii.csv")
        if path.suffix.lower() == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        return Table.read(path)
    except Exception as err:  # noqa: BLE001 - astropy raises many kinds
        raise InputError(f"{path}: cannot read the catalogue ({err})") from err


def _numeric_column(table: Table, name: str, catalog: Path, unit: str) -> np.ndarray:
    """Column ``name`` as float64; refuse text that is not numbers, and missing values."""
    column = table[name]
    try:
        values = np.asarray(column, dtype=float)
    except (TypeError, ValueError):
        sample = next((str(v) for v in column if not _is_number(v)), str(column[0]))
        raise InputError(
            f"catalogue {catalog}: column {name} must hold numbers ({unit}), found text such as "
            f"{sample!r}; fix the column"
        ) from None
    if np.ma.is_masked(column) or not np.all(np.isfinite(values)):
        row = int(np.flatnonzero(np.ma.getmaskarray(column) | ~np.isfinite(values))[0])
        raise InputError(
            f"catalogue {catalog}: column {name} has a missing or non-finite value in row {row}; "
            "give every row a position"
        )
    return values


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def read_catalog_cutouts(
    images: Sequence[str | Path],
    catalog: str | Path,
    model_bands: Sequence[str],
    *,
    image_size: int,
    pixel_scale: float | None = None,
    bands: Sequence[str] | None = None,
    zero_points: Mapping[str, float] | None = None,
) -> Cutouts:
    """Cut model-sized cutouts around catalogue positions from one large image per band.

    Parameters
    ----------
    images : sequence of str or Path
        One FITS image per band (the first 2-D image HDU of each file is used).
    catalog : str or Path
        ECSV, CSV or FITS table with ``ra``/``dec`` (deg, needs a WCS) or ``x``/``y`` (0-based
        px) columns, and optionally ``id``.
    model_bands : sequence of str
        The model's bands.
    image_size : int
        Cutout side, px.
    pixel_scale : float, optional
        Model pixel scale, arcsec/px.
    bands : sequence of str, optional
        Band of each image, in order, overriding header keywords.
    zero_points : mapping of str to float, optional
        The model's Vega magnitude giving 1 e⁻/s per band (see :func:`read_cutouts`).

    Returns
    -------
    Cutouts
        Ordered as the catalogue; positions are the catalogue's.

    Raises
    ------
    InputError
        Unreadable files, band mismatch, a position whose cutout would leave the image, etc.
    """
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D, NoOverlapError, PartialOverlapError

    catalog = Path(catalog)
    table = _read_catalog(catalog)
    if len(table) == 0:
        raise InputError(
            f"catalogue {catalog} has no rows; give at least one position (x/y or ra/dec)"
        )
    cols = {c.lower(): c for c in table.colnames}
    if bands is not None and len(bands) != len(images):
        raise InputError(f"{len(images)} images but {len(bands)} bands given with --bands")
    planes: dict[str, tuple[np.ndarray, fits.Header, str]] = {}
    for j, image in enumerate(images):
        image = Path(image)
        with _open(image) as hdul:
            indices = [k for k in _image_hdus(hdul) if hdul[k].data.ndim == 2]
            if not indices:
                raise InputError(f"{image}: no 2-D image HDU")
            k = indices[0]
            header = hdul[0].header.copy()
            header.update(hdul[k].header)
            where = _where(image, k)
            name = bands[j] if bands is not None else match_band(header, model_bands, where)
            _check_pixel_scale(header, pixel_scale, where)
            if name in planes:
                raise InputError(f"{where}: band {name} is given twice (also by {planes[name][2]})")
            rate = _to_rate(
                np.asarray(hdul[k].data, dtype=np.float64),
                header,
                where,
                (zero_points or {}).get(name),
            )
            planes[name] = (rate, header, where)
    missing = [b for b in model_bands if b not in planes]
    if missing:
        raise InputError(f"the model needs bands {list(model_bands)}; no image given for {missing}")
    ref_data, ref_header, ref_where = planes[model_bands[0]]
    for b in model_bands[1:]:
        if planes[b][0].shape != ref_data.shape:
            raise InputError(
                f"{planes[b][2]}: shape {planes[b][0].shape} differs from {ref_where} {ref_data.shape}"
            )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(ref_header, naxis=2)
    if "x" in cols and "y" in cols:
        x = _numeric_column(table, cols["x"], catalog, "0-based pixels")
        y = _numeric_column(table, cols["y"], catalog, "0-based pixels")
        if wcs.has_celestial:
            sky = wcs.pixel_to_world(x, y)
            ra, dec = sky.ra.deg, sky.dec.deg
        else:
            ra = dec = np.full(len(table), np.nan)
    elif "ra" in cols and "dec" in cols:
        if not wcs.has_celestial:
            raise InputError(
                f"{ref_where}: the catalogue gives RA/Dec but the image has no celestial WCS"
            )
        ra = _numeric_column(table, cols["ra"], catalog, "degrees")
        dec = _numeric_column(table, cols["dec"], catalog, "degrees")
        x, y = wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        # round-off of the sky→pixel transform must not move a cutout by a whole pixel
        x, y = np.round(x, 6), np.round(y, 6)
    else:
        raise InputError(
            f"{catalog}: needs columns x, y (pixels) or ra, dec (degrees); has {table.colnames}"
        )
    ids = (
        [str(v) for v in table[cols["id"]]]
        if "id" in cols
        else [f"{catalog.stem}:{i}" for i in range(len(table))]
    )
    sources = [str(catalog)] * len(table)
    _check_unique_ids(ids, sources)
    cube = np.empty((len(table), len(model_bands), image_size, image_size))
    for i in range(len(table)):
        for c, b in enumerate(model_bands):
            try:
                cut = Cutout2D(planes[b][0], (x[i], y[i]), image_size, mode="strict")
            except (NoOverlapError, PartialOverlapError, ValueError) as err:
                raise InputError(
                    f"{catalog}: row {i} (id {ids[i]}) at x={x[i]:.1f}, y={y[i]:.1f} lies off or too close to "
                    f"the edge of {planes[b][2]} for a {image_size}x{image_size} cutout ({err})"
                ) from err
            cube[i, c] = cut.data
    cleaned, flags = _clean(cube, [f"{catalog} on {planes[b][2]}" for b in model_bands], ids)
    return Cutouts(
        cleaned,
        ids,
        np.asarray(x, float),
        np.asarray(y, float),
        np.asarray(ra, float),
        np.asarray(dec, float),
        flags,
        sources,
    )
