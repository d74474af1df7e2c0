"""CatalogueSimulator: θ (+ nuisances) → a catalogue row of integrated multi-band photometry.

This module owns the simulation of photometric catalogues of star clusters: the integrated
light of each cluster from the same stellar physics as the image simulator (isochrones,
SED-consistent extinction, stochastic IMF sampling above a fluctuation threshold and IMF-expected
light below it: :func:`simulators.cluster.sbf_threshold_table`, :func:`simulators.cluster.drawn_mass_range`),
the catalogue's errors (:mod:`simulators.photerrors`), non-detections and bands outside the
footprint, and its own card. It satisfies :class:`simulators.base.Simulator`. It must not read
catalogue files or know about networks.

Presets (``simulators/presets/catalogue/<name>.json``) hold the band columns, the error models
fitted to real catalogues (with the command that fitted them) and the band sets ("layouts") of
the surveyed fields.

Observation
-----------
The simulator works in **absolute** magnitudes, observed magnitude minus the distance modulus
μ, so one model serves every galaxy: μ is drawn per sample (``distance_modulus_range``) only to
place the source on the catalogue's magnitude–error relation. One row is an array (C, 4) for the
C band columns of the preset:

* ``[:, 0]`` measured absolute magnitude ``m_obs − μ`` (mag); for a non-detection the absolute
  nominal detection limit ``m_lim − μ`` (mag); 0 where the band is missing;
* ``[:, 1]`` log10 of the reported 1σ error (log10 mag); 0 unless measured;
* ``[:, 2]`` 1 where measured, else 0;
* ``[:, 3]`` 1 where observed but not detected (LEGUS 99.999), else 0.

A band outside the footprint (LEGUS 66.666) or absent from the field's band set has all four
entries 0. Per sample: a layout (band set) is drawn with the preset's weights; the UV pair is
outside the footprint with probability ``uv_missing_probability``; every other band but the
reference band (F555W, which defines LEGUS catalogues) with ``band_missing_probability``; the
depth of the field shifts every band's error relation by ``depth_shift`` mag (uniform in
``depth_shift_range``, plus ±0.25 mag per band), covering fields deeper and shallower than the
fitted ones.

θ = (log age, log mass, log r_h, A_V): the size does not enter integrated photometry, so its
posterior is its prior; it is kept for a common parameter order with the image models. Labels:
every sample is a cluster (label 1) unless labels are given; a background sample (label 0) has
every band missing. ``visibility`` is the S/N of the reference band, 1.0857 / σ (0 if not
measured).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .batch import SimulationBatch
from .cluster import drawn_mass_range, sbf_threshold_table
from .errors import SimulatorError
from .photerrors import POGSON, BandErrorModel, observe_magnitudes
from .priors import DEFAULT_PRIOR, ClusterPrior

__all__ = [
    "CATALOGUE_KIND",
    "CATALOGUE_PRESET_DIR",
    "LEGUS_PRIOR",
    "CatalogueOptions",
    "CatalogueSimulator",
    "available_catalogue_presets",
    "load_catalogue_preset",
    "encode_observations",
]

CATALOGUE_KIND = "simulators.catalogue.CatalogueSimulator"
"""The kind the simulator's card names (its ``simulator`` entry); see :mod:`simulators.registry`."""

CATALOGUE_PRESET_DIR = Path(__file__).resolve().parent / "presets" / "catalogue"

LEGUS_PRIOR = DEFAULT_PRIOR.with_bounds(log_age=(6.05, 10.0), log_mass=(2.5, 6.5), av=(0.0, 4.0))
"""Prior of the LEGUS catalogue presets: log age 6.05–10 (the drawn-star threshold table
reaches 0.05 dex beyond the prior, and the isochrone tables start at 6.0), log M 2.5–6.5, A_V 0–4 mag (uniform);
log r_h as :data:`simulators.priors.DEFAULT_PRIOR` (it does not enter the photometry)."""

N_FEATURES = 4
"""Entries per band column of an observation (see the module docstring)."""


def available_catalogue_presets() -> tuple[str, ...]:
    """Names of the shipped catalogue presets (``legus-uvis``, ``legus-acs-uvis``)."""
    names = []
    for path in sorted(CATALOGUE_PRESET_DIR.glob("*.json")):
        names.extend(json.loads(path.read_text()).get("presets", {}))
    return tuple(sorted(names))


def load_catalogue_preset(name: str) -> dict:
    """The preset ``name`` as a dict: band columns, layouts and error models, layout weights.

    Raises
    ------
    SimulatorError
        ``name`` is not a shipped catalogue preset.
    """
    for path in sorted(CATALOGUE_PRESET_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        if name in data.get("presets", {}):
            out = {k: v for k, v in data.items() if k != "presets"}
            out["name"] = name
            out["layout_weights"] = dict(data["presets"][name]["layout_weights"])
            out["description"] = data["presets"][name].get("description", "")
            return out
    raise SimulatorError(
        f"unknown catalogue preset {name!r}; shipped: {', '.join(available_catalogue_presets())}"
    )


@dataclass(frozen=True)
class CatalogueOptions:
    """Physics and nuisance settings of :class:`CatalogueSimulator` (recorded in the card).

    Parameters
    ----------
    feh : float
        [Fe/H] (dex) of the isochrones.
    family : str
        Isochrone family (``"mist"``, ``"parsec"``).
    imf : str
        IMF name.
    sbf_tolerance : float
        Largest fraction of the fluctuation power left to the IMF-expected (smooth) light.
    max_stars : int
        Cap on the expected number of individually drawn stars per cluster.
    distance_modulus_range : (float, float)
        Uniform range of μ (mag).
    depth_shift_range : (float, float)
        Uniform range of the shift of every band's error relation (mag; + is deeper).
    band_depth_jitter : float
        Extra per-band shift, uniform in ±this (mag).
    uv_missing_probability : float
        Probability that the two UV bands are outside the footprint.
    band_missing_probability : float
        Probability that any other band (not the reference band) is outside the footprint.
    stochastic_imf : bool
        True (default): stars above the fluctuation threshold are drawn one by one from the IMF.
        False: every cluster has the IMF-expected (fully sampled, deterministic) light of
        :meth:`simulators.population.StellarPopulation.integrated_magnitudes`, as SED-fitting
        codes with IMF-averaged models assume; errors, non-detections and missing bands are
        drawn as in the stochastic case.
    """

    feh: float = 0.0
    family: str = "mist"
    imf: str = "kroupa"
    sbf_tolerance: float = 0.02
    max_stars: int = 5000
    distance_modulus_range: tuple[float, float] = (27.5, 31.5)
    depth_shift_range: tuple[float, float] = (-1.0, 1.0)
    band_depth_jitter: float = 0.25
    uv_missing_probability: float = 0.3
    band_missing_probability: float = 0.03
    stochastic_imf: bool = True

    def __post_init__(self) -> None:
        for name in ("uv_missing_probability", "band_missing_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SimulatorError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo, hi = self.distance_modulus_range
        if not lo <= hi:
            raise SimulatorError(f"distance_modulus_range must be (low, high), got {(lo, hi)}")
        if not isinstance(self.stochastic_imf, bool):
            raise SimulatorError(
                f"stochastic_imf must be true or false, got {self.stochastic_imf!r}"
            )


def encode_observations(
    abs_mag: torch.Tensor,
    log_sigma: torch.Tensor,
    measured: torch.Tensor,
    nondetected: torch.Tensor,
    abs_limit: torch.Tensor,
) -> torch.Tensor:
    """Catalogue rows (B, C, 4) from their parts (the layout of the module docstring).

    Parameters
    ----------
    abs_mag : torch.Tensor
        (B, C) measured absolute magnitudes ``m − μ`` (any value where not measured).
    log_sigma : torch.Tensor
        (B, C) log10 reported error (any value where not measured).
    measured, nondetected : torch.Tensor
        (B, C) bool.
    abs_limit : torch.Tensor
        (B, C) absolute nominal detection limit ``m_lim − μ`` (mag).
    """
    zero = torch.zeros_like(abs_mag)
    value = torch.where(measured, abs_mag, torch.where(nondetected, abs_limit, zero))
    return torch.stack(
        [
            value,
            torch.where(measured, log_sigma, zero),
            measured.float(),
            nondetected.float(),
        ],
        -1,
    ).float()


class CatalogueSimulator:
    """Integrated photometry of clusters as a catalogue records it (a :class:`simulators.base.Simulator`).

    Parameters
    ----------
    preset : str or dict
        Catalogue preset name (``"legus-uvis"``, ``"legus-acs-uvis"``) or its dict
        (:func:`load_catalogue_preset`).
    prior : ClusterPrior
        Prior over θ (default :data:`LEGUS_PRIOR`).
    device : str or torch.device
        Where the simulation runs.
    population : StellarPopulation, optional
        Use this population (must have the preset's bands).
    **options
        Fields of :class:`CatalogueOptions`.

    Examples
    --------
    >>> sim = CatalogueSimulator("legus-uvis")                      # doctest: +SKIP
    >>> sim.simulate(4, torch.Generator().manual_seed(0)).images.shape  # doctest: +SKIP
    torch.Size([4, 7, 4])
    """

    def __init__(
        self,
        preset: str | dict = "legus-uvis",
        prior: ClusterPrior = LEGUS_PRIOR,
        *,
        device: str | torch.device = "cpu",
        population=None,
        **options,
    ) -> None:
        self.preset = load_catalogue_preset(preset) if isinstance(preset, str) else dict(preset)
        self.prior = prior
        try:
            self.options = CatalogueOptions(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
            )
        except TypeError as err:
            raise SimulatorError(
                f"unknown catalogue option ({err}); valid: {list(CatalogueOptions.__dataclass_fields__)}"
            ) from err
        self.device = torch.device(device)
        self.bands = tuple(self.preset["bands"])
        self.observation_shape = (len(self.bands), N_FEATURES)
        self.reference_band = self.preset["reference_band"]
        self.layouts = self.preset["layouts"]
        weights = self.preset["layout_weights"]
        unknown = set(weights) - set(self.layouts)
        if unknown:
            raise SimulatorError(f"layout weights name unknown layouts {sorted(unknown)}")
        self.layout_names = tuple(weights)
        w = torch.tensor([float(weights[k]) for k in self.layout_names])
        self.layout_probs = (w / w.sum()).to(self.device)
        self.nominal_limit = torch.tensor(
            [float(self.preset["nominal_limit"][b]) for b in self.bands], device=self.device
        )
        self._layout_models = []
        for name in self.layout_names:
            models = self.layouts[name]["error_models"]
            self._layout_models.append(
                [BandErrorModel.from_dict(models[b]) if b in models else None for b in self.bands]
            )
        self.uv_bands = [self.bands.index(b) for b in self.preset.get("uv_bands", [])]
        if population is None:
            from .population import StellarPopulation

            population = StellarPopulation(
                self.bands,
                feh=self.options.feh,
                family=self.options.family,
                imf=self.options.imf,
            )
        if tuple(population.bands) != self.bands:
            raise SimulatorError(
                f"population bands {tuple(population.bands)} differ from the preset's {self.bands}"
            )
        self.population = population.to(self.device)
        self.imf = self.population.imf
        p = self.prior.parameter("log_age")
        self._threshold = sbf_threshold_table(
            self.population, self.imf, (p.low, p.high), self.options.sbf_tolerance, self.device
        )

    # ------------------------------------------------------------------ physics
    def draw_stars(
        self, theta: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Individually drawn stars and the IMF-expected light of the rest.

        Parameters
        ----------
        theta : torch.Tensor
            (B, D) cluster parameters.
        generator : torch.Generator
            Source of the star draws.

        Returns
        -------
        star_index : torch.Tensor
            (S,) cluster of each drawn star.
        star_mag : torch.Tensor
            (S, C) absolute magnitudes of the drawn stars (+inf for remnants).
        smooth_flux : torch.Tensor
            (B, C) IMF-expected flux of the stars below the drawn range, in units where an
            absolute magnitude of 0 has flux 1.
        """
        idx = self.prior.index
        log_age, log_mass = theta[:, idx("log_age")], theta[:, idx("log_mass")]
        av = theta[:, idx("av")]
        m_thr, m_live = drawn_mass_range(
            self._threshold, self.population, self.imf, log_age, log_mass, self.options.max_stars
        )
        mass = 10 ** log_mass.double()
        lam = mass * self.imf.number_per_mass(m_thr.double(), m_live.double()).double()
        n_st = torch.poisson(lam, generator=generator).long()
        sidx = torch.repeat_interleave(torch.arange(len(theta), device=self.device), n_st)
        u = torch.rand(len(sidx), 1, generator=generator, device=self.device)
        if len(sidx):
            m = self.imf.sample(u, m_thr[sidx, None], m_live[sidx, None]).float()[:, 0]
            mags = self.population.star_magnitudes_flat(log_age[sidx], m, av[sidx]).float()
        else:
            mags = torch.zeros(0, len(self.bands), device=self.device)
        smooth = mass[:, None] * self.population.unresolved_flux_per_mass(log_age, av, m_thr)
        return sidx, mags, smooth.double()

    def integrated_magnitudes(
        self, theta: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Total absolute Vega magnitudes (B, C) of the clusters ``theta``.

        Stochastic IMF (the default): ``M = −2.5 log10(Σ_stars 10^(−0.4 M_i) + F_smooth)`` per
        band, with the stars and smooth light of :meth:`draw_stars`; +inf if a cluster has no
        light in a band. With ``stochastic_imf=False``: the IMF-expected magnitudes of the whole
        population (:meth:`simulators.population.StellarPopulation.integrated_magnitudes`), and
        ``generator`` is not used.
        """
        if not self.options.stochastic_imf:
            idx = self.prior.index
            return self.population.integrated_magnitudes(
                theta[:, idx("log_age")], theta[:, idx("av")], theta[:, idx("log_mass")]
            ).float()
        sidx, mags, smooth = self.draw_stars(theta, generator)
        flux = torch.where(torch.isfinite(mags), 10 ** (-0.4 * mags.double()), 0.0)
        total = smooth.clone().index_add_(0, sidx, flux)
        return (
            (-2.5 * torch.log10(total.clamp(min=1e-300)))
            .float()
            .where(total > 0, torch.full_like(total, float("inf"), dtype=torch.float32))
        )

    # ------------------------------------------------------------------ contract
    def simulate(
        self,
        n: int,
        generator: torch.Generator,
        *,
        theta: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
    ) -> SimulationBatch:
        """Simulate ``n`` catalogue rows.

        Parameters
        ----------
        n : int
            Number of rows.
        generator : torch.Generator
            Source of all randomness, on the simulator's device.
        theta : torch.Tensor, optional
            (n, D) parameters; drawn from the prior if not given.
        label : torch.Tensor, optional
            (n,) 1 = cluster (default), 0 = no source (all bands missing).

        Returns
        -------
        SimulationBatch
            ``images`` float32 (n, C, 4) catalogue rows (see the module docstring), θ, label,
            visibility (S/N of the reference band); nuisances ``distance_modulus`` (mag),
            ``depth_shift`` (mag), ``layout`` (index into :attr:`layout_names`),
            ``abs_mag_true`` (n, C) true absolute magnitudes.
        """
        dev = self.device
        if generator.device != dev:
            raise SimulatorError(
                f"generator is on {generator.device} but the simulator runs on {dev}; "
                f"use torch.Generator(device='{dev}')"
            )
        if theta is None:
            theta = self.prior.sample(n, generator, device=dev)
        theta = torch.as_tensor(theta, dtype=torch.float32, device=dev).reshape(n, self.prior.dim)
        if label is None:
            label = torch.ones(n, dtype=torch.long, device=dev)
        label = torch.as_tensor(label, device=dev).long().reshape(n).clone()
        seeds = torch.randint(0, 2**62, (3,), generator=generator, device=dev).tolist()
        g_stars, g_nuis, g_noise = (torch.Generator(device=dev).manual_seed(int(s)) for s in seeds)
        c = len(self.bands)
        abs_true = self.integrated_magnitudes(theta, g_stars)
        opt = self.options
        rnd = torch.rand(n, 3 + 2 * c, generator=g_nuis, device=dev)
        lo, hi = opt.distance_modulus_range
        mu = lo + (hi - lo) * rnd[:, 0]
        dlo, dhi = opt.depth_shift_range
        shift = dlo + (dhi - dlo) * rnd[:, 1]
        layout = torch.multinomial(self.layout_probs, n, replacement=True, generator=g_nuis)
        jitter = opt.band_depth_jitter * (2 * rnd[:, 3 : 3 + c] - 1)
        missing_draw = rnd[:, 3 + c :]
        # band availability: layout, UV footprint, other footprint gaps (never the reference band)
        available = torch.zeros(n, c, dtype=torch.bool, device=dev)
        measured = torch.zeros(n, c, dtype=torch.bool, device=dev)
        mag = torch.zeros(n, c, device=dev)
        sigma = torch.ones(n, c, device=dev)
        for li, models in enumerate(self._layout_models):
            rows = (layout == li).nonzero().flatten()
            cols = [j for j, m in enumerate(models) if m is not None]
            if len(rows) == 0:
                continue
            m_obs, s_obs, det = observe_magnitudes(
                abs_true[rows][:, cols] + mu[rows, None],
                [models[j] for j in cols],
                g_noise,
                depth_shift=shift[rows, None] + jitter[rows][:, cols],
            )
            colt = torch.tensor(cols, device=dev)
            available[rows[:, None], colt[None, :]] = True
            measured[rows[:, None], colt[None, :]] = det
            mag[rows[:, None], colt[None, :]] = torch.nan_to_num(m_obs)
            sigma[rows[:, None], colt[None, :]] = torch.nan_to_num(s_obs, nan=1.0)
        ref = self.bands.index(self.reference_band)
        gap = missing_draw < opt.band_missing_probability
        gap[:, ref] = False
        if self.uv_bands:
            uv_out = rnd[:, 2] < opt.uv_missing_probability
            gap[:, self.uv_bands] |= uv_out[:, None]
        available &= ~gap & (label == 1)[:, None]
        measured &= available
        nondetected = available & ~measured
        x = encode_observations(
            mag - mu[:, None],
            torch.log10(sigma.clamp(min=1e-6)),
            measured,
            nondetected,
            self.nominal_limit[None, :] - mu[:, None],
        )
        vis = torch.where(measured[:, ref], POGSON / sigma[:, ref], torch.zeros(n, device=dev))
        nuis = {
            "distance_modulus": mu,
            "depth_shift": shift,
            "layout": layout.float(),
            "abs_mag_true": abs_true,
        }
        return SimulationBatch(theta, x, label, vis.float(), nuis)

    def card(self) -> dict:
        """JSON-serialisable description of everything that defines the simulated data."""
        return {
            "simulator": CATALOGUE_KIND,
            "preset": self.preset,
            "prior": self.prior.to_dict(),
            "photometry_table_id": [self.population.table_id],
            "imf": repr(self.imf),
            "options": asdict(self.options),
            "observation": (
                "per band column: [absolute magnitude m - mu (or the absolute nominal detection "
                "limit if not detected, 0 if missing), log10 reported error (0 unless measured), "
                "measured (0/1), not detected (0/1)]"
            ),
            "visibility_definition": "S/N of the reference band, 1.0857 / sigma_mag (0 if not measured)",
            "distance_modulus": "an input at inference: observations are absolute magnitudes",
        }

    @classmethod
    def from_card(cls, card: dict, device: str | torch.device = "cpu") -> CatalogueSimulator:
        """The simulator that wrote ``card`` (the output of :meth:`card`), on ``device``.

        Raises
        ------
        SimulatorError
            ``card`` is not a catalogue-simulator card or lacks an entry.
        """
        if card.get("simulator") != CATALOGUE_KIND:
            raise SimulatorError(f"not a {CATALOGUE_KIND} card: it names {card.get('simulator')!r}")
        try:
            return cls(
                card["preset"],
                ClusterPrior.from_dict(card["prior"]),
                device=device,
                **card.get("options", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SimulatorError):
                raise
            raise SimulatorError(
                f"incomplete {CATALOGUE_KIND} card ({type(err).__name__}: {err})"
            ) from err
