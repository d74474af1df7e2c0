"""Absolute Vega magnitudes of stars in HST and Bessell bands from the shipped bolometric-correction table.

This module owns the supported band names, the shipped BC table ``simulators/tables/bc_hst.npz``
(reconstructed from the MIST C3K BCs by :mod:`simulators.tables.sedfit`, see its docstring and
``simulators/tables/PROVENANCE.md``), its interpolation, and the conversion

    M_band = M_bol − BC_band(Teff, log g, [Fe/H], A_V),   M_bol = 4.74 − 2.5 log10(L / L☉).

It works in numpy (it is used once per population build, never per simulated star) and must not
know about ages, IMFs or images. A pure blackbody exists only as the explicitly named
:func:`blackbody_magnitudes` (for comparison and as a fallback outside the table); it is never used
by default.

Interpolation: linear in log10 Teff and in log g between grid nodes (values outside the grid are
clamped to its edge: the grid spans 2500 K–1e6 K and log g −4…9.5, wider than any live star of the
shipped isochrones except the very coolest pre-main-sequence/TP-AGB points below 2500 K), linear in
[Fe/H] between the shipped nodes, and linear in A_V between the grid's A_V nodes (0–6 mag, R_V = 3.1).

Extinction law (``law=``, ``rv=``): the default ``"mist"`` is the BC grid's own A_V axis (MIST C3K,
R_V = 3.1). It is Cardelli, Clayton & Mathis (1989) only in the bands MIST tabulates: in the HST bands it
is that law as carried through the per-node SED reconstruction, which overestimates the near-UV
extinction (A_F275W/A_V 2.24, A_F336W/A_V 1.67 against CCM89's 2.03, 1.63); see :data:`LAW_DESCRIPTIONS`.
The other laws (``"F99"`` at R_V 2.0, 2.5, 3.1, 4.0, 5.0, ``"G23"`` at 2.5, 3.1, 4.0; ``"CCM89"`` at 3.1) come from
``extinction_laws.npz`` (built by :mod:`simulators.tables.reddening`: each node's reconstructed SED
reddened by the ``dust_extinction`` law and integrated through the same curves) on the same nodes and
A_V axis, as BC(A_V) = BC_mist(A_V = 0) − A_band^law(A_V); it is loaded only when such a law is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .errors import OutOfGridError, SimulatorError, UnknownBandError
from .tables import table_path

__all__ = [
    "SUPPORTED_BANDS",
    "MBOL_SUN",
    "DEFAULT_LAW",
    "LAW_DESCRIPTIONS",
    "RV_DEFAULT",
    "check_bands",
    "PhotometryTable",
    "get_photometry_table",
    "absolute_magnitudes",
    "blackbody_magnitudes",
]

#: Band names accepted everywhere in the simulator (Vega magnitudes).
SUPPORTED_BANDS: tuple[str, ...] = (
    "WFC3_UVIS_F275W",
    "WFC3_UVIS_F336W",
    "WFC3_UVIS_F438W",
    "WFC3_UVIS_F555W",
    "WFC3_UVIS_F814W",
    "ACS_WFC_F435W",
    "ACS_WFC_F475W",
    "ACS_WFC_F606W",
    "ACS_WFC_F814W",
    "WFC3_IR_F110W",
    "WFC3_IR_F160W",
    "Bessell_U",
    "Bessell_B",
    "Bessell_V",
    "Bessell_R",
    "Bessell_I",
)
#: Bolometric magnitude of the Sun (IAU 2015 B2 / MIST convention).
MBOL_SUN = 4.74
PHOTOMETRY_TABLE = "bc_hst.npz"
EXTINCTION_TABLE = "extinction_laws.npz"
#: Default extinction law: the BC grid's own A_V axis (MIST C3K, R_V = 3.1; see :data:`LAW_DESCRIPTIONS`).
DEFAULT_LAW = "mist"
#: What each extinction law is, with the evidence for the default's identity. Figures: A_band/A_V at
#: A_V = 1, median over the 376 (Teff, log g) nodes of the BC grid that solar MIST isochrones visit.
LAW_DESCRIPTIONS: dict[str, str] = {
    "mist": (
        "MIST C3K BC-grid A_V axis (R_V = 3.1), not exactly CCM89 in the HST UV bands. In MIST's own bands "
        "(GALEX FUV/NUV, SDSS ugriz, Bessell UBVRI, 2MASS JHKs) it is CCM89 at R_V = 3.1: CCM89 applied to "
        "the reconstructed A_V = 0 SEDs reproduces it to a median 0.006 mag or less per band and an rms "
        "0.014 mag over the nodes (O94 0.016, F19 0.025, F99 0.037, G23 0.047 mag). The HST bands "
        "come from a smooth SED fitted to each reddened node separately, which cannot follow the 2175 A "
        "bump between GALEX NUV and u: A_F275W/A_V = 2.24 and A_F336W/A_V = 1.67 against 2.03 and 1.63 "
        "for CCM89 on the same SEDs (law='CCM89'); CCM89 sent through the same reconstruction gives "
        "2.21 and 1.68, so the excess is the reconstruction's, not a different law. F438W to F160W agree "
        "with CCM89 within 0.01 mag (median)."
    ),
    "CCM89": "Cardelli, Clayton & Mathis 1989 (dust_extinction CCM89) applied to the reconstructed SEDs",
    "F99": "Fitzpatrick 1999 (dust_extinction F99) applied to the reconstructed SEDs",
    "G23": "Gordon et al. 2023 (dust_extinction G23) applied to the reconstructed SEDs",
}
#: Default ratio of total to selective extinction.
RV_DEFAULT = 3.1


def check_bands(bands: Sequence[str] | str) -> tuple[str, ...]:
    """Validate band names.

    Parameters
    ----------
    bands : str or sequence of str

    Returns
    -------
    tuple of str

    Raises
    ------
    UnknownBandError
        If any band is not in :data:`SUPPORTED_BANDS` (the message lists the valid names).
    """
    bands = (bands,) if isinstance(bands, str) else tuple(bands)
    bad = [b for b in bands if b not in SUPPORTED_BANDS]
    if bad or not bands:
        raise UnknownBandError(
            f"unsupported band(s) {bad or '(none given)'}; supported bands: {', '.join(SUPPORTED_BANDS)}"
        )
    return bands


class PhotometryTable:
    """The shipped bolometric-correction table BC(Teff, log g, [Fe/H], A_V, band), Vega system.

    Attributes
    ----------
    table_id : str
        Identifier recorded in model cards (source, method version, [Fe/H] nodes).
    bands : tuple of str
    feh : ndarray
        [Fe/H] nodes (dex).
    teff : ndarray
        Teff nodes (K).
    logg : ndarray
        log g nodes (cgs).
    av : ndarray
        A_V nodes (mag; shared by every extinction law).
    """

    def __init__(self, path=None, extinction_path=None):
        self._ext_path = extinction_path
        self._ext: dict | None = None  # extinction_laws.npz, loaded on first use
        self._law_cache: dict = {}  # BC arrays per extinction-law index
        with np.load(path or table_path(PHOTOMETRY_TABLE), allow_pickle=False) as d:
            self.bc = d["bc"]
            self.feh, self.teff, self.logg, self.av = d["feh"], d["teff"], d["logg"], d["av"]
            self.bands = tuple(str(b) for b in d["bands"])
            self.table_id = str(d["table_id"])
        self.log_teff = np.log10(self.teff)
        # fill the rare NaN nodes (none in the shipped grid) along log g so that interpolation never returns NaN
        if np.isnan(self.bc).any():
            bc = self.bc
            for idx in zip(*np.nonzero(np.isnan(bc)), strict=False):
                line = bc[idx[0], idx[1], :, idx[3], idx[4]]
                ok = np.isfinite(line)
                if ok.any():
                    bc[idx] = np.interp(self.logg[idx[2]], self.logg[ok], line[ok])

    def extinction_laws(self) -> dict[str, tuple[float, ...]]:
        """Available extinction laws and their R_V values, ``{"mist": (3.1,), "F99": (2.0, 2.5, 3.1, 4.0, 5.0), …}``."""
        out = {DEFAULT_LAW: (RV_DEFAULT,)}
        ext = self._load_extinction(required=False)
        if ext is not None:
            for name, rv in zip(ext["laws"], ext["rv"], strict=True):
                out.setdefault(name, ())
                out[name] = out[name] + (float(rv),)
        return out

    def extinction_table_id(self, law: str = DEFAULT_LAW, rv: float = RV_DEFAULT) -> str | None:
        """Identifier of the extinction-law table behind ``law``/``rv`` (``None`` for the grid's own axis)."""
        name, _ = self._law_index(law, rv)
        if name == DEFAULT_LAW:
            return None
        return f"{self._ext['table_id']}:{name}/Rv{float(rv):.2f}"

    def check_law(self, law: str = DEFAULT_LAW, rv: float = RV_DEFAULT) -> str:
        """Canonical name of an available extinction law (case-insensitive input).

        Raises
        ------
        OutOfGridError
            Unknown law, or an R_V not shipped for it (the message lists the available ones).
        """
        return self._law_index(law, rv)[0]

    def _load_extinction(self, required: bool = True) -> dict | None:
        if self._ext is None:
            try:
                path = self._ext_path or table_path(EXTINCTION_TABLE)
            except SimulatorError:
                if required:
                    raise
                return None
            with np.load(path, allow_pickle=False) as d:
                axes = str(d["axes"]).split(",")
                order = [axes.index(a) for a in ("law", "feh", "teff", "logg", "av", "band")]
                ext = {
                    "a_band": np.ascontiguousarray(d["a_band"].transpose(order)),
                    "laws": tuple(str(x) for x in d["laws"]),
                    "rv": np.asarray(d["rv"], float),
                    "bands": tuple(str(b) for b in d["bands"]),
                    "table_id": str(d["table_id"]),
                }
                same = (
                    ext["bands"] == self.bands
                    and np.allclose(d["feh"], self.feh)
                    and np.allclose(d["teff"], self.teff)
                    and np.allclose(d["logg"], self.logg)
                    and np.allclose(d["av"], self.av)
                )
            if not same:
                raise SimulatorError(
                    f"{EXTINCTION_TABLE} does not match the nodes of {PHOTOMETRY_TABLE}; rebuild it with "
                    "`python -m simulators.tables.build --only extinction`"
                )
            self._ext = ext
        return self._ext

    def _law_index(self, law: str, rv: float) -> tuple[str, int | None]:
        """Canonical law name and its index in the extinction table (``None`` for the grid axis).

        Raises
        ------
        OutOfGridError
            Unknown law, or an R_V not shipped for it (the message lists the available ones).
        """
        key = str(law).strip().lower()
        rv = float(rv)
        if key == DEFAULT_LAW:
            if abs(rv - RV_DEFAULT) <= 1e-6:
                return DEFAULT_LAW, None
        else:
            ext = self._load_extinction(required=False)
            if ext is not None:
                for i, (name, r) in enumerate(zip(ext["laws"], ext["rv"], strict=True)):
                    if name.lower() == key and abs(r - rv) <= 1e-6:
                        return name, i
        avail = "; ".join(
            f"{n} (R_V {', '.join(f'{r:g}' for r in rs)})"
            for n, rs in self.extinction_laws().items()
        )
        raise OutOfGridError(
            f"extinction law {law!r} with R_V = {rv:g} is not available; available laws: {avail}. "
            "Other laws or R_V values need a rebuilt table (simulators/tables/reddening.py)"
        )

    def _law_bc(self, law: str, rv: float) -> np.ndarray:
        """BC array (feh, teff, logg, av, band) for an extinction law: BC_mist(A_V = 0) − A_band^law(A_V)."""
        name, i = self._law_index(law, rv)
        if i is None:
            return self.bc
        if i not in self._law_cache:
            a = self._load_extinction()["a_band"][i]
            self._law_cache[i] = (self.bc[:, :, :, :1, :] - a).astype(np.float32)
        return self._law_cache[i]

    def _feh_weights(self, feh: float) -> list[tuple[int, float]]:
        f = self.feh
        if not (f[0] - 1e-9 <= feh <= f[-1] + 1e-9):
            raise OutOfGridError(
                f"[Fe/H] = {feh} outside the shipped photometry table range {f[0]:+.2f}…{f[-1]:+.2f} dex (nodes {list(map(float, f))})"
            )
        j = int(np.clip(np.searchsorted(f, feh) - 1, 0, len(f) - 2))
        t = float((feh - f[j]) / (f[j + 1] - f[j]))
        return [(j, 1 - t), (j + 1, t)]

    def bc_grid(
        self,
        log_teff,
        log_g,
        feh: float = 0.0,
        bands: Sequence[str] = SUPPORTED_BANDS,
        *,
        law: str = DEFAULT_LAW,
        rv: float = RV_DEFAULT,
    ) -> np.ndarray:
        """Bolometric corrections on all A_V nodes.

        Parameters
        ----------
        log_teff, log_g : array_like, shape (N,)
            log10 Teff / K and log10 g / (cm s⁻²).
        feh : float
            [Fe/H] (dex), within the shipped nodes.
        bands : sequence of str
        law : str
            Extinction law: ``"mist"`` (the grid's own A_V axis, default), ``"F99"``, ``"G23"``, ``"CCM89"``
            (see :meth:`extinction_laws`).
        rv : float
            R_V of the law (default 3.1).

        Returns
        -------
        ndarray, shape (N, n_av, n_band)
            BC = M_bol − M_band in mag at ``self.av``.

        Raises
        ------
        OutOfGridError
            [Fe/H] outside the shipped nodes, or an unavailable law/R_V.
        """
        bands = check_bands(bands)
        table = self._law_bc(law, rv)
        bi = [self.bands.index(b) for b in bands]
        lt = np.clip(np.asarray(log_teff, float).ravel(), self.log_teff[0], self.log_teff[-1])
        lg = np.clip(np.asarray(log_g, float).ravel(), self.logg[0], self.logg[-1])
        it = np.clip(np.searchsorted(self.log_teff, lt) - 1, 0, len(self.teff) - 2)
        ig = np.clip(np.searchsorted(self.logg, lg) - 1, 0, len(self.logg) - 2)
        tt = ((lt - self.log_teff[it]) / (self.log_teff[it + 1] - self.log_teff[it]))[:, None, None]
        tg = ((lg - self.logg[ig]) / (self.logg[ig + 1] - self.logg[ig]))[:, None, None]
        out = 0.0
        for jf, wf in self._feh_weights(feh):
            if wf == 0.0:
                continue
            sub = table[jf][..., bi]  # (teff, logg, av, band)
            out = out + wf * (
                (1 - tt) * (1 - tg) * sub[it, ig]
                + tt * (1 - tg) * sub[it + 1, ig]
                + (1 - tt) * tg * sub[it, ig + 1]
                + tt * tg * sub[it + 1, ig + 1]
            )
        return np.asarray(out, dtype=np.float64)

    def bolometric_corrections(
        self,
        log_teff,
        log_g,
        feh: float = 0.0,
        av=0.0,
        bands: Sequence[str] = SUPPORTED_BANDS,
        *,
        law: str = DEFAULT_LAW,
        rv: float = RV_DEFAULT,
    ) -> np.ndarray:
        """Bolometric corrections BC = M_bol − M_band (mag) at given A_V (linear between A_V nodes).

        Parameters
        ----------
        log_teff, log_g : array_like (N,)
        feh : float
        av : float or array_like (N,)
            V-band extinction in mag, 0 ≤ A_V ≤ 6 (the law's own A_V normalisation).
        bands : sequence of str
        law : str
            ``"mist"`` (default: the grid's A_V axis, R_V = 3.1), ``"F99"``, ``"G23"`` or ``"CCM89"``.
        rv : float
            R_V of the law (default 3.1; F99 ships 2.0, 2.5, 3.1, 4.0, 5.0, G23 2.5, 3.1, 4.0; CCM89 and mist 3.1 only).

        Returns
        -------
        ndarray (N, n_band)

        Raises
        ------
        OutOfGridError
            A_V outside 0–6 mag, [Fe/H] outside the shipped nodes, or an unavailable law/R_V (the
            message lists the available ones).
        """
        grid = self.bc_grid(log_teff, log_g, feh, bands, law=law, rv=rv)
        av = np.broadcast_to(np.asarray(av, float), (grid.shape[0],))
        if av.size and (
            av.min() < self.av[0] - 1e-9
            or av.max() > self.av[-1] + 1e-9
            or not np.all(np.isfinite(av))
        ):
            raise OutOfGridError(
                f"A_V must lie in {self.av[0]}–{self.av[-1]} mag; got {av.min()}–{av.max()}"
            )
        j = np.clip(np.searchsorted(self.av, av) - 1, 0, len(self.av) - 2)
        t = ((av - self.av[j]) / (self.av[j + 1] - self.av[j]))[:, None]
        rows = np.arange(grid.shape[0])
        return (1 - t) * grid[rows, j] + t * grid[rows, j + 1]


@functools.lru_cache(maxsize=2)
def get_photometry_table() -> PhotometryTable:
    """Cached shipped :class:`PhotometryTable`."""
    return PhotometryTable()


def absolute_magnitudes(
    log_L,
    log_teff,
    log_g,
    bands: Sequence[str] = ("Bessell_V",),
    *,
    feh: float = 0.0,
    av=0.0,
    table: PhotometryTable | None = None,
    law: str = DEFAULT_LAW,
    rv: float = RV_DEFAULT,
) -> np.ndarray:
    """Absolute Vega magnitudes of stars.

    Parameters
    ----------
    log_L : array_like (N,)
        log10 L / L☉.
    log_teff : array_like (N,)
        log10 Teff / K.
    log_g : array_like (N,)
        log10 g / (cm s⁻²).
    bands : sequence of str
        Names from :data:`SUPPORTED_BANDS`.
    feh : float
        [Fe/H] in dex (within the shipped photometry nodes, −1…+0.5).
    av : float or array_like (N,)
        Extinction A_V in mag (0–6), applied through the SED-consistent grid.
    table : PhotometryTable, optional
        Defaults to the shipped table.
    law, rv : str, float
        Extinction law and R_V (default: the grid's own A_V axis, R_V = 3.1); see
        :meth:`PhotometryTable.bolometric_corrections`.

    Returns
    -------
    ndarray (N, n_band)
        Absolute magnitudes (mag, Vega).

    Examples
    --------
    >>> m = absolute_magnitudes([0.0], [np.log10(5772.0)], [4.44], ["Bessell_V"])
    >>> abs(float(m[0, 0]) - 4.81) < 0.05
    True
    """
    table = table or get_photometry_table()
    log_L = np.asarray(log_L, float).ravel()
    bc = table.bolometric_corrections(log_teff, log_g, feh, av, bands, law=law, rv=rv)
    return (MBOL_SUN - 2.5 * log_L)[:, None] - bc


def blackbody_magnitudes(log_L, log_teff, bands: Sequence[str]) -> np.ndarray:
    """Absolute Vega magnitudes of pure blackbodies (explicit fallback/comparison only; errors of
    0.1–3 mag against real atmospheres, see ``benchmarks/results/photometry.md``).

    Needs the build-time filter curves (``astro-sedpy``, ``pyphot``) and is therefore not usable
    offline without them.

    Parameters
    ----------
    log_L, log_teff : array_like (N,)
    bands : sequence of HST band names (Bessell bands are not available here)

    Returns
    -------
    ndarray (N, n_band)
    """
    from .tables import sedfit

    bands = check_bands(bands)
    spec = dict(sedfit.HST_BANDS)
    missing = [b for b in bands if b not in spec]
    if missing:
        raise UnknownBandError(
            f"blackbody magnitudes are available for the HST bands only, not {missing}"
        )
    W = sedfit.band_weights([spec[b] for b in bands])
    ref = sedfit.ref_integrals([spec[b] for b in bands], ["Vega"] * len(bands))
    teff = 10 ** np.asarray(log_teff, float).ravel()
    bc = sedfit.BC_CONST + 2.5 * np.log10(sedfit.bb_shape(teff) @ W.T / ref[None, :])
    return (MBOL_SUN - 2.5 * np.asarray(log_L, float).ravel())[:, None] - bc
