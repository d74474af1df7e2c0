"""Reading FITS cutouts: layouts, band matching, units, masks, and every kind of bad input."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from sbicluster.errors import InputError
from sbicluster.io import FLAG_MASKED, read_catalog_cutouts, read_cutouts
from sbicluster.outputs import write_cutouts_fits

BANDS = ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")
SCALE = 0.0396
SIZE = 16


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 0.1, size=(n, len(BANDS), SIZE, SIZE)).astype(np.float32)


def _wcs_header(hdr, scale=SCALE, nx=SIZE, ny=SIZE):
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRPIX1"], hdr["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    hdr["CRVAL1"], hdr["CRVAL2"] = 204.25, -29.87
    hdr["CDELT1"], hdr["CDELT2"] = -scale / 3600, scale / 3600
    return hdr


def _mef(path, planes, filters=("F336W", "F438W", "F814W"), **extra):
    hdus = [fits.PrimaryHDU()]
    for data, filt in zip(planes, filters, strict=True):
        hdu = fits.ImageHDU(data)
        hdu.header["INSTRUME"], hdu.header["DETECTOR"], hdu.header["FILTER"] = "WFC3", "UVIS", filt
        _wcs_header(hdu.header)
        for k, v in extra.items():
            hdu.header[k] = v
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return path


def read(path, **kw):
    return read_cutouts(path, BANDS, image_size=SIZE, pixel_scale=SCALE, **kw)


def test_round_trip_of_written_cutouts_preserves_values_and_band_order(tmp_path):
    images = _images()
    path = write_cutouts_fits(tmp_path / "c.fits", images, BANDS, pixel_scale=SCALE)
    cut = read(path)
    np.testing.assert_array_equal(cut.images, images)
    assert cut.ids == ["c:0", "c:1", "c:2"] and not cut.flags.any()


def test_bands_are_matched_by_filter_keyword_whatever_the_hdu_order(tmp_path):
    images = _images(1)[0]
    order = [2, 0, 1]
    path = _mef(
        tmp_path / "s.fits",
        [images[i] for i in order],
        filters=[("F336W", "F438W", "F814W")[i] for i in order],
    )
    np.testing.assert_array_equal(read(path).images[0], images)


def test_cube_layout_with_band_keywords(tmp_path):
    images = _images(2)
    hdu = fits.PrimaryHDU(images)
    for c, b in enumerate(BANDS):
        hdu.header[f"BAND{c + 1}"] = b
    hdu.writeto(tmp_path / "cube.fits")
    np.testing.assert_array_equal(read(tmp_path / "cube.fits").images, images)


def test_counts_are_converted_with_exptime(tmp_path):
    images = _images(1)[0]
    path = _mef(tmp_path / "counts.fits", images * 500.0, BUNIT="ELECTRONS", EXPTIME=500.0)
    np.testing.assert_allclose(read(path).images[0], images, rtol=1e-6)


def test_folder_is_read_in_sorted_order(tmp_path):
    a, b = _images(1, 1), _images(2, 2)
    write_cutouts_fits(tmp_path / "b.fits", b, BANDS, pixel_scale=SCALE)
    write_cutouts_fits(tmp_path / "a.fits", a, BANDS, pixel_scale=SCALE)
    cut = read(tmp_path)
    np.testing.assert_array_equal(cut.images, np.concatenate([a, b]))
    assert cut.ids == ["a", "b:0", "b:1"]


def test_nan_pixels_are_filled_with_band_median_and_flagged(tmp_path):
    images = _images(2)
    images[1, 2, 3, 4] = np.nan
    cut = read(write_cutouts_fits(tmp_path / "m.fits", images, BANDS, pixel_scale=SCALE))
    assert np.isfinite(cut.images).all()
    assert cut.flags.tolist() == [0, FLAG_MASKED]
    finite = images[1, 2][np.isfinite(images[1, 2])]
    assert cut.images[1, 2, 3, 4] == pytest.approx(np.median(finite), rel=1e-6)


def test_catalogue_cutting_in_pixels_and_sky_coordinates(tmp_path):
    rng = np.random.default_rng(3)
    big = rng.normal(1, 0.1, size=(len(BANDS), 100, 120)).astype(np.float32)
    files = []
    for c, filt in enumerate(("F336W", "F438W", "F814W")):
        hdu = fits.PrimaryHDU(big[c])
        hdu.header["INSTRUME"], hdu.header["DETECTOR"], hdu.header["FILTER"] = "WFC3", "UVIS", filt
        _wcs_header(hdu.header, nx=120, ny=100)
        files.append(tmp_path / f"{filt}.fits")
        hdu.writeto(files[-1])
    Table({"id": ["a", "b"], "x": [30.0, 70.0], "y": [40.0, 50.0]}).write(tmp_path / "cat.ecsv")
    cut = read_catalog_cutouts(
        files, tmp_path / "cat.ecsv", BANDS, image_size=SIZE, pixel_scale=SCALE
    )
    # Cutout2D centres an even-sized cutout so that the position falls at index size/2
    np.testing.assert_array_equal(cut.images[0], big[:, 32:48, 22:38])
    sky = Table({"ra": cut.ra, "dec": cut.dec})
    sky.write(tmp_path / "sky.csv", format="ascii.csv")
    again = read_catalog_cutouts(
        files, tmp_path / "sky.csv", BANDS, image_size=SIZE, pixel_scale=SCALE
    )
    np.testing.assert_array_equal(again.images, cut.images)
    Table({"x": [2.0], "y": [50.0]}).write(tmp_path / "edge.ecsv")
    with pytest.raises(InputError, match="off or too close to the edge"):
        read_catalog_cutouts(
            files, tmp_path / "edge.ecsv", BANDS, image_size=SIZE, pixel_scale=SCALE
        )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: _mef(p, _images(1)[0][:2], filters=("F336W", "F438W")),
            r"missing \['WFC3_UVIS_F814W'\]",
        ),
        (
            lambda p: _mef(p, _images(1)[0], filters=("F336W", "F438W", "F555W")),
            "F555W .* not one of the model's bands",
        ),
        (
            lambda p: _mef(
                p, [np.ones((SIZE, SIZE)), np.ones((SIZE, SIZE)), np.ones((SIZE + 2, SIZE))]
            ),
            "shapes differ",
        ),
        (
            lambda p: _mef(p, [np.full((SIZE, SIZE), np.nan)] + list(_images(1)[0][1:])),
            "no finite pixel",
        ),
        (lambda p: _mef(p, [np.full((SIZE, SIZE), 3.0)] + list(_images(1)[0][1:])), "is constant"),
        (
            lambda p: _mef(p, _images(1)[0], BUNIT="COUNTS", EXPTIME=-10.0),
            "EXPTIME must be positive",
        ),
        (lambda p: _mef(p, _images(1)[0], BUNIT="MJY/SR"), "unsupported BUNIT 'MJY/SR'.*PHOTFLAM"),
        (lambda p: _mef(p, _images(1)[0], BUNIT="JY"), "BUNIT is JY but PHOTFNU is missing"),
        (lambda p: p.write_text("this is not FITS"), "not a readable FITS file"),
        (
            lambda p: _mef(
                p, [np.random.default_rng(0).normal(size=(2 * SIZE, 2 * SIZE)) for _ in range(3)]
            ),
            "the model reads",
        ),
    ],
    ids=[
        "missing-band",
        "unknown-band",
        "mismatched-shapes",
        "all-nan",
        "constant",
        "negative-exptime",
        "bad-unit",
        "jy-without-photfnu",
        "not-fits",
        "wrong-size",
    ],
)
def test_bad_input_raises_one_clear_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.fits"
    make(path)
    with pytest.raises(InputError, match=message) as err:
        read(path)
    assert "bad.fits" in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_and_wrong_pixel_scale(tmp_path):
    good = write_cutouts_fits(tmp_path / "good.fits", _images(), BANDS, pixel_scale=SCALE)
    data = good.read_bytes()
    (tmp_path / "trunc.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.fits"):
        read(tmp_path / "trunc.fits")
    coarse = write_cutouts_fits(tmp_path / "coarse.fits", _images(), BANDS, pixel_scale=0.05)
    with pytest.raises(InputError, match="pixel scale 0.0500"):
        read(coarse)


def test_flux_densities_are_converted_with_photflam_photfnu_or_a_zero_point(tmp_path):
    images = _images(1)[0]
    photflam = 1.3e-18  # erg/s/cm2/A per e-/s
    path = _mef(tmp_path / "flam.fits", images * photflam, BUNIT="ERG/S/CM2/A", PHOTFLAM=photflam)
    np.testing.assert_allclose(read(path).images[0], images, rtol=1e-5)
    path = _mef(tmp_path / "fnu.fits", images * 2e-7, BUNIT="JY", PHOTFNU=2e-7)
    np.testing.assert_allclose(read(path).images[0], images, rtol=1e-5)
    # image zero point 25 (1 unit = 25 mag); model zero point 24 (1 e-/s = 24 mag): 1 unit = 10**-0.4 e-/s
    path = _mef(tmp_path / "zp.fits", images, BUNIT="ADU/S", MAGZERO=25.0)
    cut = read(path, zero_points=dict.fromkeys(BANDS, 24.0))
    np.testing.assert_allclose(cut.images[0], images * 10**-0.4, rtol=1e-5)
    with pytest.raises(InputError, match="unsupported BUNIT 'ADU/S'"):
        read(path)  # without the model's zero points the images cannot be converted


def test_acs_filter1_filter2_keywords_and_explicit_bands(tmp_path):
    bands = ("ACS_WFC_F475W", "ACS_WFC_F814W")
    images = _images(1)[0][:2]
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["INSTRUME"], hdus[0].header["DETECTOR"] = (
        "ACS",
        "WFC",
    )  # inherited by the extensions
    for data, (f1, f2) in zip(images, [("F475W", "CLEAR2L"), ("CLEAR1L", "F814W")], strict=True):
        hdu = fits.ImageHDU(data)
        hdu.header["FILTER1"], hdu.header["FILTER2"] = f1, f2
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(tmp_path / "acs.fits")
    cut = read_cutouts(tmp_path / "acs.fits", bands, image_size=SIZE)
    np.testing.assert_array_equal(cut.images[0], images)
    swapped = read_cutouts(tmp_path / "acs.fits", bands, image_size=SIZE, bands=bands[::-1])
    np.testing.assert_array_equal(swapped.images[0], images[::-1])
    with pytest.raises(InputError, match="2 image HDUs but 3 bands"):
        read_cutouts(tmp_path / "acs.fits", bands, image_size=SIZE, bands=BANDS)
    with pytest.raises(InputError, match=r"acs.fits\[1\].*F475W .*--bands"):
        read(tmp_path / "acs.fits")  # ACS filters are not the WFC3 model's bands


def test_header_without_filter_asks_for_bands(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_images(1)[0][0])]).writeto(
        tmp_path / "nofilter.fits"
    )
    with pytest.raises(InputError, match=r"nofilter.fits\[1\]: no FILTER keyword.*--bands"):
        read(tmp_path / "nofilter.fits")


def test_catalogue_errors_name_the_catalogue(tmp_path):
    big = fits.PrimaryHDU(np.random.default_rng(0).normal(size=(50, 50)))
    big.header["FILTER"] = "F336W"
    big.header["INSTRUME"], big.header["DETECTOR"] = "WFC3", "UVIS"
    big.writeto(tmp_path / "f336w.fits")
    Table({"a": [1.0]}).write(tmp_path / "cat.ecsv")
    with pytest.raises(InputError, match="cat.ecsv: needs columns x, y"):
        read_catalog_cutouts(
            [tmp_path / "f336w.fits"], tmp_path / "cat.ecsv", BANDS[:1], image_size=SIZE
        )
    Table({"ra": [204.25], "dec": [-29.87]}).write(tmp_path / "sky.ecsv")
    with pytest.raises(InputError, match="no celestial WCS"):
        read_catalog_cutouts(
            [tmp_path / "f336w.fits"], tmp_path / "sky.ecsv", BANDS[:1], image_size=SIZE
        )
    (tmp_path / "broken.csv").write_text("x,y\n1,2,3,4\n")
    with pytest.raises(InputError, match="broken.csv: cannot read the catalogue"):
        read_catalog_cutouts(
            [tmp_path / "f336w.fits"], tmp_path / "broken.csv", BANDS[:1], image_size=SIZE
        )
    Table({"x": [500.0], "y": [10.0]}).write(tmp_path / "off.ecsv")
    with pytest.raises(InputError, match="row 0 .* off or too close to the edge"):
        read_catalog_cutouts(
            [tmp_path / "f336w.fits"], tmp_path / "off.ecsv", BANDS[:1], image_size=SIZE
        )


def test_ids_drop_only_the_fits_suffix_and_collisions_are_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_cutouts_fits(folder / "cut.1.fits", _images(2), BANDS, pixel_scale=SCALE)
    write_cutouts_fits(folder / "cut.2.fits", _images(1), BANDS, pixel_scale=SCALE)
    assert read(folder).ids == ["cut.1:0", "cut.1:1", "cut.2"]
    write_cutouts_fits(folder / "cut.2.fit", _images(1), BANDS, pixel_scale=SCALE)
    with pytest.raises(InputError, match="cut.2.fit and .*cut.2.fits both give the cutout id"):
        read(folder)


def test_extname_and_filter_must_agree(tmp_path):
    path = write_cutouts_fits(tmp_path / "c.fits", _images(1), BANDS, pixel_scale=SCALE)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["FILTER"] = "F814W"  # EXTNAME says WFC3_UVIS_F336W
    with pytest.raises(InputError, match="EXTNAME says band WFC3_UVIS_F336W .* WFC3_UVIS_F814W"):
        read(path)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["FILTER"] = "CLEAR1L"  # no filter named: EXTNAME decides
    assert read(path).images.shape == (1, 3, SIZE, SIZE)
