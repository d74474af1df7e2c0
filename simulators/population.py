"""Stellar populations for the renderer: absolute magnitudes of live stars vs (log age, initial mass, A_V).

This module owns turning the shipped isochrone and photometry tables into fast, batched torch
look-ups: per-star absolute Vega magnitudes with SED-consistent extinction, the maximum live mass,
and IMF-expected (smooth) flux of the stars below a mass threshold. It must not draw stars, place
them, or know about pixels, PSFs or noise (that is :mod:`simulators.render`).

Build (once, a few seconds; numpy)
----------------------------------
1. Isochrones on a fine log-age grid (default step 0.01 dex) by EEP-matched interpolation between the
   0.05-dex nodes (:meth:`simulators.isochrones.IsochroneGrid.isochrone`); each is strictly
   increasing in initial mass.
2. Bolometric corrections of every isochrone row from the shipped photometry table
   (:meth:`simulators.photometry.PhotometryTable.bolometric_corrections`: MIST C3K BCs reconstructed
   into HST bands); M = M_bol − BC with M_bol = 4.74 − 2.5 log L/L☉.
3. Extinction per row and band as a cubic without constant term, A(A_V) = c1 A_V + c2 A_V² + c3 A_V³,
   fitted on the A_V nodes (0–6 mag) of the selected law by
   :func:`simulators.extinction.extinction_polynomial` — by default the BC grid's own A_V axis
   (MIST C3K, R_V = 3.1: CCM89 in MIST's bands, but A_F275W/A_V 2.24 instead of CCM89's 2.03 after the
   SED reconstruction; see :data:`simulators.photometry.LAW_DESCRIPTIONS`); ``extinction_law="F99" | "G23" | "CCM89"`` with ``rv`` selects a
   ``dust_extinction`` law applied to each node's reconstructed SED — so each star's extinction
   follows its own SED. The largest fit error over all rows is kept in
   :attr:`StellarPopulation.extinction_fit_error`.
4. For smooth light, the IMF-expected cumulative flux of all rows up to each row, per 1 M☉ of total
   initial mass, on A_V ∈ {0, 1, …, 6}: between rows j−1 and j the exact IMF number of stars
   times the logarithmic mean of the two fluxes (exact when magnitudes vary linearly in mass and
   the IMF weight is flat inside the segment). Its log10 is fitted per row and band by a cubic in A_V
   (error kept in :attr:`StellarPopulation.cumulative_fit_error`, in dex).

Evaluate (batched torch, any device)
------------------------------------
For star lists and unresolved light the log age snaps to the nearest fine-grid age (≤ 0.005 dex away
at the default step); :meth:`StellarPopulation.integrated_magnitudes` instead interpolates the
log flux linearly between the two neighbouring ages, so it is continuous and differentiable in
log age (the exact-likelihood reference needs its gradient). Initial masses
are located by ``torch.searchsorted`` in that isochrone and magnitudes and extinction coefficients
are interpolated linearly in initial mass. Masses below the isochrone's lowest mass (≈0.1 M☉) take
its faintest row; masses above the largest live mass are dark remnants (+inf mag). Tables are
float32 on the device: in the late, nearly degenerate phases (e.g. TP-AGB rows 1e-6 M☉ apart) the
mass resolution is one float32 step, which is also the resolution of float32 IMF draws.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .errors import IncompletePhasesWarning, OutOfGridError, SimulatorError
from .extinction import extinction_polynomial
from .imf import IMF, get_imf
from .isochrones import check_phase_coverage, get_isochrone_grid
from .photometry import (
    DEFAULT_LAW,
    MBOL_SUN,
    RV_DEFAULT,
    SUPPORTED_BANDS,
    check_bands,
    get_photometry_table,
)

__all__ = ["StellarPopulation", "SUPPORTED_BANDS"]

log = logging.getLogger(__name__)

_CUM_AV = np.linspace(0.0, 6.0, 7)
_AV_MAX = 6.0
_CHUNK_ROWS = 65536


def _unit_mass(m: torch.Tensor) -> torch.Tensor:
    """Strictly increasing map of masses m ≥ 0 (M☉, +inf allowed) into [0, 1]: m / (1 + m)."""
    return torch.where(torch.isinf(m), torch.ones_like(m), m / (1.0 + m))


_TABLES: dict[tuple, dict] = {}
_TABLES_MAX = 50  # the 2 IMFs x 25 nodes of a marginalised simulator (simulators.nuisance)
_PHOTOMETRY: dict[tuple, dict] = {}
_PHOTOMETRY_MAX = 25  # one IMF's nodes: the other IMF's populations reuse their photometry


def _imf_fingerprint(imf: IMF) -> tuple:
    """Hashable value identity of an IMF: its class, mass limits and CDF on a fixed log-mass grid.

    Two IMFs with the same limits but different shapes (e.g. power laws with other slopes) get
    different fingerprints, so they never share cached tables.
    """
    grid = torch.logspace(math.log10(imf.m_min), math.log10(imf.m_max), 129, dtype=torch.float64)
    cdf = np.round(imf.cdf(grid).double().cpu().numpy(), 10)
    return (type(imf).__name__, float(imf.m_min), float(imf.m_max), tuple(cdf.tolist()))


def _build(
    bands: tuple,
    feh: float,
    family: str,
    imf: IMF,
    lo: float,
    hi: float,
    age_step: float,
    law: str = DEFAULT_LAW,
    rv: float = RV_DEFAULT,
) -> dict:
    """Numpy look-up tables of a population (cached: the same request is built once per process).

    The cache is keyed by value (the IMF by :func:`_imf_fingerprint`) and keeps the 50 most
    recently built populations; the IMF-independent photometry of the 25 most recent is shared
    by populations that differ only in their IMF.
    """
    key = (bands, feh, family, _imf_fingerprint(imf), lo, hi, age_step, law, rv)
    return _recently_used(
        _TABLES,
        _TABLES_MAX,
        key,
        lambda: _build_uncached(bands, feh, family, imf, lo, hi, age_step, law, rv),
    )


def _recently_used(cache: dict, limit: int, key, build):
    """``cache[key]``, from ``build()`` if absent; the cache keeps the ``limit`` most recently
    used entries (insertion order = use order)."""
    if key in cache:
        cache[key] = cache.pop(key)
    else:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


def _build_uncached(
    bands: tuple,
    feh: float,
    family: str,
    imf: IMF,
    lo: float,
    hi: float,
    age_step: float,
    law: str = DEFAULT_LAW,
    rv: float = RV_DEFAULT,
) -> dict:
    phot = _recently_used(
        _PHOTOMETRY,
        _PHOTOMETRY_MAX,
        (bands, feh, family, lo, hi, age_step, law, rv),
        lambda: _photometry_tables(bands, feh, family, lo, hi, age_step, law, rv),
    )
    # --- cumulative IMF-weighted flux (smooth light) ------------------------------------
    cum_coef, cum_err = _cumulative(imf, phot["mass"], phot["mags"], phot["coef"])
    log.info(
        "StellarPopulation %s built: %d ages x %d rows, extinction cubic max err %.3f mag, "
        "cumulative fit max err %.4f dex",
        phot["bands"],
        *phot["mass"].shape,
        phot["extinction_fit_error"],
        cum_err,
    )
    return {**phot, "cum": cum_coef, "cumulative_fit_error": cum_err}


def _photometry_tables(
    bands: tuple,
    feh: float,
    family: str,
    lo: float,
    hi: float,
    age_step: float,
    law: str = DEFAULT_LAW,
    rv: float = RV_DEFAULT,
) -> dict:
    """The IMF-independent part of a population's tables: per-age rows of initial mass,
    magnitudes and extinction coefficients, the live-mass limits and the table id."""
    bands = check_bands(bands)
    grid = get_isochrone_grid(family)
    a_lo, a_hi = float(grid.age_values[0]), float(grid.age_values[-1])
    if not (a_lo - 1e-9 <= lo < hi <= a_hi + 1e-9):
        raise OutOfGridError(
            f"log_age_range ({lo}, {hi}) must lie within [{a_lo}, {a_hi}] (log10 yr) with low < high"
        )
    n_age = int(round((hi - lo) / age_step)) + 1
    ages = np.round(lo + age_step * np.arange(n_age), 6)
    ages[-1] = min(ages[-1], hi)
    with warnings.catch_warnings():  # gaps are reported once, by StellarPopulation
        warnings.simplefilter("ignore", IncompletePhasesWarning)
        isos = [grid.isochrone(float(a), feh=feh) for a in ages]

    # --- photometry of every row (shipped BC table; SED-consistent extinction cubic) --------
    table = get_photometry_table()
    lt = np.concatenate([i.log_Teff for i in isos]).astype(np.float64)
    lg = np.concatenate([i.log_g for i in isos]).astype(np.float64)
    mbol = MBOL_SUN - 2.5 * np.concatenate([i.log_L for i in isos]).astype(np.float64)
    m0 = np.empty((len(lt), len(bands)))
    coef = np.empty((len(lt), len(bands), 3))
    ext_err = 0.0
    for s in range(0, len(lt), _CHUNK_ROWS):  # bounded memory for many bands
        sl = slice(s, s + _CHUNK_ROWS)
        m0[sl] = mbol[sl, None] - table.bolometric_corrections(lt[sl], lg[sl], feh, 0.0, bands)
        coef[sl], err = extinction_polynomial(
            lt[sl], lg[sl], bands, feh=feh, degree=3, table=table, law=law, rv=rv
        )
        ext_err = max(ext_err, err)
    if not (np.all(np.isfinite(m0)) and np.all(np.isfinite(coef))):
        raise SimulatorError(
            "photometry table gives non-finite magnitudes for some isochrone rows; rebuild the tables"
        )

    # --- pad per age into (n_age, L) tables --------------------------------------------
    lens = np.array([len(i.initial_mass) for i in isos])
    L = int(lens.max())
    mass = np.full((n_age, L), np.inf)
    mags = np.zeros((n_age, L, len(bands)))
    cf = np.zeros((n_age, L, len(bands), 3))
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    for a, (s, n) in enumerate(zip(starts, lens, strict=True)):
        mass[a, :n] = isos[a].initial_mass
        mags[a, :n], cf[a, :n] = m0[s : s + n], coef[s : s + n]
        mags[a, n:], cf[a, n:] = m0[s + n - 1], coef[s + n - 1]  # padding (masked as remnants)
    max_mass = np.array([i.initial_mass[-1] for i in isos])

    phot_id = table.table_id
    table_id = (
        f"{phot_id}|{family}:{grid.source.split(' sha256')[0]}|feh{feh:+.2f}"
        f"|age{lo:.2f}-{hi:.2f}/{age_step:g}"
    )
    # the default (grid A_V axis) keeps the historical id, so existing model cards stay valid
    if law != DEFAULT_LAW:
        table_id += f"|ext:{table.extinction_table_id(law, rv)}"
    return {
        "mass": mass,
        "mags": mags,
        "coef": cf,
        "max_mass": max_mass,
        "ages": ages,
        "bands": bands,
        "table_id": table_id,
        "extinction_fit_error": ext_err,
    }


def _cumulative(imf: IMF, mass, mags, cf, chunk: int = 32):
    """Cubic-in-A_V fits of log10 cumulative flux per 1 M☉ up to each row (row 0 = IMF m_min).

    Vectorised over ages in chunks; padded rows (mass +inf) carry no stars, so their cumulative
    flux equals the last live row's. Returns (coefficients (n_age, L+1, nb, 4), max |fit error| dex).
    """
    n_age, L, nb = mags.shape
    av = _CUM_AV
    V = np.stack([np.ones_like(av), av, av**2, av**3], 1)
    P = torch.as_tensor(np.linalg.pinv(V).T)
    Vt, Va = torch.as_tensor(V.T), torch.as_tensor(V[:, 1:].T)
    m = torch.as_tensor(mass)
    last = torch.where(torch.isfinite(m), m, torch.full_like(m, -1.0)).amax(1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, last)
    mext = torch.cat([torch.minimum(torch.full_like(m[:, :1], imf.m_min), m[:, :1]), m], 1)
    dn = torch.diff(imf.cdf(mext), dim=1) / imf.mean_mass()  # (n_age, L) stars per M☉ per segment
    out = torch.zeros((n_age, L + 1, nb, 4), dtype=torch.float64)
    out[:, 0, :, 0] = -99.0
    err = 0.0
    for a0 in range(0, n_age, chunk):
        sl = slice(a0, min(a0 + chunk, n_age))
        c3 = torch.as_tensor(cf[sl])
        mg = torch.as_tensor(mags[sl])[..., None] + (c3.reshape(-1, 3) @ Va).reshape(
            *c3.shape[:-1], -1
        )  # (c, L, nb, nv)
        f = 10 ** (-0.4 * mg)
        f = torch.cat([f[:, :1], f], 1)
        f0, f1 = f[:, :-1], f[:, 1:]
        ratio = torch.log(f1 / f0)
        safe = torch.where(ratio.abs() < 1e-8, torch.ones_like(ratio), ratio)
        lmean = torch.where(ratio.abs() < 1e-8, 0.5 * (f0 + f1), (f1 - f0) / safe)
        cum = torch.cumsum(dn[sl, :, None, None] * lmean, 1)
        lc = torch.log10(cum.clamp_min(1e-99))
        flat = lc.reshape(-1, lc.shape[-1])
        c = flat @ P  # 2-D GEMMs: (c·L·nb, 4)
        err = max(err, float((c @ Vt - flat).abs().max()))
        c = c.reshape(*lc.shape[:-1], 4)
        out[sl, 1:] = c
    return out.numpy(), err


class StellarPopulation:
    """Absolute Vega magnitudes of live stars vs (log age, initial mass, A_V) for a set of bands.

    Built once from the shipped isochrone and photometry tables; evaluated batched in torch on
    any device.

    Parameters
    ----------
    bands : sequence of str
        Band names (see :data:`SUPPORTED_BANDS`), in the order of the output's last axis.
    feh : float
        [Fe/H] in dex (default 0, solar). Must be a shipped isochrone value (MIST −1, −0.75, −0.5, 0,
        +0.25, +0.5; PARSEC 0) within the photometry table's [Fe/H] range.
    family : {"mist", "parsec"}
        Isochrone family (default MIST v2.5).
    imf : str or IMF
        Initial mass function (``"kroupa"`` default, ``"chabrier"``) used by the smooth-light helpers.
    log_age_range : (float, float)
        log10 age / yr range to pre-compute (within 6.0–10.1).
    device : str or torch.device
        Device of the look-up tables.
    age_step : float
        Fine log-age grid step, dex (default 0.01).
    extinction_law : str
        ``"mist"`` (default: the BC grid's own A_V axis, R_V = 3.1; not CCM89 in F275W/F336W, see
        :data:`simulators.photometry.LAW_DESCRIPTIONS`), ``"F99"``, ``"G23"`` or ``"CCM89"``
        (see :func:`simulators.extinction.available_laws`).
    rv : float
        R_V of the law (default 3.1; F99 and G23 also 2.5 and 4.0).
    on_incomplete_phases : {"warn", "error", "ignore"}
        What to do when the isochrone family lacks evolutionary phases at ages in ``log_age_range``
        (PARSEC here: no AGB at any age, no core-He burning for massive stars at log age 6.5–7.15 or
        for low-mass stars at ≥ 9.25; see :mod:`simulators.isochrones`): one
        :class:`~simulators.errors.IncompletePhasesWarning` naming the gaps (default), an
        :class:`~simulators.errors.IncompletePhasesError`, or nothing. MIST is complete.

    Attributes
    ----------
    bands : tuple of str
    imf : IMF
    table_id : str
        Identifier of the photometry + isochrone tables, for model cards (with ``|ext:<law table>``
        appended only for a non-default extinction law).
    extinction_law : str
        Canonical name of the extinction law.
    rv : float
        R_V of the extinction law.
    log_ages : torch.Tensor
        The fine log-age grid (log10 yr).
    extinction_fit_error : float
        Largest |error| (mag) of the per-star cubic A_band(A_V) against the BC grid's A_V axis.
    cumulative_fit_error : float
        Largest |error| (dex) of the cubic fit of log10 cumulative flux in A_V.

    Raises
    ------
    UnknownBandError
        Unsupported band (the message lists the supported ones).
    OutOfGridError
        Ages or metallicity outside the tables (the message names the valid range), or an
        unavailable extinction law / R_V (the message names the available ones).
    IncompletePhasesError
        With ``on_incomplete_phases="error"``, if the family lacks phases at the requested ages.

    Examples
    --------
    >>> import torch
    >>> pop = StellarPopulation(["Bessell_V"], log_age_range=(9.0, 9.1))
    >>> pop.star_magnitudes(torch.tensor([9.0]), torch.tensor([[1.0]]), torch.tensor([0.0])).shape
    torch.Size([1, 1, 1])
    """

    def __init__(
        self,
        bands: Sequence[str],
        *,
        feh: float = 0.0,
        family: str = "mist",
        imf: str | IMF = "kroupa",
        log_age_range=(6.0, 10.1),
        device="cpu",
        age_step: float = 0.01,
        extinction_law: str = DEFAULT_LAW,
        rv: float = RV_DEFAULT,
        on_incomplete_phases: str = "warn",
    ):
        self.imf = get_imf(imf)
        self.extinction_law = get_photometry_table().check_law(extinction_law, rv)
        self.rv = float(rv)
        self.family, self.feh = family.lower(), float(feh)
        lo, hi = (float(x) for x in log_age_range)
        #: Log-age intervals (log10 yr) whose isochrones lack phases, and what they lack (empty for MIST).
        self.phase_gaps = check_phase_coverage(
            self.family,
            (lo, hi),
            feh=self.feh,
            max_mass=float(self.imf.m_max),
            action=on_incomplete_phases,
        )
        self.age_step = float(age_step)
        built = _build(
            tuple([bands] if isinstance(bands, str) else bands),
            self.feh,
            self.family,
            self.imf,
            lo,
            hi,
            self.age_step,
            self.extinction_law,
            self.rv,
        )
        self.bands, self.table_id = built["bands"], built["table_id"]
        self.extinction_fit_error = built["extinction_fit_error"]
        self.cumulative_fit_error = built["cumulative_fit_error"]
        self._np = built
        self._age0 = float(built["ages"][0])
        self.to(device)

    def to(self, device) -> StellarPopulation:
        """Move the look-up tables to ``device`` (returns self)."""
        self.device = torch.device(device)
        d = self._np
        f32 = dict(dtype=torch.float32, device=self.device)
        self.log_ages = torch.as_tensor(d["ages"], **f32)
        self._mass = torch.as_tensor(d["mass"], **f32).contiguous()
        n_age, L = d["mass"].shape
        nb = len(self.bands)
        self._mags = torch.as_tensor(d["mags"].reshape(n_age * L, nb), **f32)
        self._coef = torch.as_tensor(d["coef"].reshape(n_age * L, nb, 3), **f32)
        self._cum = torch.as_tensor(d["cum"].reshape(n_age * (L + 1), nb, 4), **f32)
        self._mass_ext = torch.cat(
            [torch.full((n_age, 1), self.imf.m_min, **f32).minimum(self._mass[:, :1]), self._mass],
            1,
        ).contiguous()
        self._maxm = torch.as_tensor(d["max_mass"], **f32)
        self._L = L
        # rows of initial masses as one increasing float64 key (age index + m / (1 + m)), so that
        # stars of any ages are located with a single 1-D searchsorted (star_magnitudes_flat)
        ages_idx = torch.arange(n_age, dtype=torch.float64, device=self.device)[:, None]
        self._mass_key = (ages_idx + _unit_mass(self._mass.double())).flatten().contiguous()
        self._whole_k0, self._whole_k1, self._whole_w = self._whole_population_rows()
        return self

    # ------------------------------------------------------------------------------------------
    def _age_index(self, log_age: torch.Tensor) -> torch.Tensor:
        la = torch.as_tensor(log_age, dtype=torch.float32, device=self.device)
        lo, hi = float(self.log_ages[0]), float(self.log_ages[-1])
        half = 0.5 * self.age_step + 1e-6
        if la.numel() and bool(((la < lo - half) | (la > hi + half) | ~torch.isfinite(la)).any()):
            raise OutOfGridError(
                f"log age outside this population's range [{lo:.2f}, {hi:.2f}] (log10 yr)"
            )
        return (
            torch.round((la - self._age0) / self.age_step).long().clamp(0, len(self.log_ages) - 1)
        )

    def _check_av(self, av: torch.Tensor) -> torch.Tensor:
        av = torch.as_tensor(av, dtype=torch.float32, device=self.device)
        if av.numel() and bool(((av < -1e-6) | (av > _AV_MAX + 1e-6) | ~torch.isfinite(av)).any()):
            raise OutOfGridError(f"A_V outside the tabulated range [0, {_AV_MAX}] mag")
        return av.clamp(0.0, _AV_MAX)

    def max_live_mass(self, log_age: torch.Tensor) -> torch.Tensor:
        """Largest initial mass still alive, M☉, shape (B,); heavier stars are dark remnants.

        Parameters
        ----------
        log_age : torch.Tensor
            log10 age / yr, shape (B,).
        """
        return self._maxm[self._age_index(log_age)]

    def star_magnitudes(
        self, log_age: torch.Tensor, initial_mass: torch.Tensor, av: torch.Tensor
    ) -> torch.Tensor:
        """Absolute Vega magnitudes of stars, including their SED-consistent extinction.

        Parameters
        ----------
        log_age : torch.Tensor
            log10 age / yr, shape (B,).
        initial_mass : torch.Tensor
            Initial masses, M☉, shape (B, K); entries ≤ 0 are padding.
        av : torch.Tensor
            V-band extinction A_V, mag, shape (B,), in [0, 6] (law and R_V of this population).

        Returns
        -------
        torch.Tensor
            (B, K, n_band) absolute magnitudes; +inf (zero flux) for remnants and padding.
        """
        m = torch.as_tensor(initial_mass, dtype=torch.float32, device=self.device)
        b, k = m.shape
        per_star = lambda v: torch.as_tensor(v, device=self.device)[:, None].expand(b, k)  # noqa: E731
        mags = self.star_magnitudes_flat(
            per_star(log_age).flatten(), m.flatten(), per_star(av).flatten()
        )
        return mags.reshape(b, k, -1)

    def star_magnitudes_flat(
        self, log_age: torch.Tensor, initial_mass: torch.Tensor, av: torch.Tensor
    ) -> torch.Tensor:
        """Absolute Vega magnitudes of a flat list of stars, each with its own age and extinction.

        The look-up behind :meth:`star_magnitudes`: stars of any ages are located in the age
        rows' mass tables with one 1-D search, so the cost scales with the number of stars, not
        clusters × largest cluster. Masses ≤ 0 (padding) and remnants get +inf.

        Parameters
        ----------
        log_age : torch.Tensor
            log10 age / yr of each star's population, shape (S,).
        initial_mass : torch.Tensor
            Initial masses, M☉, shape (S,).
        av : torch.Tensor
            V-band extinction A_V, mag, shape (S,), in [0, 6].

        Returns
        -------
        torch.Tensor
            (S, n_band) absolute magnitudes; +inf (zero flux) for remnants and masses ≤ 0.
        """
        i = self._age_index(log_age)
        av = self._check_av(av)
        m = torch.as_tensor(initial_mass, dtype=torch.float32, device=self.device)
        key = i.double() + _unit_mass(m.double())
        j = (torch.searchsorted(self._mass_key, key) - i * self._L).clamp(1, self._L - 1)
        k1 = i * self._L + j
        k0 = k1 - 1
        flat = self._mass.view(-1)
        m0, m1 = flat[k0], flat[k1]
        w = ((m - m0) / (m1 - m0).clamp_min(1e-12)).clamp(0.0, 1.0)
        w = torch.where(torch.isfinite(m1), w, torch.zeros_like(w))[:, None]
        mag = torch.lerp(self._mags[k0], self._mags[k1], w)
        c = torch.lerp(self._coef[k0], self._coef[k1], w[..., None])
        a = av[:, None]
        mag = mag + a * (c[..., 0] + a * (c[..., 1] + a * c[..., 2]))
        dark = (m <= 0) | (m > self._maxm[i] * (1 + 1e-6))
        return torch.where(dark[:, None], torch.full_like(mag, float("inf")), mag)

    def unresolved_flux_per_mass(
        self, log_age: torch.Tensor, av: torch.Tensor, mass_threshold: torch.Tensor
    ) -> torch.Tensor:
        """IMF-expected flux of all live stars with initial mass < ``mass_threshold``.

        Parameters
        ----------
        log_age : torch.Tensor
            log10 age / yr, shape (B,).
        av : torch.Tensor
            A_V, mag, shape (B,).
        mass_threshold : torch.Tensor
            Initial-mass threshold, M☉, shape (B,) (``inf`` for the whole population).

        Returns
        -------
        torch.Tensor
            (B, n_band) flux per 1 M☉ of total initial cluster mass, in units where a star of
            absolute magnitude 0 has flux 1 (Σ 10^(−0.4 M)).
        """
        i = self._age_index(log_age)
        av = self._check_av(av)
        t = torch.as_tensor(mass_threshold, dtype=torch.float32, device=self.device).reshape(-1, 1)
        rows = self._mass_ext[i]  # (B, L+1), row 0 = lower IMF limit
        j = torch.searchsorted(rows, t.contiguous()).clamp(1, self._L)  # segment (j-1, j)
        m0, m1 = rows.gather(1, j - 1), rows.gather(1, j)
        finite = torch.isfinite(m1)
        m1c = torch.where(finite, m1, m0)
        cdf = lambda x: self.imf.cdf(x).to(torch.float32)  # noqa: E731
        tc = torch.minimum(torch.maximum(t, m0), m1c)
        w = ((cdf(tc) - cdf(m0)) / (cdf(m1c) - cdf(m0)).clamp_min(1e-30)).clamp(0, 1)
        w = torch.where(finite & (m1c > m0), w, torch.ones_like(w))
        base = (i * (self._L + 1))[:, None]
        k0 = (base + j - 1).squeeze(1)
        k1 = torch.where(finite, base + j, base + j - 1).squeeze(1)
        a = av[:, None]
        poly = lambda c: c[..., 0] + a * (c[..., 1] + a * (c[..., 2] + a * c[..., 3]))  # noqa: E731
        f0, f1 = 10 ** poly(self._cum[k0]), 10 ** poly(self._cum[k1])
        flux = f0 + w * (f1 - f0)
        below = (t[:, 0] <= rows[:, 0])[:, None]
        return torch.where(below, torch.zeros_like(flux), flux)

    def _whole_population_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per fine-grid age node, the cumulative-table rows and weight of the whole population.

        The arithmetic of :meth:`unresolved_flux_per_mass` with an infinite mass threshold, done
        once for every node at set-up: the top live segment (j-1, j) of each node's (L+1)-row mass
        table and the IMF weight inside it.

        Returns
        -------
        tuple of torch.Tensor
            Flat row indices k0, k1 into the cumulative table and the weight w, each (n_age,):
            the whole-population flux is f(k0) + w (f(k1) − f(k0)).
        """
        n_age = self._mass_ext.shape[0]
        top = torch.full((n_age, 1), float("inf"), dtype=torch.float32, device=self.device)
        j = torch.searchsorted(self._mass_ext, top).clamp(1, self._L)  # (n_age, 1)
        m0, m1 = self._mass_ext.gather(1, j - 1), self._mass_ext.gather(1, j)
        finite = torch.isfinite(m1)
        m1c = torch.where(finite, m1, m0)
        c0, c1 = self.imf.cdf(m0).to(torch.float32), self.imf.cdf(m1c).to(torch.float32)
        w = ((c1 - c0) / (c1 - c0).clamp_min(1e-30)).clamp(0, 1)
        w = torch.where(finite & (m1c > m0), w, torch.ones_like(w))
        base = (torch.arange(n_age, device=self.device) * (self._L + 1))[:, None]
        k0 = base + j - 1
        k1 = torch.where(finite, base + j, base + j - 1)
        return k0.squeeze(1), k1.squeeze(1), w.squeeze(1)

    def _whole_flux_at_nodes(self, k: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
        """IMF-expected flux of all live stars at fine-grid age nodes, per 1 M☉ of initial mass.

        Equal to :meth:`unresolved_flux_per_mass` with an infinite mass threshold at the ages
        ``log_ages[k]``, from the rows precomputed by :meth:`_whole_population_rows`; no rounding
        of ages, no range checks and no Python-side branching on values (traceable by
        ``torch.jit.trace``).

        Parameters
        ----------
        k : torch.Tensor
            Fine-grid age indices (long), shape (N,).
        av : torch.Tensor
            A_V, mag, shape (N,), already checked and clamped to [0, 6].

        Returns
        -------
        torch.Tensor
            (N, n_band) flux per 1 M☉ (a star of absolute magnitude 0 has flux 1).
        """
        a = av[:, None]
        poly = lambda c: c[..., 0] + a * (c[..., 1] + a * (c[..., 2] + a * c[..., 3]))  # noqa: E731
        f0 = 10 ** poly(self._cum[self._whole_k0[k]])
        f1 = 10 ** poly(self._cum[self._whole_k1[k]])
        return f0 + self._whole_w[k][:, None] * (f1 - f0)

    def integrated_magnitudes(
        self, log_age: torch.Tensor, av: torch.Tensor, log_mass: torch.Tensor
    ) -> torch.Tensor:
        """Smooth (IMF-expected) absolute magnitudes of a whole population, continuous in age.

        The whole-population flux per unit mass, f(t, A_V) = :meth:`unresolved_flux_per_mass` with
        an infinite threshold, is evaluated at the two fine-grid ages bracketing ``log_age``,
        t_k ≤ log_age < t_(k+1) (``log_ages``, step ``age_step`` dex), and its log is interpolated
        linearly in log age::

            log10 f = (1 − w) log10 f(t_k, A_V) + w log10 f(t_(k+1), A_V),
            w = (log_age − t_k) / (t_(k+1) − t_k),
            M = −2.5 log10 f − 2.5 log_mass.

        The magnitudes are therefore piecewise linear in log age, equal to the tabulated values at
        the grid nodes, and differentiable in log age (the gradient is the slope of the bracketing
        segment; at a node, that of the segment above it), in A_V and in log_mass — as a
        gradient-based sampler such as NUTS needs. Ages within half a step outside the grid are
        held at the end node (zero age gradient there). :meth:`unresolved_flux_per_mass` and
        :meth:`star_magnitudes` still use the nearest node.

        Parameters
        ----------
        log_age : torch.Tensor
            log10 age / yr, shape (B,).
        av : torch.Tensor
            A_V, mag, shape (B,), in [0, 6].
        log_mass : torch.Tensor
            log10 total initial mass / M☉, shape (B,).

        Returns
        -------
        torch.Tensor
            (B, n_band) absolute Vega magnitudes (float32).

        Raises
        ------
        OutOfGridError
            log age more than half a grid step outside this population's range, or A_V outside
            [0, 6] mag.
        """
        la = torch.as_tensor(log_age, dtype=torch.float32, device=self.device).reshape(-1)
        self._age_index(la)  # range check only
        av = self._check_av(av).reshape(-1)
        nodes = self.log_ages
        lac = torch.minimum(torch.maximum(la, nodes[0]), nodes[-1])
        last = nodes.shape[0] - 1
        k = (torch.searchsorted(nodes, lac.detach().contiguous(), right=True) - 1).clamp(
            0, max(last - 1, 0)
        )
        k1 = (k + 1).clamp(max=last)  # == k only for a one-age population
        t0, t1 = nodes[k], nodes[k1]
        w = torch.where(t1 > t0, (lac - t0) / (t1 - t0).clamp_min(1e-12), torch.zeros_like(lac))
        f = self._whole_flux_at_nodes(torch.cat([k, k1]), torch.cat([av, av]))
        logf = torch.log10(f).reshape(2, la.shape[0], -1)
        logf = torch.lerp(logf[0], logf[1], w[:, None])
        lm = torch.as_tensor(log_mass, dtype=torch.float32, device=self.device).reshape(-1)
        return -2.5 * logf - 2.5 * lm[:, None]

    def __repr__(self) -> str:
        return (
            f"StellarPopulation(bands={self.bands}, family={self.family!r}, feh={self.feh:+.2f}, "
            f"imf={self.imf.name!r}, extinction={self.extinction_law}/R_V={self.rv:g}, ages={float(self.log_ages[0]):.2f}-{float(self.log_ages[-1]):.2f})"
        )
