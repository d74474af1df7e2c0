"""Point-spread functions as the renderer needs them: sub-pixel phase kernels per band.

This module owns :class:`EffectivePSF` (an oversampled, pixel-integrated PSF of one band), the
loading of the shipped kernels (``tables/psf_*.npz``, built by :mod:`simulators.build_psf` from the model of :mod:`simulators.psf_optics`) and
of user-supplied FITS PSFs, and the derivation of the ``P × P`` sub-pixel phase kernels used by
:mod:`simulators.render`. It must not render images or know about instruments beyond a band
name and a pixel scale.

Phase convention: a star at pixel coordinate ``x`` (pixel centres at integers) falls into pixel
``round(x)`` and phase ``p = floor((x - round(x) + 0.5) · P)``; phase ``p`` stands for the
sub-pixel offset ``δ_p = (p + 0.5) / P − 0.5`` px. Its kernel ``K_p[i, j]`` is the effective PSF
sampled at ``(i − R − δ_y, j − R − δ_x)`` output pixels, normalised to sum to 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from .errors import SimulatorError

__all__ = ["EffectivePSF", "load_builtin_psf", "load_fits_psf", "phase_offsets"]

log = logging.getLogger(__name__)


def phase_offsets(n_phase: int) -> np.ndarray:
    """Sub-pixel offsets δ_p = (p + 0.5)/P − 0.5 (px) of the ``P`` phases along one axis."""
    return (np.arange(n_phase) + 0.5) / n_phase - 0.5


@dataclass(frozen=True)
class EffectivePSF:
    """An oversampled effective (pixel-integrated) PSF of one band.

    Parameters
    ----------
    data : numpy.ndarray
        float64, odd square array; the value at sample (i, j) is the fraction of a point source's
        light that lands in an output pixel centred ``((i − c)/O, (j − c)/O)`` px from the source,
        times O² (so ``data.sum() / O² == 1``).
    oversampling : int
        Samples per output pixel, O.
    pixel_scale : float
        Output pixel scale (arcsec/px).
    source : str
        Where the kernel came from (file name / build description).
    """

    data: np.ndarray
    oversampling: int
    pixel_scale: float
    source: str = ""

    def __post_init__(self) -> None:
        d = self.data
        if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] % 2 == 0:
            raise SimulatorError(
                f"PSF {self.source!r}: need an odd square 2-D array, got shape {d.shape}"
            )
        if not np.all(np.isfinite(d)):
            raise SimulatorError(
                f"PSF {self.source!r} contains NaN or inf values; clean it before use"
            )
        if d.sum() <= 0:
            raise SimulatorError(f"PSF {self.source!r} has non-positive total {d.sum()}")

    @property
    def radius_px(self) -> int:
        """Kernel half-size in output pixels (samples beyond are not used)."""
        return (self.data.shape[0] // 2) // self.oversampling

    def fwhm_arcsec(self) -> float:
        """Full width at half maximum (arcsec), from the oversampled profile through the centre."""
        from .psf_optics import measure_fwhm

        return measure_fwhm(self.data, self.oversampling, self.pixel_scale)

    def phase_kernels(self, n_phase: int, radius_px: int | None = None) -> torch.Tensor:
        """The ``P × P`` sub-pixel phase kernels.

        Parameters
        ----------
        n_phase : int
            Phases per axis, P (1 = whole pixels only).
        radius_px : int, optional
            Kernel half-size (px); defaults to :attr:`radius_px`.

        Returns
        -------
        torch.Tensor
            float64, shape (P·P, 2R+1, 2R+1), index ``py·P + px``; each kernel sums to 1.
        """
        r = self.radius_px if radius_px is None else int(radius_px)
        o = self.oversampling
        c = self.data.shape[0] // 2
        offs = phase_offsets(n_phase)
        grid = np.arange(-r, r + 1, dtype=float)
        out = np.empty((n_phase * n_phase, 2 * r + 1, 2 * r + 1))
        for py, dy in enumerate(offs):
            for px, dx in enumerate(offs):
                yy = c + (grid[:, None] - dy) * o + 0 * grid[None, :]
                xx = c + (grid[None, :] - dx) * o + 0 * grid[:, None]
                k = map_coordinates(self.data, [yy, xx], order=3, mode="constant", cval=0.0)
                k = np.clip(k, 0.0, None)
                out[py * n_phase + px] = k / k.sum()
        return torch.from_numpy(out)


def load_builtin_psf(
    band: str,
    pixel_scale: float,
    *,
    native_pixel_scale: float | None = None,
    fwhm: float | None = None,
) -> EffectivePSF:
    """The shipped kernel of ``band`` at ``pixel_scale``; built on the fly if none is shipped.

    Parameters
    ----------
    band : str
        Band name (e.g. ``"WFC3_UVIS_F814W"``).
    pixel_scale : float
        Output pixel scale (arcsec/px).
    native_pixel_scale, fwhm : float, optional
        Detector pixel scale and target FWHM (arcsec), needed only to build a kernel for a pixel
        scale that has no shipped table (takes about a second, scipy only).

    Raises
    ------
    SimulatorError
        If no kernel is shipped and the band has no optics entry or the build inputs are missing.
    """
    from .psf_optics import BAND_OPTICS, OVERSAMPLING, psf_table_path, tune_sigma

    path = psf_table_path(band, pixel_scale)
    if path.is_file():
        with np.load(path) as z:
            return EffectivePSF(
                z["psf"].astype(np.float64),
                int(z["oversampling"]),
                float(z["pixel_scale"]),
                path.name,
            )
    if band not in BAND_OPTICS or native_pixel_scale is None or fwhm is None:
        raise SimulatorError(
            f"no built-in PSF for band {band!r} at {pixel_scale}''/px; give the band a FITS PSF (psf = 'path.fits' "
            f"in the preset) or a target psf_fwhm and native_pixel_scale (built-in optics exist for {sorted(BAND_OPTICS)})"
        )
    log.info("building PSF for %s at %.4f''/px (no shipped kernel)", band, pixel_scale)
    sigma, kern = tune_sigma(band, pixel_scale, native_pixel_scale, fwhm)
    return EffectivePSF(kern, OVERSAMPLING, pixel_scale, f"built at run time, sigma={sigma:.4f}''")


def load_fits_psf(
    path: str | Path,
    *,
    oversampling: int = 1,
    pixel_scale: float = float("nan"),
    hdu: int | None = None,
) -> EffectivePSF:
    """A user PSF from a FITS image.

    The image must be an effective (pixel-integrated) PSF sampled ``oversampling`` times per
    output pixel, centred on its middle sample (odd size). Even-sized images are padded by one row
    and column of zeros; small negative values (noise in empirical PSFs) are clipped to zero; the
    kernel is renormalised.

    Parameters
    ----------
    path : str or Path
        FITS file; the first image HDU with 2-D data is used unless ``hdu`` is given.
    oversampling : int
        Samples per output pixel.
    pixel_scale : float
        Output pixel scale (arcsec/px), for bookkeeping.

    Raises
    ------
    SimulatorError
        Missing file, no 2-D image, non-finite values, or a PSF that is mostly negative.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise SimulatorError(f"PSF file {str(path)!r} does not exist")
    with fits.open(path) as hdul:
        hdus = [hdul[hdu]] if hdu is not None else list(hdul)
        data = next((h.data for h in hdus if h.data is not None and np.ndim(h.data) == 2), None)
        if data is None:
            raise SimulatorError(f"{path}: no 2-D image HDU found; a PSF must be a 2-D array")
        data = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise SimulatorError(f"{path}: PSF contains NaN/inf; replace them (e.g. with 0) and retry")
    if data.shape[0] != data.shape[1]:
        n = max(data.shape)
        pad = [(0, n - data.shape[0]), (0, n - data.shape[1])]
        data = np.pad(data, pad)
    if data.shape[0] % 2 == 0:
        data = np.pad(data, [(0, 1), (0, 1)])
    neg = -data[data < 0].sum()
    if neg > 0.5 * data[data > 0].sum():
        raise SimulatorError(
            f"{path}: PSF is mostly negative; is it background-subtracted too much or inverted?"
        )
    data = np.clip(data, 0, None)
    data = data / data.sum() * oversampling**2
    return EffectivePSF(data, int(oversampling), float(pixel_scale), str(path))
