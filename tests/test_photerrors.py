"""The catalogue error model: its fit, its draws, and the shipped LEGUS fits against real rows."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sbicluster.catalog_errors import FILE_BAND_PROXIES, SUPPORTED_FILE_BANDS
from sbicluster.catalog_io import read_photometry_catalog
from simulators.catalogue import CATALOGUE_PRESET_DIR
from simulators.errors import SimulatorError
from simulators.photerrors import POGSON, BandErrorModel, fit_band_errors, observe_magnitudes

DATA = Path(__file__).parent / "data"
TRUE = BandErrorModel("WFC3_UVIS_F555W", m1=26.5, slope=0.36, floor=0.05, scatter=0.05)


def test_fit_recovers_a_known_relation():
    rng = np.random.default_rng(1)
    mag = rng.uniform(19.0, 27.0, 4000)
    err = TRUE.sigma(mag) * 10 ** (TRUE.scatter * rng.standard_normal(mag.size))
    fit = fit_band_errors("WFC3_UVIS_F555W", mag, err, nondetected=100)
    assert fit.m1 == pytest.approx(TRUE.m1, abs=0.1)
    assert fit.slope == pytest.approx(TRUE.slope, abs=0.01)
    assert fit.floor == pytest.approx(TRUE.floor, rel=0.05)
    assert fit.scatter == pytest.approx(TRUE.scatter, rel=0.1)
    assert fit.nondetected_fraction == pytest.approx(100 / 4100)
    with pytest.raises(SimulatorError, match="only"):
        fit_band_errors("WFC3_UVIS_F555W", mag[:5], err[:5])


def test_draws_follow_the_relation_and_detect_below_snr_one():
    g = torch.Generator().manual_seed(0)
    n = 20000
    # bright sources: scatter of measured minus true magnitude equals the reported error
    bright = torch.full((n, 1), 21.0)
    mag, sig, det = observe_magnitudes(bright, [TRUE], g)
    assert bool(det.all())
    pull = ((mag - bright) / TRUE.sigma(torch.tensor(21.0))).flatten()
    assert float(pull.std()) == pytest.approx(1.0, abs=0.05)
    assert float(sig.median()) == pytest.approx(float(TRUE.sigma(torch.tensor(21.0))), rel=0.03)
    # where the relative flux noise is 1 the measured flux is <= 0 (not detected) with P = Phi(-1)
    m_snr1 = TRUE.m1 + np.log10(POGSON) / TRUE.slope
    assert TRUE.detection_limit == pytest.approx(m_snr1)
    _, _, det = observe_magnitudes(torch.full((n, 1), m_snr1), [TRUE], g)
    assert 1 - float(det.float().mean()) == pytest.approx(norm.cdf(-1.0), abs=0.01)
    # a deeper field (depth shift +1 mag) has the error of a source 1 mag brighter
    _, sig_deep, _ = observe_magnitudes(
        torch.full((n, 1), 25.0), [TRUE], g, depth_shift=torch.ones(n)
    )
    assert float(sig_deep.median()) == pytest.approx(
        float(TRUE.sigma(torch.tensor(24.0))), rel=0.05
    )


def test_shipped_fits_reproduce_the_real_catalogue_errors():
    """The preset's relation gives the LEGUS catalogues' errors for the excerpt's measured bands
    (median ratio within 25 %, i.e. within ~2x the fitted scatter of log sigma)."""
    preset = json.loads((CATALOGUE_PRESET_DIR / "legus.json").read_text())
    for name, file in (
        ("uvis", "hlsp_legus_hst_wfc3_ngc1313-e_excerpt.tab"),
        ("acs-uvis", "hlsp_legus_hst_acs-wfc3_ngc628-c_excerpt.tab"),
    ):
        cat = read_photometry_catalog(DATA / file, supported=SUPPORTED_FILE_BANDS)
        ratios = []
        for j, band in enumerate(cat.bands):
            model = BandErrorModel.from_dict(
                preset["layouts"][name]["error_models"][FILE_BAND_PROXIES.get(band, band)]
            )
            ok = cat.state[:, j] == 1
            ratios.extend(cat.err[ok, j] / model.sigma(cat.mag[ok, j]))
        assert len(ratios) > 30
        assert np.median(ratios) == pytest.approx(1.0, abs=0.25), name
        # recorded fits: floors of 0.03-0.08 mag, slopes between source- and background-limited
        for m in preset["layouts"][name]["error_models"].values():
            assert 0.02 < m["floor"] < 0.1 and 0.2 < m["slope"] < 0.55
