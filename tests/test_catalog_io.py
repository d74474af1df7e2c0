"""Reading photometric catalogues: LEGUS layout detection, flags, band assignment, column maps.

Uses two excerpts (12 rows each) of the real LEGUS catalogues of NGC 628-c (35 columns, ACS + WFC3)
and NGC 1313-e (37 columns, WFC3/UVIS only) in ``tests/data``.
"""

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from sbicluster.catalog_errors import SUPPORTED_FILE_BANDS
from sbicluster.catalog_io import (
    ROW_FLAG_BAD_VALUE,
    ROW_FLAG_FEW_BANDS,
    ROW_FLAG_NO_BANDS,
    detect_legus_layout,
    legus_bands_from_name,
    parse_columns,
    read_photometry_catalog,
)
from sbicluster.errors import InputError

DATA = Path(__file__).parent / "data"
NGC628 = DATA / "hlsp_legus_hst_acs-wfc3_ngc628-c_excerpt.tab"
NGC1313 = DATA / "hlsp_legus_hst_wfc3_ngc1313-e_excerpt.tab"


def read(path, **kw):
    return read_photometry_catalog(path, supported=SUPPORTED_FILE_BANDS, **kw)


def test_layouts_of_both_real_files_are_detected():
    assert detect_legus_layout(np.loadtxt(NGC628)) == 0
    assert detect_legus_layout(np.loadtxt(NGC1313)) == 2
    a, b = read(NGC628), read(NGC1313)
    assert (a.layout, b.layout) == ("legus-35", "legus-37")
    # first rows of the files: id, RA, Dec as printed in the catalogues
    assert (
        a.ids[0] == "1"
        and a.ra[0] == pytest.approx(24.18103)
        and a.dec[0] == pytest.approx(15.81437)
    )
    assert b.ids[0] == "1" and b.ra[0] == pytest.approx(49.570166)
    assert b.dec[0] == pytest.approx(-66.516867)
    assert a.bands[2:] == ("ACS_WFC_F435W", "ACS_WFC_F555W", "ACS_WFC_F814W")
    assert b.bands == tuple(f"WFC3_UVIS_{f}" for f in ("F275W", "F336W", "F438W", "F555W", "F814W"))
    # NGC 1313-e row 1: F438W 20.508 +- 0.064, F555W 20.468 +- 0.060 (columns 12-15 of 37)
    assert b.mag[0, 2] == pytest.approx(20.508) and b.err[0, 2] == pytest.approx(0.064)
    assert b.mag[0, 3] == pytest.approx(20.468) and b.err[0, 3] == pytest.approx(0.060)
    assert set(np.unique(b.extra["class_mode"])) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("extra", [1, 2])
def test_38_and_39_column_variants_keep_their_layout(tmp_path, extra):
    for path, shift in ((NGC628, 0), (NGC1313, 2)):
        data = np.loadtxt(path)
        wide = np.hstack([data, np.ones((len(data), extra))])
        if wide.shape[1] not in (38, 39):
            continue
        assert detect_legus_layout(wide) == shift
        out = tmp_path / path.name
        np.savetxt(out, wide, fmt="%.6f")
        cat = read(out)
        np.testing.assert_allclose(np.nan_to_num(cat.mag), np.nan_to_num(read(path).mag))


def test_flags_map_to_the_band_states():
    raw = np.loadtxt(NGC1313)[:, 7:17:2]
    cat = read(NGC1313)
    np.testing.assert_array_equal(cat.state == 0, np.isclose(raw, 66.666))
    np.testing.assert_array_equal(cat.state == 2, np.isclose(raw, 99.999))
    assert np.all(np.isfinite(cat.mag[cat.state == 1]))
    assert np.all(np.isnan(cat.mag[cat.state != 1]))
    # rows 1-2 have F275W, F336W outside the footprint: three bands measured, not flagged few_bands
    assert (cat.state[0] == 1).sum() == 3 and cat.flags[0] & ROW_FLAG_FEW_BANDS == 0


def test_unknown_layouts_are_refused(tmp_path):
    data = np.loadtxt(NGC628)
    short = tmp_path / "hlsp_legus_hst_wfc3_short.tab"
    np.savetxt(short, data[:, :20])
    with pytest.raises(InputError, match="--columns"):
        read(short)
    garbled = data.copy()
    garbled[:, 3] = 1000.0  # RA out of range: fits no layout
    path = tmp_path / "hlsp_legus_hst_wfc3_bad.tab"
    np.savetxt(path, garbled)
    with pytest.raises(InputError, match="fit no LEGUS layout"):
        read(path)
    nameless = tmp_path / "clusters.tab"
    np.savetxt(nameless, data)
    with pytest.raises(InputError, match="--bands"):
        read(nameless)
    with pytest.raises(InputError, match="does not exist"):
        read(tmp_path / "missing.tab")


def test_column_map_for_ecsv_fits_and_whitespace(tmp_path):
    t = Table()
    t["ID"] = ["a", "b", "c", "d"]
    t["RA"] = [1.0, 2.0, 3.0, 4.0]
    t["m555"] = [22.0, np.nan, 66.666, 21.0]
    t["e555"] = [0.05, 0.1, 66.666, 0.04]
    t["m814"] = [21.5, 99.999, 66.666, 300.0]
    t["e814"] = [0.05, 99.999, 66.666, 0.04]
    columns = "id=ID,ra=RA,WFC3_UVIS_F555W=m555:e555,WFC3_UVIS_F814W=m814:e814"
    for name in ("cat.ecsv", "cat.fits"):
        t.write(tmp_path / name)
        cat = read(tmp_path / name, columns=columns)
        assert cat.ids == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(cat.state, [[1, 1], [0, 2], [0, 0], [1, 0]])
        assert cat.flags[1] & ROW_FLAG_BAD_VALUE  # NaN magnitude: flagged, not dropped
        assert cat.flags[2] & ROW_FLAG_NO_BANDS
        assert cat.flags[3] & ROW_FLAG_BAD_VALUE  # absurd 300 mag
        assert cat.flags[0] & ROW_FLAG_FEW_BANDS and not cat.flags[0] & ROW_FLAG_BAD_VALUE
    with pytest.raises(InputError, match="needs --columns"):
        read(tmp_path / "cat.ecsv")
    with pytest.raises(InputError, match="lacks"):
        read(tmp_path / "cat.ecsv", columns="id=ID,WFC3_UVIS_F555W=nope:e555")
    numbered = read(NGC628, columns="id=1,ra=4,dec=5,F275W=6:7,F336W=8:9,F435W=10:11")
    np.testing.assert_allclose(np.nan_to_num(numbered.mag), np.nan_to_num(read(NGC628).mag[:, :3]))


def test_parse_columns_rejects_bad_maps():
    bands = SUPPORTED_FILE_BANDS
    assert parse_columns("id=ID,F336W=a:b", bands)[1] == {"WFC3_UVIS_F336W": ("a", "b")}
    for bad, msg in (
        ("id=ID", "no band"),
        ("F814W=a:b", "ambiguous"),
        ("F999W=a:b", "unknown band"),
        ("F336W=a", "MAG:ERR"),
        ("nonsense", "key=value"),
    ):
        with pytest.raises(InputError, match=msg):
            parse_columns(bad, bands)


def test_band_sets_from_legus_file_names():
    assert legus_bands_from_name(NGC1313.name)[2] == "WFC3_UVIS_F438W"
    assert legus_bands_from_name(NGC628.name)[2] == "ACS_WFC_F435W"
    assert legus_bands_from_name("my_clusters.tab") is None
