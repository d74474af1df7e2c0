"""Instrument presets: what a camera, its exposures and the target galaxy's distance look like.

This module owns the :class:`Instrument` and :class:`BandSetup` data classes, the shipped presets
(``simulators/presets/*.toml``) and their loading/validation. A preset is pure data: bands, pixel
scale, cutout size, distance modulus, Vega zero points, exposure times, sky, read noise, the target
FWHM of the built-in PSFs and the parameters of the synthetic field population. It must not render,
sample or know about PSF arrays (see :mod:`simulators.psf`).

Users define their own instrument either with a TOML file of the same layout as the shipped ones
(:func:`load_preset`) or directly in Python (``Instrument(...)``) and pass it to
:class:`simulators.cluster.ClusterSimulator`.

Units: pixel scale in arcsec/px; zero points are the Vega magnitudes that give 1 e⁻/s; exposure
times in s; read noise in e⁻ per exposure per pixel; sky in e⁻/s/px; surface brightness in Vega
mag/arcsec²; star-formation rate density in M☉ yr⁻¹ kpc⁻².
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import SimulatorError

__all__ = [
    "BandSetup",
    "Instrument",
    "get_preset",
    "load_preset",
    "available_presets",
    "PRESET_DIR",
]

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class BandSetup:
    """How one band is observed.

    Parameters
    ----------
    name : str
        Band name as known to :class:`simulators.population.StellarPopulation`
        (e.g. ``"WFC3_UVIS_F814W"``).
    zero_point : float
        Vega magnitude of a source giving 1 e⁻/s in total (mag).
    exposure_time : float
        Total exposure time of the (drizzled) image (s).
    n_exposures : int
        Number of exposures combined; each adds ``read_noise``² of variance (in e⁻²).
    read_noise : float
        Read noise per exposure and pixel (e⁻).
    sky : float
        Mean sky (zodiacal + earthshine) level (e⁻/s/px); subtracted from the images, only its
        Poisson noise remains.
    galaxy_sb : float
        Surface brightness of the smooth galaxy light at the preset's ``galaxy_sfr_reference``
        (Vega mag/arcsec²).
    psf_fwhm : float
        Target full width at half maximum of the built-in PSF (arcsec).
    native_pixel_scale : float
        Detector pixel scale (arcsec/px) over which the PSF is integrated before resampling.
    psf : str
        ``"builtin"`` for the shipped kernel, or a path to a FITS PSF (see
        :func:`simulators.psf.load_fits_psf`).
    psf_oversampling : int
        Oversampling factor of a FITS PSF relative to the preset's pixel scale.
    """

    name: str
    zero_point: float
    exposure_time: float
    n_exposures: int
    read_noise: float
    sky: float
    galaxy_sb: float
    psf_fwhm: float
    native_pixel_scale: float
    psf: str = "builtin"
    psf_oversampling: int = 1

    def __post_init__(self) -> None:
        checks = {
            "exposure_time": self.exposure_time > 0,
            "n_exposures": self.n_exposures >= 1,
            "read_noise": self.read_noise >= 0,
            "sky": self.sky >= 0,
            "psf_fwhm": self.psf_fwhm > 0,
            "native_pixel_scale": self.native_pixel_scale > 0,
            "psf_oversampling": self.psf_oversampling >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise SimulatorError(
                    f"band {self.name!r}: invalid {key}={getattr(self, key)!r}; exposure_time, psf_fwhm and "
                    "pixel scales must be > 0, n_exposures and psf_oversampling >= 1, read_noise and sky >= 0"
                )
        for key in ("zero_point", "galaxy_sb"):
            if not math.isfinite(getattr(self, key)):
                raise SimulatorError(f"band {self.name!r}: {key} must be a finite magnitude")


@dataclass(frozen=True)
class Instrument:
    """A camera + exposure set + target galaxy: everything that turns fluxes into a cutout.

    Parameters
    ----------
    name : str
        Preset name (e.g. ``"m83-wfc3"``).
    band_setups : tuple of BandSetup
        One entry per band, in the band order of the images.
    pixel_scale : float
        Pixel scale of the cutouts (arcsec/px).
    image_size : int
        Cutout side (px); cutouts are square.
    distance_modulus : float
        Distance modulus of the galaxy (mag).
    field_mag_limit : float
        Apparent magnitude (reddest band) of the faintest field star drawn individually; fainter
        field stars are part of the smooth galaxy light (mag).
    field_sfr_density : tuple of float
        (low, high) range of the field's constant star-formation-rate density, drawn log-uniformly
        per sample (M☉ yr⁻¹ kpc⁻²).
    galaxy_sfr_reference : float
        SFR density at which the smooth galaxy light has the bands' ``galaxy_sb``; the light scales
        linearly with the drawn SFR density (M☉ yr⁻¹ kpc⁻²).
    field_av : tuple of float
        (low, high) range of field-star extinction A_V (mag).
    description : str
        One line for humans.
    sources : tuple of str
        Where the numbers come from.

    Examples
    --------
    >>> inst = get_preset("m83-wfc3")
    >>> inst.bands
    ('WFC3_UVIS_F336W', 'WFC3_UVIS_F438W', 'WFC3_UVIS_F814W')
    >>> round(inst.pc_per_pixel, 3)
    0.878
    """

    name: str
    band_setups: tuple[BandSetup, ...]
    pixel_scale: float
    image_size: int
    distance_modulus: float
    field_mag_limit: float = 28.0
    field_sfr_density: tuple[float, float] = (0.005, 0.1)
    galaxy_sfr_reference: float = 0.03
    field_av: tuple[float, float] = (0.0, 1.0)
    description: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.band_setups:
            raise SimulatorError(
                f"instrument {self.name!r} has no bands; give at least one [[band]] entry"
            )
        names = [b.name for b in self.band_setups]
        if len(set(names)) != len(names):
            raise SimulatorError(f"instrument {self.name!r}: duplicate band names {names}")
        if not self.pixel_scale > 0 or not self.image_size >= 8:
            raise SimulatorError(
                f"instrument {self.name!r}: pixel_scale must be > 0 arcsec/px and image_size >= 8 px, got "
                f"{self.pixel_scale}, {self.image_size}"
            )
        lo, hi = self.field_sfr_density
        if not 0 < lo <= hi:
            raise SimulatorError(
                f"instrument {self.name!r}: field_sfr_density must satisfy 0 < low <= high, got {lo}, {hi}"
            )
        if not self.galaxy_sfr_reference > 0:
            raise SimulatorError(f"instrument {self.name!r}: galaxy_sfr_reference must be > 0")
        if not 0 <= self.field_av[0] <= self.field_av[1]:
            raise SimulatorError(
                f"instrument {self.name!r}: field_av must satisfy 0 <= low <= high"
            )

    # -- derived quantities ---------------------------------------------------------------------
    @property
    def bands(self) -> tuple[str, ...]:
        """Band names, in image order."""
        return tuple(b.name for b in self.band_setups)

    @property
    def zero_points(self) -> tuple[float, ...]:
        """Vega magnitudes giving 1 e⁻/s, per band (mag)."""
        return tuple(b.zero_point for b in self.band_setups)

    @property
    def sky(self) -> tuple[float, ...]:
        """Sky levels per band (e⁻/s/px)."""
        return tuple(b.sky for b in self.band_setups)

    @property
    def read_noise(self) -> tuple[float, ...]:
        """Read noise per exposure per band (e⁻)."""
        return tuple(b.read_noise for b in self.band_setups)

    @property
    def distance_pc(self) -> float:
        """Distance implied by the distance modulus (pc)."""
        return 10 ** (self.distance_modulus / 5 + 1)

    @property
    def pc_per_pixel(self) -> float:
        """Physical size of one pixel at the galaxy's distance (pc/px)."""
        return self.distance_pc * math.radians(self.pixel_scale / 3600.0)

    @property
    def reddest_band_index(self) -> int:
        """Index of the last band (presets list bands blue to red)."""
        return len(self.band_setups) - 1

    def flux_scale(self) -> list[float]:
        """Count rate (e⁻/s) of a star of *absolute* Vega magnitude 0, per band."""
        return [10 ** (-0.4 * (self.distance_modulus - b.zero_point)) for b in self.band_setups]

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in model cards); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["band_setups"] = [asdict(b) for b in self.band_setups]
        d["field_sfr_density"] = list(self.field_sfr_density)
        d["field_av"] = list(self.field_av)
        d["sources"] = list(self.sources)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Instrument:
        """Build from :meth:`to_dict` output or from a parsed TOML preset (``[[band]]`` tables).

        Raises
        ------
        SimulatorError
            If keys are missing or unknown.
        """
        data = dict(data)
        bands = data.pop("band_setups", None) or data.pop("band", None)
        if not bands:
            raise SimulatorError(
                "instrument description needs a list of bands ([[band]] tables in TOML)"
            )
        try:
            setups = tuple(BandSetup(**b) for b in bands)
            for key in ("field_sfr_density", "field_av", "sources"):
                if key in data:
                    data[key] = tuple(data[key])
            return cls(band_setups=setups, **data)
        except TypeError as err:
            raise SimulatorError(
                f"invalid instrument description ({err}); see simulators/presets/m83-wfc3.toml for the layout"
            ) from err


def available_presets() -> tuple[str, ...]:
    """Names of the shipped presets."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))


def load_preset(path: str | Path) -> Instrument:
    """Read an instrument from a TOML file laid out like ``simulators/presets/m83-wfc3.toml``.

    Parameters
    ----------
    path : str or Path
        TOML file.

    Returns
    -------
    Instrument
    """
    path = Path(path)
    if not path.is_file():
        raise SimulatorError(f"instrument preset file {str(path)!r} does not exist")
    with path.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise SimulatorError(f"{path}: not valid TOML ({err})") from err
    return Instrument.from_dict(data)


def get_preset(name: str | Instrument = "m83-wfc3") -> Instrument:
    """A shipped preset by name (``"m83-wfc3"``, ``"m31-phat"``), a TOML path, or an Instrument.

    Raises
    ------
    SimulatorError
        If the name is neither a shipped preset nor an existing TOML file.
    """
    if isinstance(name, Instrument):
        return name
    candidate = PRESET_DIR / f"{name}.toml"
    if candidate.is_file():
        return load_preset(candidate)
    if str(name).endswith(".toml") and Path(name).is_file():
        return load_preset(name)
    raise SimulatorError(
        f"unknown instrument preset {name!r}; shipped presets are {available_presets()}, or pass a path to a "
        "TOML file with the same layout, or an Instrument object"
    )
