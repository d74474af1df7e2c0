"""The analytic HST effective-PSF model behind the shipped kernels (``tables/psf_*.npz``).

The model (numpy and scipy only):

* optics: polychromatic obscured Airy pattern of HST (D = 2.4 m, linear obscuration ε = 0.33),
  averaged over 7 wavelengths spanning the band's width around its pivot wavelength;
* a Gaussian of width σ standing for mid-frequency aberrations, telescope jitter and detector
  charge diffusion, tuned by bisection so that the final kernel's FWHM matches the target of the
  preset (WFC3/UVIS ≈ 0.07–0.08″, ACS/WFC ≈ 0.09–0.10″, WFC3/IR ≈ 0.13–0.15″);
* integration over the native detector pixel, and over the output pixel when the cutouts are
  resampled to another scale (drizzle with pixfrac = 1).

The result is an *effective* PSF: its value at an offset (dx, dy) from the star, sampled on a grid
``oversampling`` times finer than the output pixels, is the fraction of the star's light falling
into an output pixel centred at that offset. It is stored normalised so that ``sum / O² = 1``.

This module owns the model, the kernels' file names and the FWHM measurement; the simulator uses
it at construction (to measure a kernel's FWHM, or to build a kernel for a pixel scale that has
no shipped table). Writing the shipped tables is :mod:`simulators.build_psf`'s job. It must not be
imported on the rendering hot path.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy.special import j1

__all__ = [
    "BAND_OPTICS",
    "OVERSAMPLING",
    "RADIUS_PX",
    "TABLE_DIR",
    "build_effective_psf",
    "measure_fwhm",
    "psf_table_path",
    "tune_sigma",
]

log = logging.getLogger(__name__)

TABLE_DIR = Path(__file__).resolve().parent / "tables"
HST_DIAMETER_M = 2.4
HST_OBSCURATION = 0.33
OVERSAMPLING = 6
RADIUS_PX = 8

# pivot wavelength and effective width (nm) of each supported HST band (instrument handbooks,
# rounded); Bessell bands for completeness (ground-based users supply their own FITS PSF).
BAND_OPTICS: dict[str, tuple[float, float]] = {
    "WFC3_UVIS_F275W": (270.4, 40.0),
    "WFC3_UVIS_F336W": (335.5, 51.0),
    "WFC3_UVIS_F438W": (432.5, 62.0),
    "WFC3_UVIS_F555W": (530.8, 156.0),
    "WFC3_UVIS_F814W": (802.4, 153.0),
    "ACS_WFC_F435W": (432.9, 88.0),
    "ACS_WFC_F475W": (474.7, 142.0),
    "ACS_WFC_F606W": (590.7, 234.0),
    "ACS_WFC_F814W": (805.7, 154.0),
    "WFC3_IR_F110W": (1153.4, 443.0),
    "WFC3_IR_F160W": (1536.9, 268.0),
}


def psf_table_path(band: str, pixel_scale: float) -> Path:
    """Path of the shipped kernel of ``band`` at ``pixel_scale`` (arcsec/px)."""
    return TABLE_DIR / f"psf_{band}_{pixel_scale * 1000:.1f}mas.npz"


def _airy(r_arcsec: np.ndarray, wavelength_nm: float) -> np.ndarray:
    """Obscured Airy intensity (peak 1) at radii in arcsec."""
    x = math.pi * HST_DIAMETER_M / (wavelength_nm * 1e-9) * np.radians(r_arcsec / 3600.0)
    x = np.where(x == 0, 1e-12, x)
    e = HST_OBSCURATION
    amp = (2 * j1(x) / x - e**2 * 2 * j1(e * x) / (e * x)) / (1 - e**2)
    return amp**2


def _box_ft(freq: np.ndarray, width: float) -> np.ndarray:
    return np.sinc(freq * width)


def build_effective_psf(
    band: str,
    pixel_scale: float,
    native_pixel_scale: float,
    sigma_arcsec: float,
    *,
    oversampling: int = OVERSAMPLING,
    radius_px: int = RADIUS_PX,
) -> np.ndarray:
    """Effective (pixel-integrated) PSF on an oversampled grid.

    Parameters
    ----------
    band : str
        Key of :data:`BAND_OPTICS`.
    pixel_scale : float
        Output pixel scale (arcsec/px).
    native_pixel_scale : float
        Detector pixel scale (arcsec/px).
    sigma_arcsec : float
        Width of the Gaussian broadening (arcsec).
    oversampling, radius_px : int
        Samples per output pixel and half-size of the kernel in output pixels.

    Returns
    -------
    numpy.ndarray
        float64, shape (2·radius·O + 1,)², centre sample at the middle, normalised to sum / O² = 1.
    """
    pivot, width = BAND_OPTICS[band]
    step = pixel_scale / oversampling  # arcsec per sample
    n_out = 2 * radius_px * oversampling + 1
    n = 4 * n_out + 1  # work on a larger grid so that the wings wrap nowhere near the kernel
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - c, xx - c) * step
    waves = pivot + width * np.linspace(-0.5, 0.5, 7)
    optics = sum(_airy(r, w) / w**2 for w in waves)  # each Airy normalised by its λ² area scaling
    f = np.fft.fftfreq(n, d=step)  # cycles / arcsec
    fy, fx = np.meshgrid(f, f, indexing="ij")
    transfer = np.exp(-2 * (math.pi * sigma_arcsec) ** 2 * (fx**2 + fy**2))
    transfer *= _box_ft(fx, native_pixel_scale) * _box_ft(fy, native_pixel_scale)
    if not math.isclose(native_pixel_scale, pixel_scale, rel_tol=1e-3):
        transfer *= _box_ft(fx, pixel_scale) * _box_ft(fy, pixel_scale)
    img = np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(optics)) * transfer).real
    img = np.fft.fftshift(img)
    h = n_out // 2
    img = img[c - h : c + h + 1, c - h : c + h + 1]
    img = np.clip(img, 0, None)
    return img / img.sum() * oversampling**2


def measure_fwhm(psf_os: np.ndarray, oversampling: int, pixel_scale: float) -> float:
    """FWHM (arcsec) of an oversampled kernel: mean half-maximum diameter along x and y."""
    c = psf_os.shape[0] // 2
    out = []
    for prof in (psf_os[c, :], psf_os[:, c]):
        half = prof.max() / 2
        right = prof[c:]
        i = int(np.argmax(right < half))
        x = i - 1 + (right[i - 1] - half) / (right[i - 1] - right[i])
        left = prof[: c + 1][::-1]
        j = int(np.argmax(left < half))
        y = j - 1 + (left[j - 1] - half) / (left[j - 1] - left[j])
        out.append((x + y) / oversampling * pixel_scale)
    return float(np.mean(out))


def tune_sigma(
    band: str, pixel_scale: float, native_pixel_scale: float, target_fwhm: float
) -> tuple[float, np.ndarray]:
    """Gaussian σ (arcsec) that brings the kernel's FWHM to ``target_fwhm``; returns (σ, kernel)."""

    def fwhm(s: float) -> tuple[float, np.ndarray]:
        k = build_effective_psf(band, pixel_scale, native_pixel_scale, s)
        return measure_fwhm(k, OVERSAMPLING, pixel_scale), k

    f0, k0 = fwhm(0.0)
    if f0 >= target_fwhm:
        log.info(
            "%s: diffraction + pixel FWHM %.4f'' already >= target %.4f''", band, f0, target_fwhm
        )
        return 0.0, k0
    lo, hi = 0.0, target_fwhm
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if fwhm(mid)[0] < target_fwhm:
            lo = mid
        else:
            hi = mid
    s = 0.5 * (lo + hi)
    return s, fwhm(s)[1]
