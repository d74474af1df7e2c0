"""Photometric catalogues in: LEGUS ``.tab`` files, ECSV and FITS tables → magnitudes, errors, masks.

This module owns reading cluster catalogues for the catalogue models: detecting the column layout
of LEGUS high-level-science-product tables (35, 37, 38 or 39 whitespace-separated columns), the
``--columns`` map for other layouts and for ECSV/FITS tables, the band assignment of each
magnitude column, the LEGUS flags (66.666 = outside the band's footprint, 99.999 = not detected)
and the flags of bad rows. It must not know about networks or simulators beyond band names.

LEGUS layouts (1-based columns; Adamo et al. 2017 and the shared data README)
-------------------------------------------------------------------------------
35 columns: 1 id; 2–3 x, y; 4–5 RA, Dec (deg); 6–15 magnitude and error of five bands, bluest
first; 16 CI; 17–19 age best/max/min (yr); 20–22 mass best/max/min (M☉); 23–25 E(B−V)
best/max/min; 26–30 residuals; 31 reduced χ²; 32 Q; 33 number of bands fitted; 34 class (mode);
35 class (mean). 37 columns: a second x, y pair after columns 2–3 shifts everything after by two.
38–39 columns: further classification columns at the end. The layout is detected from the
values (RA/Dec ranges, magnitude/error ranges, the visual class), never from the count alone:
an ambiguous file is refused with a request for ``--columns``.

``--columns`` syntax: comma-separated ``key=value`` with keys ``id``, ``x``, ``y``, ``ra``,
``dec`` and one ``BAND=MAG:ERR`` per band (band names as :data:`simulators.photometry.SUPPORTED_BANDS`
or short filter names such as ``F275W`` when unambiguous); values are 1-based column numbers
for whitespace tables and column names for ECSV/FITS. Example:
``id=ID,ra=RA,dec=DEC,F275W=m275:e275,F336W=m336:e336,F555W=m555:e555``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "FLAG_OUTSIDE",
    "FLAG_NOT_DETECTED",
    "ROW_FLAG_NO_BANDS",
    "ROW_FLAG_BAD_VALUE",
    "ROW_FLAG_FEW_BANDS",
    "PhotometryCatalog",
    "detect_legus_layout",
    "read_photometry_catalog",
    "parse_columns",
    "legus_bands_from_name",
]

FLAG_OUTSIDE = 66.666
"""LEGUS magnitude flag: the source is outside the band's footprint."""
FLAG_NOT_DETECTED = 99.999
"""LEGUS magnitude flag: the source is not detected in the band."""

ROW_FLAG_NO_BANDS = 8
"""Row flag: no band measured (all missing or not detected); the posterior is the prior's."""
ROW_FLAG_BAD_VALUE = 16
"""Row flag: a magnitude or error was NaN, non-positive or absurd; that band was treated as missing."""
ROW_FLAG_FEW_BANDS = 32
"""Row flag: fewer than 3 bands measured (ages poorly constrained)."""

ROW_FLAG_DESCRIPTIONS = {
    ROW_FLAG_NO_BANDS: "no_bands: no band measured (all outside the footprint, not detected or bad)",
    ROW_FLAG_BAD_VALUE: "bad_value: a magnitude or error was NaN, non-positive or outside 5-40 mag "
    "(that band treated as missing)",
    ROW_FLAG_FEW_BANDS: "few_bands: fewer than 3 bands measured",
}

_MAG_RANGE = (5.0, 40.0)
_SHORT = re.compile(r"^F\d{3,4}[WMNLP]$", re.IGNORECASE)

#: LEGUS extra columns kept with every row (0-based positions in the 35-column layout; the
#: 37-column layout adds 2): SED-fit age/mass/E(B−V) best, max, min; Q; bands fitted; class mode.
LEGUS_EXTRA = {
    "ci": 15,
    "age_best": 16,
    "age_max": 17,
    "age_min": 18,
    "mass_best": 19,
    "mass_max": 20,
    "mass_min": 21,
    "ebv_best": 22,
    "ebv_max": 23,
    "ebv_min": 24,
    "q_fit": 31,
    "n_bands_fit": 32,
    "class_mode": 33,
}


@dataclass
class PhotometryCatalog:
    """Apparent magnitudes of a catalogue, per band, with identifiers and row flags.

    Attributes
    ----------
    ids : list of str
        Row identifiers.
    bands : tuple of str
        Band of each magnitude column (names of :data:`simulators.photometry.SUPPORTED_BANDS`).
    mag, err : numpy.ndarray
        (N, C) apparent Vega magnitudes and 1σ errors, mag; NaN unless ``state == 1``.
    state : numpy.ndarray
        int8 (N, C): 1 measured, 2 not detected, 0 missing (outside the footprint or bad).
    flags : numpy.ndarray
        int32 (N,) row flags (``ROW_FLAG_*``).
    x, y, ra, dec : numpy.ndarray
        (N,) positions: pixels (as in the file, NaN when absent) and degrees.
    extra : dict of str to numpy.ndarray
        Further columns (LEGUS: SED-fit results, class); empty for other tables.
    source : str
        The file read.
    layout : str
        How the columns were found (``legus-35``, ``legus-37``, ..., or ``columns``).
    """

    ids: list[str]
    bands: tuple[str, ...]
    mag: np.ndarray
    err: np.ndarray
    state: np.ndarray
    flags: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    extra: dict = field(default_factory=dict)
    source: str = ""
    layout: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def legus_bands_from_name(name: str) -> tuple[str, ...] | None:
    """Bands of a LEGUS product from its file name, bluest first, or ``None`` if it does not say.

    ``hlsp_legus_hst_wfc3_...``: WFC3/UVIS F275W, F336W, F438W, F555W, F814W;
    ``hlsp_legus_hst_acs-wfc3_...``: WFC3/UVIS F275W, F336W and ACS/WFC F435W, F555W, F814W.
    """
    low = Path(name).name.lower()
    if not low.startswith("hlsp_legus_hst_"):
        return None
    inst = low[len("hlsp_legus_hst_") :].split("_")[0]
    if inst == "wfc3":
        return tuple(f"WFC3_UVIS_{b}" for b in ("F275W", "F336W", "F438W", "F555W", "F814W"))
    if inst in ("acs-wfc3", "wfc3-acs"):
        return (
            "WFC3_UVIS_F275W",
            "WFC3_UVIS_F336W",
            "ACS_WFC_F435W",
            "ACS_WFC_F555W",
            "ACS_WFC_F814W",
        )
    return None


def _legus_checks(data: np.ndarray, shift: int) -> bool:
    """Whether the values fit the LEGUS layout with ``shift`` extra columns after x, y."""
    if data.shape[1] < 35 + shift:
        return False
    ra, dec = data[:, 3 + shift], data[:, 4 + shift]
    mags = data[:, 5 + shift : 15 + shift : 2]
    errs = data[:, 6 + shift : 16 + shift : 2]
    cls = data[:, 33 + shift]
    flagged = np.isclose(mags, FLAG_OUTSIDE) | np.isclose(mags, FLAG_NOT_DETECTED)
    ok_mag = flagged | ((mags > _MAG_RANGE[0]) & (mags < _MAG_RANGE[1]))
    ok_err = flagged | ((errs >= 0) & (errs < 50))
    return bool(
        np.all((ra >= 0) & (ra <= 360))
        and np.all(np.abs(dec) <= 90)
        and np.mean(ok_mag) > 0.99
        and np.mean(ok_err) > 0.99
        and np.all((cls >= 0) & (cls <= 4) & (cls == np.round(cls)))
    )


def detect_legus_layout(data: np.ndarray) -> int:
    """Column shift of a LEGUS table: 0 (35/38-column family) or 2 (37/39-column family).

    Parameters
    ----------
    data : numpy.ndarray
        (N, K) numeric table.

    Returns
    -------
    int
        Extra columns between (x, y) and (RA, Dec).

    Raises
    ------
    InputError
        The column count is not 35, 37, 38 or 39, or the values fit no layout or both.
    """
    ncol = data.shape[1]
    if ncol not in (35, 37, 38, 39):
        raise InputError(
            f"{ncol} columns: not a LEGUS cluster-catalogue layout (35, 37, 38 or 39 columns); "
            "give the columns with --columns"
        )
    fits = [s for s in (0, 2) if _legus_checks(data, s)]
    if len(fits) != 1:
        what = "no" if not fits else "more than one"
        raise InputError(
            f"{ncol} columns whose values fit {what} LEGUS layout; give the columns with --columns"
        )
    return fits[0]


def parse_columns(text: str, supported: tuple[str, ...]) -> tuple[dict, dict]:
    """Parse a ``--columns`` map (see the module docstring).

    Returns
    -------
    positions : dict
        ``id``, ``x``, ``y``, ``ra``, ``dec`` → column (str).
    bands : dict
        Band name → (magnitude column, error column), in the order given.

    Raises
    ------
    InputError
        A malformed entry, an unknown or ambiguous band, or no band at all.
    """
    positions, bands = {}, {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        if "=" not in entry:
            raise InputError(f"--columns entry {entry!r} is not key=value")
        key, value = (s.strip() for s in entry.split("=", 1))
        if key.lower() in ("id", "x", "y", "ra", "dec"):
            positions[key.lower()] = value
            continue
        band = _band_name(key, supported)
        if ":" not in value:
            raise InputError(f"--columns entry {entry!r}: a band needs MAG:ERR columns")
        mag, err = (s.strip() for s in value.split(":", 1))
        bands[band] = (mag, err)
    if not bands:
        raise InputError("--columns names no band (BAND=MAG:ERR entries)")
    return positions, bands


def _band_name(key: str, supported: tuple[str, ...]) -> str:
    if key in supported:
        return key
    if _SHORT.match(key):
        hits = [b for b in supported if b.upper().endswith("_" + key.upper())]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise InputError(f"band {key!r} is ambiguous ({', '.join(hits)}); give the full name")
    raise InputError(f"unknown band {key!r} in --columns; supported: {', '.join(supported)}")


def _states(mag: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band states (1 measured, 2 not detected, 0 missing) and per-row bad-value flags."""
    with np.errstate(invalid="ignore"):
        outside = np.isclose(mag, FLAG_OUTSIDE)
        nondet = np.isclose(mag, FLAG_NOT_DETECTED)
        good = (
            np.isfinite(mag)
            & np.isfinite(err)
            & (mag > _MAG_RANGE[0])
            & (mag < _MAG_RANGE[1])
            & (err > 0)
            & (err < 10)
        )
    good &= ~outside & ~nondet
    bad = ~(good | outside | nondet)
    state = np.where(good, 1, np.where(nondet, 2, 0)).astype(np.int8)
    return state, bad.any(axis=1)


def _finish(ids, bands, mag, err, pos, extra, source, layout) -> PhotometryCatalog:
    state, bad = _states(mag, err)
    n_meas = (state == 1).sum(1)
    flags = (
        np.where(bad, ROW_FLAG_BAD_VALUE, 0)
        | np.where(n_meas == 0, ROW_FLAG_NO_BANDS, 0)
        | np.where((n_meas > 0) & (n_meas < 3), ROW_FLAG_FEW_BANDS, 0)
    ).astype(np.int32)
    keep = state == 1
    nan = np.full(len(ids), np.nan)
    return PhotometryCatalog(
        [str(i) for i in ids],
        tuple(bands),
        np.where(keep, mag, np.nan),
        np.where(keep, err, np.nan),
        state,
        flags,
        *(np.asarray(pos.get(k, nan), float) for k in ("x", "y", "ra", "dec")),
        extra=extra,
        source=str(source),
        layout=layout,
    )


def _id_text(values) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, bytes | np.bytes_):
            v = v.decode("utf-8", "replace").strip()
        f = float(v) if isinstance(v, int | float | np.number) else None
        out.append(str(int(f)) if f is not None and f == int(f) else str(v))
    return out


def _read_whitespace(path: Path) -> np.ndarray:
    try:
        data = np.loadtxt(path, ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot read {path} as a whitespace-separated numeric table ({err})"
        ) from err
    if data.size == 0:
        raise InputError(f"{path} holds no rows")
    return data


def read_photometry_catalog(
    path: str | Path,
    *,
    supported: tuple[str, ...],
    bands: tuple[str, ...] | None = None,
    columns: str | None = None,
) -> PhotometryCatalog:
    """Read a cluster catalogue's photometry.

    Parameters
    ----------
    path : str or Path
        A LEGUS ``.tab`` file (or any whitespace table with ``columns``), an ECSV file or a FITS
        table (first table HDU; ``columns`` required for both).
    supported : tuple of str
        Band names the caller can use (for ``columns`` and ``bands``).
    bands : tuple of str, optional
        Band of each of the five LEGUS magnitude columns, bluest first; default from the file
        name (:func:`legus_bands_from_name`).
    columns : str, optional
        Column map (see the module docstring); required for ECSV/FITS and non-LEGUS layouts.

    Returns
    -------
    PhotometryCatalog

    Raises
    ------
    InputError
        Missing or unreadable file, unknown layout, a band that cannot be determined, or a
        column map naming columns the file lacks.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InputError(f"catalogue {path} {what}")
    suffix = path.suffix.lower()
    is_table = suffix in (".ecsv", ".fits", ".fit", ".fts") or path.name.lower().endswith(
        ".fits.gz"
    )
    if is_table:
        if columns is None:
            raise InputError(
                f"{path}: an ECSV/FITS catalogue needs --columns (e.g. "
                "'id=ID,ra=RA,dec=DEC,F555W=m555:e555,...')"
            )
        return _read_table(path, supported, columns)
    data = _read_whitespace(path)
    if columns is not None:
        return _read_numbered(path, data, supported, columns)
    shift = detect_legus_layout(data)
    if bands is None:
        bands = legus_bands_from_name(path.name)
        if bands is None:
            raise InputError(
                f"{path}: cannot tell the five bands from the file name; give them with --bands "
                "(bluest first, e.g. WFC3_UVIS_F275W,WFC3_UVIS_F336W,WFC3_UVIS_F438W,"
                "WFC3_UVIS_F555W,WFC3_UVIS_F814W)"
            )
    bands = tuple(bands)
    if len(bands) != 5:
        raise InputError(f"--bands: a LEGUS table has 5 magnitude columns, got {len(bands)} bands")
    for b in bands:
        if b not in supported:
            raise InputError(f"--bands: unknown band {b!r}; supported: {', '.join(supported)}")
    mag = data[:, 5 + shift : 15 + shift : 2]
    err = data[:, 6 + shift : 16 + shift : 2]
    pos = {"x": data[:, 1], "y": data[:, 2], "ra": data[:, 3 + shift], "dec": data[:, 4 + shift]}
    extra = {k: data[:, i + shift] for k, i in LEGUS_EXTRA.items()}
    return _finish(
        _id_text(data[:, 0]), bands, mag, err, pos, extra, path, f"legus-{data.shape[1]}"
    )


def _read_numbered(path: Path, data: np.ndarray, supported, columns: str) -> PhotometryCatalog:
    positions, band_cols = parse_columns(columns, supported)

    def col(text: str, what: str) -> np.ndarray:
        try:
            k = int(text)
        except ValueError:
            raise InputError(
                f"--columns {what}={text!r}: a whitespace table's columns are 1-based numbers"
            ) from None
        if not 1 <= k <= data.shape[1]:
            raise InputError(f"--columns {what}={k}: {path} has columns 1–{data.shape[1]}")
        return data[:, k - 1]

    mag = np.stack([col(m, b) for b, (m, _) in band_cols.items()], 1)
    err = np.stack([col(e, b) for b, (_, e) in band_cols.items()], 1)
    pos = {k: col(v, k) for k, v in positions.items() if k != "id"}
    ids = _id_text(col(positions["id"], "id")) if "id" in positions else _row_ids(len(data))
    return _finish(ids, tuple(band_cols), mag, err, pos, {}, path, "columns")


def _row_ids(n: int) -> list[str]:
    return [str(i + 1) for i in range(n)]


def _read_table(path: Path, supported, columns: str) -> PhotometryCatalog:
    from astropy.table import Table

    try:
        table = Table.read(path)
    except Exception as err:  # astropy raises many types for unreadable files
        raise InputError(
            f"cannot read {path} as an ECSV/FITS table ({type(err).__name__}: {err})"
        ) from err
    positions, band_cols = parse_columns(columns, supported)

    def col(name: str, numeric: bool = True) -> np.ndarray:
        if name not in table.colnames:
            raise InputError(
                f"--columns names {name!r}, which {path} lacks; its columns: {', '.join(table.colnames)}"
            )
        values = table[name]
        if not numeric:
            return np.asarray(values)
        filled = values.filled(np.nan) if hasattr(values, "filled") else values
        try:
            return np.asarray(filled, dtype=float)
        except (TypeError, ValueError) as err:
            raise InputError(f"column {name!r} of {path} is not numeric") from err

    mag = np.stack([col(m) for m, _ in band_cols.values()], 1)
    err = np.stack([col(e) for _, e in band_cols.values()], 1)
    pos = {k: col(v) for k, v in positions.items() if k != "id"}
    ids = _id_text(col(positions["id"], False)) if "id" in positions else _row_ids(len(table))
    return _finish(ids, tuple(band_cols), mag, err, pos, {}, path, "columns")
