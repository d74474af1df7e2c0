"""Extinction per star per band, consistent with each star's SED (MIST C3K grid A_V axis, R_V = 3.1).

This module owns A_band(A_V; Teff, log g, [Fe/H]) = BC_band(A_V = 0) − BC_band(A_V), taken from the
A_V axis of the shipped BC table (each A_V node of the MIST C3K grid was reddened with R_V = 3.1 and
reconstructed separately, so hot and cool stars get their own effective A_band/A_V), and its compact
representation as a polynomial in A_V without constant term, used by the batched population look-ups.
It must not know about ages, IMFs or images. Other R_V values or laws are not supported by the
shipped table (R_V is fixed to 3.1 by the source grid) and raise :class:`~simulators.errors.OutOfGridError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import OutOfGridError
from .photometry import PhotometryTable, check_bands, get_photometry_table

__all__ = ["RV_DEFAULT", "extinction", "extinction_polynomial", "evaluate_polynomial"]

#: The only ratio of total to selective extinction available in the shipped grid.
RV_DEFAULT = 3.1


def _check_rv(rv: float) -> None:
    if abs(rv - RV_DEFAULT) > 1e-6:
        raise OutOfGridError(
            f"R_V = {rv} is not available: the shipped MIST C3K grid is reddened with R_V = 3.1 only"
        )


def extinction(
    log_teff,
    log_g,
    av,
    bands: Sequence[str],
    *,
    feh: float = 0.0,
    rv: float = RV_DEFAULT,
    table: PhotometryTable | None = None,
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
        Must be 3.1.
    table : PhotometryTable, optional

    Returns
    -------
    ndarray (N, n_band)
        A_band in mag (≥ 0).
    """
    _check_rv(rv)
    table = table or get_photometry_table()
    bands = check_bands(bands)
    bc0 = table.bolometric_corrections(log_teff, log_g, feh, 0.0, bands)
    return bc0 - table.bolometric_corrections(log_teff, log_g, feh, av, bands)


def extinction_polynomial(
    log_teff,
    log_g,
    bands: Sequence[str],
    *,
    feh: float = 0.0,
    degree: int = 3,
    table: PhotometryTable | None = None,
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

    Returns
    -------
    coeffs : ndarray (N, n_band, degree)
        c_1 … c_degree (c_k in mag^(1−k)).
    max_error : float
        Largest |fit − grid| over all stars, bands and A_V nodes (mag).
    """
    table = table or get_photometry_table()
    grid = table.bc_grid(log_teff, log_g, feh, bands)  # (N, n_av, n_band)
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
