"""Photometric errors of a cluster catalogue: the magnitude–error relation, its fit and its draws.

This module owns :class:`BandErrorModel`, the per-band relation between the apparent magnitude of
a source and the 1σ magnitude error a catalogue reports for it, fitted to a real catalogue by
:func:`fit_band_errors`, and :func:`observe_magnitudes`, which turns true apparent magnitudes into
what such a catalogue records: a measured magnitude, its reported error, or a non-detection. It
must not know about clusters, catalogue files or networks.

The relation
------------
Aperture photometry of a source of flux f on a background has S/N ∝ f / sqrt(f + B); LEGUS
adds in quadrature a floor (the aperture-correction uncertainty, ≈ 0.03–0.07 mag). Over the range
of catalogued clusters the error is well described by

.. math::

    \\log_{10}σ(m) = \\tfrac12 \\log_{10}\\left[σ_0^2 + 10^{2 s (m - m_1)}\\right],

with ``m_1`` the magnitude at which the noise term alone is 1 mag (S/N ≈ 1.09: the detection
limit), ``s`` the slope (0.4 for background-limited, 0.2 for source-limited photometry) and
``σ_0`` the floor. The scatter of log10 σ about the relation (different local backgrounds) is
``scatter`` (dex, robust standard deviation of the residuals).

Observation model
-----------------
A source of true apparent magnitude m has flux f = 10^(−0.4 m) and flux noise
σ_f = f σ(m) / 1.0857 (only the noise term, not the floor, is flux noise; the floor is a
systematic of the aperture correction, drawn as an extra Gaussian magnitude offset). The
measured flux is f + σ_f ε; a measured flux ≤ 0 is a non-detection (LEGUS flag 99.999). A detected
source gets m_obs = −2.5 log10(f_obs) + σ_0 ε', and reports σ(m_obs) times a log-normal factor
with the fitted scatter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .errors import SimulatorError

__all__ = ["BandErrorModel", "fit_band_errors", "observe_magnitudes", "POGSON"]

POGSON = 2.5 / math.log(10.0)
"""1.0857…: magnitude error per unit relative flux error."""


@dataclass(frozen=True)
class BandErrorModel:
    """Magnitude–error relation of one band of one catalogue.

    Parameters
    ----------
    band : str
        Band name (see :data:`simulators.photometry.SUPPORTED_BANDS`).
    m1 : float
        Apparent Vega magnitude at which the noise term alone is 1 mag (S/N ≈ 1.09), mag.
    slope : float
        d log10 σ / d m of the noise term (mag⁻¹).
    floor : float
        Error floor σ_0 added in quadrature, mag.
    scatter : float
        Robust standard deviation of log10 σ about the relation, dex.
    n_fit : int
        Detected sources the relation was fitted to.
    detected_faint : float
        99th percentile of the detected sources' magnitudes, mag (for the record).
    nondetected_fraction : float
        Fraction of in-footprint sources flagged not detected in the fitted catalogue.
    """

    band: str
    m1: float
    slope: float
    floor: float
    scatter: float
    n_fit: int = 0
    detected_faint: float = float("nan")
    nondetected_fraction: float = float("nan")

    @property
    def detection_limit(self) -> float:
        """Magnitude at which the measured flux has S/N = 1 (noise term only), mag."""
        return self.m1 + math.log10(POGSON) / self.slope

    def sigma(self, mag):
        """Median reported 1σ error (mag) at apparent magnitude ``mag`` (numpy or torch)."""
        lib = torch if isinstance(mag, torch.Tensor) else np
        noise = 10.0 ** (2.0 * self.slope * (mag - self.m1))
        return lib.sqrt(self.floor**2 + noise)

    def noise_sigma(self, mag):
        """Noise term only (no floor) of :meth:`sigma`, mag."""
        return 10.0 ** (self.slope * (mag - self.m1))

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> BandErrorModel:
        try:
            return cls(**data)
        except TypeError as err:
            raise SimulatorError(f"invalid error model entry {data!r} ({err})") from err


def fit_band_errors(band: str, mag, err, *, nondetected: int = 0) -> BandErrorModel:
    """Fit :class:`BandErrorModel` to the detected sources of one catalogue band.

    Least squares on log10 σ with a soft-L1 loss (robust to the few sources with odd errors),
    over sources with a finite magnitude below 50 and 0 < σ < 10 mag.

    Parameters
    ----------
    band : str
        Band name.
    mag, err : array_like
        Apparent magnitudes and reported errors (mag) of the detected sources.
    nondetected : int
        Number of in-footprint non-detections of the band (recorded, not fitted).

    Returns
    -------
    BandErrorModel

    Raises
    ------
    SimulatorError
        Fewer than 20 usable sources.
    """
    from scipy.optimize import least_squares

    mag, err = np.asarray(mag, float), np.asarray(err, float)
    ok = np.isfinite(mag) & np.isfinite(err) & (mag < 50) & (err > 0) & (err < 10)
    mag, err = mag[ok], err[ok]
    if len(mag) < 20:
        raise SimulatorError(f"band {band}: only {len(mag)} detected sources to fit errors to")
    y = np.log10(err)

    def resid(p):
        m1, slope, log_floor = p
        return 0.5 * np.log10(10 ** (2 * log_floor) + 10 ** (2 * slope * (mag - m1))) - y

    start = (float(np.percentile(mag, 99)) + 1.0, 0.35, math.log10(max(err.min(), 1e-3)))
    fit = least_squares(
        resid, start, loss="soft_l1", f_scale=0.1, bounds=([10, 0.05, -3], [40, 1.0, 0])
    )
    r = resid(fit.x)
    scatter = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    m1, slope, log_floor = (float(v) for v in fit.x)
    return BandErrorModel(
        band,
        m1,
        slope,
        10**log_floor,
        scatter,
        n_fit=int(len(mag)),
        detected_faint=float(np.percentile(mag, 99)),
        nondetected_fraction=float(nondetected / max(1, nondetected + len(mag))),
    )


def observe_magnitudes(
    true_mag: torch.Tensor,
    models: list[BandErrorModel],
    generator: torch.Generator,
    *,
    depth_shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a catalogue records for sources of true apparent magnitude ``true_mag``.

    Parameters
    ----------
    true_mag : torch.Tensor
        (B, C) true apparent Vega magnitudes (+inf for no light).
    models : list of BandErrorModel
        One per column of ``true_mag``.
    generator : torch.Generator
        Source of the noise (on ``true_mag``'s device).
    depth_shift : torch.Tensor, optional
        (B,) or (B, C) mag added to every band's ``m1`` (a deeper or shallower field); 0 if not given.

    Returns
    -------
    mag : torch.Tensor
        (B, C) measured magnitudes (NaN where not detected).
    sigma : torch.Tensor
        (B, C) reported 1σ errors, mag (NaN where not detected).
    detected : torch.Tensor
        (B, C) bool: the measured flux was positive.
    """
    dev = true_mag.device
    b, c = true_mag.shape
    m1 = torch.tensor([m.m1 for m in models], device=dev)
    slope = torch.tensor([m.slope for m in models], device=dev)
    floor = torch.tensor([m.floor for m in models], device=dev)
    scatter = torch.tensor([m.scatter for m in models], device=dev)
    if depth_shift is not None:
        shift = depth_shift if depth_shift.ndim == 2 else depth_shift[:, None]
        m1 = m1 + shift
    eps = torch.randn(b, c, 3, generator=generator, device=dev)
    finite = torch.isfinite(true_mag)
    tm = torch.where(finite, true_mag, torch.full_like(true_mag, 99.0))
    # relative flux noise (noise term only), evaluated at the true magnitude
    rel = 10.0 ** (slope * (tm - m1)) / POGSON
    ratio = 1.0 + rel * eps[..., 0]  # f_obs / f
    detected = finite & (ratio > 0)
    safe = torch.where(detected, ratio, torch.ones_like(ratio))
    mag = tm - 2.5 * torch.log10(safe) + floor * eps[..., 1]
    reported = torch.sqrt(floor**2 + 10.0 ** (2.0 * slope * (mag - m1))) * 10.0 ** (
        scatter * eps[..., 2]
    )
    nan = torch.full_like(mag, float("nan"))
    return torch.where(detected, mag, nan), torch.where(detected, reported, nan), detected
