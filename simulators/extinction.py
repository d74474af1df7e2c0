"""Extinction per star per band, consistent with each star's SED, for a selectable law and R_V.

This module owns A_band(A_V; Teff, log g, [Fe/H]) = BC_band(A_V = 0) − BC_band(A_V) and its compact
representation as a polynomial in A_V without constant term, used by the batched population look-ups.
It must not know about ages, IMFs or images.

Laws (``law=``, ``rv=``; see :meth:`simulators.photometry.PhotometryTable.extinction_laws`):

- ``"mist"`` (default, R_V = 3.1 only): the A_V axis of the shipped BC table — each A_V node of the
  MIST C3K grid, reddened by MIST, reconstructed separately. In MIST's own bands that law is Cardelli
  et al. (1989) at R_V = 3.1 (CCM89 on the reconstructed SEDs reproduces it to ≤ 0.006 mag median per
  band); in the HST near-UV it is *not* CCM89: the per-node reconstruction gives A_F275W/A_V = 2.24 and
  A_F336W/A_V = 1.67 where CCM89 gives 2.03 and 1.63 (F438W–F160W within 0.01 mag). Use ``"CCM89"``
  for the law itself; :data:`simulators.photometry.LAW_DESCRIPTIONS` has the evidence.
- ``"F99"`` (Fitzpatrick 1999, PASP 111, 63; R_V 2.0, 2.5, 3.1, 4.0, 5.0), ``"G23"`` (Gordon et al. 2023, ApJ 950,
  86, arXiv:2304.01991; R_V 2.5, 3.1, 4.0) and ``"CCM89"`` (Cardelli, Clayton & Mathis 1989, ApJ 345, 245;
  R_V 3.1): the ``dust_extinction`` law applied to each node's reconstructed A_V = 0 SED and integrated
  through the same band curves (:mod:`simulators.tables.reddening`).

Either way hot and cool stars get their own effective A_band/A_V. A_V is the law's own normalisation
(monochromatic V); the band-integrated A_Bessell_V differs from it by ≲ 3 % (measured in
``tests/test_extinction.py``). Any other law or R_V raises :class:`~simulators.errors.OutOfGridError`
naming the available ones. How much the laws differ from the MIST axis is in
``simulators/tables/PROVENANCE.md`` and ``benchmarks/results/photometry.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .photometry import DEFAULT_LAW, RV_DEFAULT, PhotometryTable, check_bands, get_photometry_table

__all__ = [
    "DEFAULT_LAW",
    "RV_DEFAULT",
    "available_laws",
    "extinction",
    "extinction_polynomial",
    "evaluate_polynomial",
]


def available_laws(table: PhotometryTable | None = None) -> dict[str, tuple[float, ...]]:
    """Extinction laws and R_V values of the shipped tables, e.g. ``{"mist": (3.1,), "F99": (2.0, 2.5, 3.1, 4.0, 5.0), …}``."""
    return (table or get_photometry_table()).extinction_laws()


def extinction(
    log_teff,
    log_g,
    av,
    bands: Sequence[str],
    *,
    feh: float = 0.0,
    rv: float = RV_DEFAULT,
    table: PhotometryTable | None = None,
    law: str = DEFAULT_LAW,
) -> np.ndarray:
    """Extinction A_band (mag) of stars behind a screen of V-band extinction ``av``.

    Parameters
    ----------
    log_teff, log_g : array_like (N,)
        log10 Teff / K and log10 g / (cm s⁻²) of the stars.
    av : float or array_like (N,)
        A_V in mag, 0–6.
    bands : sequence of str
    feh : float
        [Fe/H] (dex).
    rv : float
        R_V of the law (default 3.1; see :func:`available_laws`).
    table : PhotometryTable, optional
    law : str
        ``"mist"`` (default: the BC grid's own A_V axis), ``"F99"``, ``"G23"`` or ``"CCM89"``.

    Returns
    -------
    ndarray (N, n_band)
        A_band in mag (≥ 0).

    Raises
    ------
    OutOfGridError
        Unavailable law or R_V (the message lists the available ones), A_V outside 0–6 mag, or
        [Fe/H] outside the shipped nodes.

    Examples
    --------
    >>> a = extinction([4.3], [4.0], 1.0, ["WFC3_UVIS_F336W", "WFC3_UVIS_F814W"], law="F99", rv=4.0)
    >>> bool(a[0, 0] > a[0, 1] > 0)
    True
    """
    table = table or get_photometry_table()
    bands = check_bands(bands)
    bc0 = table.bolometric_corrections(log_teff, log_g, feh, 0.0, bands, law=law, rv=rv)
    return bc0 - table.bolometric_corrections(log_teff, log_g, feh, av, bands, law=law, rv=rv)


def extinction_polynomial(
    log_teff,
    log_g,
    bands: Sequence[str],
    *,
    feh: float = 0.0,
    degree: int = 3,
    table: PhotometryTable | None = None,
    law: str = DEFAULT_LAW,
    rv: float = RV_DEFAULT,
) -> tuple[np.ndarray, float]:
    """Least-squares fit A_band(A_V) ≈ Σ_{k=1..degree} c_k A_V^k on the grid's A_V nodes, per star and band.

    Parameters
    ----------
    log_teff, log_g : array_like (N,)
    bands : sequence of str
    feh : float
    degree : int
        Polynomial degree (no constant term: A_band(0) = 0 exactly).
    table : PhotometryTable, optional
    law, rv : str, float
        Extinction law and R_V (default: the grid's own A_V axis, R_V = 3.1); see :func:`extinction`.

    Returns
    -------
    coeffs : ndarray (N, n_band, degree)
        c_1 … c_degree (c_k in mag^(1−k)).
    max_error : float
        Largest |fit − grid| over all stars, bands and A_V nodes (mag).
    """
    table = table or get_photometry_table()
    grid = table.bc_grid(log_teff, log_g, feh, bands, law=law, rv=rv)  # (N, n_av, n_band)
    a = grid[:, :1, :] - grid  # A_band at the nodes
    x = np.stack([table.av**k for k in range(1, degree + 1)], axis=1)  # (n_av, degree)
    coef, *_ = np.linalg.lstsq(x, a.transpose(1, 0, 2).reshape(len(table.av), -1), rcond=None)
    coef = coef.reshape(degree, a.shape[0], a.shape[2]).transpose(1, 2, 0)
    err = np.abs(np.einsum("ad,nbd->nab", x, coef) - a)
    return coef, float(err.max()) if err.size else 0.0


def evaluate_polynomial(coeffs: np.ndarray, av) -> np.ndarray:
    """A_band (mag) from :func:`extinction_polynomial` coefficients at ``av`` (broadcast over stars)."""
    av = np.broadcast_to(np.asarray(av, float), coeffs.shape[:-2])
    powers = np.stack([av**k for k in range(1, coeffs.shape[-1] + 1)], axis=-1)
    return np.einsum("...bd,...d->...b", coeffs, powers)
