"""Instrument presets: shipped numbers, derived quantities, TOML round trips and validation."""

import json
import math

import pytest

from simulators.errors import SimulatorError
from simulators.instruments import Instrument, available_presets, get_preset, load_preset


def test_shipped_presets_load():
    assert {"m83-wfc3", "m31-phat"} <= set(available_presets())
    m83 = get_preset("m83-wfc3")
    assert m83.bands == ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")
    assert m83.zero_points == (23.46, 24.98, 24.67)
    assert m83.image_size == 64 and m83.pixel_scale == pytest.approx(0.0396)
    assert m83.distance_modulus == pytest.approx(28.3)
    assert all(b.read_noise == pytest.approx(3.1) for b in m83.band_setups)
    phat = get_preset("m31-phat")
    assert len(phat.bands) == 6 and phat.distance_modulus == pytest.approx(24.47)
    assert phat.bands[-1] == "WFC3_IR_F160W"


def test_derived_distance_and_flux_scale():
    m83 = get_preset("m83-wfc3")
    # DM 28.3 -> 4.571 Mpc; 0.0396 arcsec = 0.8776 pc there
    assert m83.distance_pc == pytest.approx(4.5709e6, rel=1e-4)
    assert m83.pc_per_pixel == pytest.approx(
        m83.distance_pc * math.radians(0.0396 / 3600), rel=1e-9
    )
    assert m83.pc_per_pixel == pytest.approx(0.8775, abs=1e-3)
    # a star of apparent magnitude equal to the zero point gives 1 e-/s: absolute mag ZP - DM
    for zp, scale in zip(m83.zero_points, m83.flux_scale(), strict=True):
        assert scale * 10 ** (-0.4 * (zp - m83.distance_modulus)) == pytest.approx(1.0, rel=1e-12)


def test_dict_round_trip_and_json():
    m83 = get_preset("m83-wfc3")
    d = m83.to_dict()
    json.dumps(d)
    assert Instrument.from_dict(d) == m83


def test_user_toml_preset(tmp_path):
    text = (get_preset.__globals__["PRESET_DIR"] / "m83-wfc3.toml").read_text()
    text = text.replace('name = "m83-wfc3"', 'name = "my-camera"').replace(
        "distance_modulus = 28.3", "distance_modulus = 29.0"
    )
    path = tmp_path / "mine.toml"
    path.write_text(text)
    inst = get_preset(str(path))
    assert inst.name == "my-camera" and inst.distance_modulus == 29.0
    assert load_preset(path) == inst


def test_invalid_presets_raise():
    with pytest.raises(SimulatorError, match="unknown instrument preset"):
        get_preset("no-such-camera")
    d = get_preset("m83-wfc3").to_dict()
    d["band_setups"][0]["exposure_time"] = -1
    with pytest.raises(SimulatorError, match="exposure_time"):
        Instrument.from_dict(d)
    d = get_preset("m83-wfc3").to_dict()
    d["band_setups"][0]["bogus"] = 1
    with pytest.raises(SimulatorError, match="invalid instrument"):
        Instrument.from_dict(d)
