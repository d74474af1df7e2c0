"""PSF kernels: normalisation, widths, sub-pixel phases and user FITS PSFs."""

import numpy as np
import pytest
import torch

from simulators.errors import SimulatorError
from simulators.instruments import get_preset
from simulators.psf import load_builtin_psf, load_fits_psf, phase_offsets


@pytest.mark.parametrize("preset", ["m83-wfc3", "m31-phat"])
def test_shipped_kernels_sum_to_one_and_have_realistic_fwhm(preset):
    inst = get_preset(preset)
    for b in inst.band_setups:
        psf = load_builtin_psf(b.name, inst.pixel_scale)
        assert psf.data.sum() / psf.oversampling**2 == pytest.approx(1.0, abs=1e-5)
        k = psf.phase_kernels(3)
        assert torch.allclose(k.sum((1, 2)), torch.ones(9, dtype=k.dtype), atol=1e-12)
        fwhm = psf.fwhm_arcsec()
        if "UVIS" in b.name:
            assert 0.066 <= fwhm <= 0.082, (b.name, fwhm)  # WFC3/UVIS: 0.07-0.08 arcsec
        if b.name == "WFC3_IR_F160W":
            assert 0.14 <= fwhm <= 0.17, fwhm  # WFC3/IR F160W ~0.15 arcsec
        assert fwhm >= b.psf_fwhm - 1e-3  # never narrower than the target


def test_phase_kernel_centroids_follow_the_subpixel_offset():
    psf = load_builtin_psf("WFC3_UVIS_F814W", 0.0396)
    k = psf.phase_kernels(3).numpy()
    offs = phase_offsets(3)
    g = np.arange(k.shape[-1]) - k.shape[-1] // 2
    for py, dy in enumerate(offs):
        for px, dx in enumerate(offs):
            kk = k[py * 3 + px]
            cy, cx = (kk.sum(1) * g).sum(), (kk.sum(0) * g).sum()
            assert cy == pytest.approx(dy, abs=0.03) and cx == pytest.approx(dx, abs=0.03)


def test_fits_psf_is_normalised_and_validated(tmp_path):
    from astropy.io import fits

    yy, xx = np.mgrid[-10:11, -10:11]
    g = 7.0 * np.exp(-(yy**2 + xx**2) / (2 * 1.5**2))
    fits.writeto(tmp_path / "psf.fits", g)
    psf = load_fits_psf(tmp_path / "psf.fits", oversampling=1, pixel_scale=0.04)
    assert psf.data.sum() == pytest.approx(1.0)
    assert psf.fwhm_arcsec() == pytest.approx(2.3548 * 1.5 * 0.04, rel=0.03)
    k = psf.phase_kernels(3, radius_px=5)
    assert torch.allclose(k.sum((1, 2)), torch.ones(9, dtype=k.dtype))
    bad = g.copy()
    bad[3, 3] = np.nan
    fits.writeto(tmp_path / "bad.fits", bad)
    with pytest.raises(SimulatorError, match="NaN"):
        load_fits_psf(tmp_path / "bad.fits")
    with pytest.raises(SimulatorError, match="does not exist"):
        load_fits_psf(tmp_path / "missing.fits")
