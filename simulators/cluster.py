"""ClusterSimulator: θ (+ nuisances) → multi-band cutouts, labels and visibility, batched in torch.

This module owns the simulation of a batch: drawing θ and the nuisances, choosing which stars are
drawn individually, sampling them from the IMF, placing them with the EFF profile, adding the
smooth light of the faint stars, the field background and the noise, and computing the
visibility, and its own card (:meth:`ClusterSimulator.card`, :meth:`ClusterSimulator.from_card`).
Physics (isochrones, IMF, photometry) comes from :mod:`simulators.population` and
:mod:`simulators.imf`; images from :mod:`simulators.render`; noise from :mod:`simulators.noise`;
what lies behind the clusters from a :class:`simulators.background.Background` built once from
``SimulatorOptions.background``. It satisfies :class:`simulators.base.Simulator`. It must not
train or infer, nor know how a background is drawn.

Per cluster (label 1), with θ = (log age, log M, log r_h, A_V):

1. **Drawn vs smooth stars.** A per-sample initial-mass threshold ``m_thr`` splits the stars.
   Stars in ``[m_thr, m_live(age)]`` are drawn individually: their number is
   ``N ~ Poisson(M · n_IMF(m_thr, m_live))`` and their masses come from the truncated IMF. Stars
   below ``m_thr`` are deposited as smooth light ``M · unresolved_flux_per_mass(age, A_V, m_thr)``
   with the EFF profile. ``m_thr(age)`` is tabulated at construction as the largest mass such
   that stars below it carry at most ``sbf_tolerance`` of the population's
   surface-brightness-fluctuation power ``Σ n(m) L(m)²`` in every band (default 2 %); so the drawn stars carry
   the fluctuations and the smooth part only their mean. It is raised where needed so that the
   expected number of drawn stars stays below ``max_stars`` (the fluctuation power this removes
   is recorded per sample as the ``sbf_smooth_fraction`` nuisance).
2. **Positions.** Projected EFF profile with slope γ (nuisance, uniform in ``gamma_range``),
   truncated at ``eff_truncation · r_h``, core scale solved so that ``r_h`` is the projected
   half-light radius (:mod:`simulators.profiles`); centre at the cutout centre plus a uniform
   sub-pixel offset (nuisance).
3. **Image.** One batched phase-plane render of cluster stars, field stars and smooth light
   (:class:`simulators.render.PhaseRenderer`), galaxy light added, then Poisson + read noise
   (:class:`simulators.noise.NoiseModel`). Images are sky-subtracted, e⁻/s per pixel.

Background-only samples (label 0) go through exactly the same field, galaxy light and noise, with
no cluster; a fraction ``hard_negative_fraction`` of them get a chance grouping of bright field
stars or a single bright star near the centre (``hard_negative`` nuisance, 1 or 2).

Visibility (see :mod:`simulators.noise`): aperture S/N of the cluster in the reddest band,
``S / sqrt(Σ_ap Var)`` over a circle of radius ``max(2 r_h, FWHM)`` around the cluster centre.
Here ``S`` is the cluster light whose (pre-PSF) position falls in the aperture (drawn stars in it
plus the analytic enclosed fraction of the smooth light), and ``Var`` the noise-model variance of
the full noiseless scene (cluster + field + galaxy + sky + read noise). 0 for background samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from .background import ClusterScene, StarList, background_from_option, mass_grid
from .batch import SimulationBatch
from .errors import SimulatorError
from .instruments import Instrument, get_preset
from .noise import NoiseModel, visibility
from .priors import DEFAULT_PRIOR, ClusterPrior
from .profiles import eff_core_radius, eff_enclosed_fraction, eff_sample_radius, eff_surface_density
from .psf import EffectivePSF, load_builtin_psf, load_fits_psf
from .render import PhaseRenderer

__all__ = [
    "ClusterSimulator",
    "SimulatorOptions",
    "VISIBILITY_DEFINITION",
    "CLUSTER_KIND",
    "sbf_threshold_table",
    "drawn_mass_range",
]

log = logging.getLogger(__name__)

CLUSTER_KIND = "simulators.cluster.ClusterSimulator"
"""The kind the simulator's card names (its ``simulator`` entry); see :mod:`simulators.registry`."""

VISIBILITY_DEFINITION = (
    "aperture signal-to-noise ratio of the cluster light in the reddest band: S / sqrt(sum_ap Var), aperture "
    "radius max(2 r_h, PSF FWHM) around the cluster centre; S = cluster light (drawn stars + smooth part, "
    "pre-PSF positions) inside the aperture, Var = noise-model variance of the noiseless scene "
    "(cluster + field + galaxy light + sky Poisson + read noise); 0 for background-only samples"
)


def sbf_threshold_table(
    population, imf, log_age_range: tuple[float, float], tolerance: float, device
) -> dict[str, torch.Tensor]:
    """Drawn-star mass threshold on a fine age grid (see the module docstring, step 1).

    Parameters
    ----------
    population : simulators.population.StellarPopulation
        Star magnitudes and live-mass limits.
    imf : simulators.imf.IMF
        Initial mass function.
    log_age_range : (float, float)
        log10 age / yr range to tabulate (widened by 0.05 dex on each side).
    tolerance : float
        Largest fraction of the fluctuation power Σ n L² (any band) left to stars below the
        threshold.
    device : torch.device
        Where the table lives.

    Returns
    -------
    dict
        ``ages`` (A,), ``m_thr`` (A,) M☉, ``edges`` (A, G+1) M☉ mass-cell edges and
        ``power_below`` (A, G, C): fraction of the fluctuation power of stars below each cell's
        upper edge.
    """
    lo, hi = log_age_range
    ages = torch.linspace(lo - 0.05, hi + 0.05, 143, device=device)
    m_live = population.max_live_mass(ages).double().clamp(max=imf.m_max)
    edges = mass_grid(torch.full_like(m_live, imf.m_min), m_live, 800)
    mid = torch.sqrt(edges[:, 1:] * edges[:, :-1])
    n = imf.number_per_mass(edges[:, :-1], edges[:, 1:]).double()
    mags = population.star_magnitudes(ages, mid.float(), torch.zeros_like(ages)).double()
    lum = torch.where(torch.isfinite(mags), 10 ** (-0.4 * mags), torch.zeros_like(mags))
    power = torch.cumsum(n[..., None] * lum**2, dim=1)
    power_below = power / power[:, -1:].clamp(min=1e-300)
    worst = power_below.amax(-1)  # (A, G)
    bad = worst > tolerance
    first_bad = torch.where(
        bad.any(1),
        bad.long().argmax(1),
        torch.full_like(bad[:, 0], bad.shape[1] - 1, dtype=torch.long),
    )
    m_thr = edges[
        torch.arange(len(ages)), first_bad
    ]  # lower edge of the first cell that breaks the tolerance
    return {"ages": ages, "m_thr": m_thr.float(), "edges": edges, "power_below": power_below}


def drawn_mass_range(
    table: dict[str, torch.Tensor],
    population,
    imf,
    log_age: torch.Tensor,
    log_mass: torch.Tensor,
    max_stars: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample range of individually drawn initial masses, ``(m_thr, m_live)`` in M☉.

    ``m_thr`` is the fluctuation threshold of :func:`sbf_threshold_table` (interpolated in
    log age, geometrically in mass), raised where needed so that the expected number of stars in
    ``[m_thr, m_live]`` stays below ``max_stars``; ``m_live`` is the largest live initial mass.

    Parameters
    ----------
    table : dict
        Output of :func:`sbf_threshold_table`.
    population : simulators.population.StellarPopulation
    imf : simulators.imf.IMF
    log_age, log_mass : torch.Tensor
        (B,) log10 age / yr and log10 initial mass / M☉.
    max_stars : int
        Cap on the expected number of drawn stars per cluster.
    """
    ages, m_tab = table["ages"], table["m_thr"]
    pos = ((log_age - ages[0]) / (ages[1] - ages[0])).clamp(0, len(ages) - 1.000001)
    i0 = pos.floor().long()
    w = pos - i0
    m_sbf = torch.exp(
        torch.log(m_tab[i0]) * (1 - w) + torch.log(m_tab[(i0 + 1).clamp(max=len(ages) - 1)]) * w
    )
    m_live = population.max_live_mass(log_age).float().clamp(max=imf.m_max)
    mass = 10 ** log_mass.double()
    n_all = imf.number_per_mass(torch.full_like(m_live, imf.m_min), m_live).double()
    u = (1.0 - max_stars / (mass * n_all)).clamp(0.0, 1.0)
    m_cap = imf.sample(u[:, None], torch.full_like(m_live, imf.m_min)[:, None], m_live[:, None])[
        :, 0
    ]
    m_thr = torch.minimum(torch.maximum(m_sbf, m_cap.float()), m_live)
    return m_thr, m_live


@dataclass(frozen=True)
class SimulatorOptions:
    """Accuracy and nuisance settings of :class:`ClusterSimulator` (all recorded in the card).

    Parameters
    ----------
    feh : float or sequence of float
        Metallicity [Fe/H] (dex); a sequence gives a discrete set drawn uniformly per sample.
    family : str
        Isochrone family (``"mist"`` or ``"parsec"``).
    imf : str
        IMF name (``"kroupa"``, ``"chabrier"``).
    gamma_range : (float, float)
        Uniform range of the EFF slope γ (> 2).
    eff_truncation : float
        EFF truncation radius in units of r_h.
    offset_range : float
        Centre offset drawn uniformly in ``[-offset_range, offset_range]`` px on each axis.
    n_phase : int
        Sub-pixel PSF phases per axis (2: with the renderer's quadratic phase interpolation, stellar
        peaks are within ~4 % of exact; 3: within ~1.5 %, at 9/5 of the FFT cost).
    psf_radius : int
        PSF kernel half-size (px).
    sbf_tolerance : float
        Maximum fraction of the fluctuation power Σ n L² left to the smooth component.
    max_stars : int
        Cap on the expected number of individually drawn stars per cluster.
    background : str
        ``"synthetic"`` (field stars + galaxy light), ``"none"`` (sky and detector noise only; for tests
        and pictures), or a path to a FITS cube / folder of cubes (real backgrounds: only the cluster's
        own Poisson noise is added to the real, already noisy patch). Built once into a
        :class:`simulators.background.Background` (:func:`simulators.background.background_from_option`).
    hard_negative_fraction : float
        Fraction of background-only samples that get a chance grouping (half) or a single bright
        star (half).
    field_library_size, field_seed : int
        Size and seed of the field-star library.
    noise : bool
        Add noise (False gives noiseless images; for tests and pictures).
    physics_nuisance : bool
        Marginalise the physics choices (:mod:`simulators.nuisance`): each cluster gets its own
        [Fe/H] and R_V (θ columns ``feh`` and ``rv``; the prior must carry them, e.g.
        :data:`simulators.nuisance.NUISANCE_PRIOR`, the default then) and an IMF drawn from
        Kroupa/Chabrier. Needs ``feh=0``, ``family="mist"`` and ``imf="kroupa"`` (the field's
        physics).
    chunk_size : int
        Samples per FFT chunk in the renderer (bounds its memory; ``benchmarks/simulator.py``
        compares it with twice the chunk).
    """

    feh: float | tuple[float, ...] = 0.0
    family: str = "mist"
    imf: str = "kroupa"
    gamma_range: tuple[float, float] = (2.3, 3.5)
    eff_truncation: float = 10.0
    offset_range: float = 0.5
    n_phase: int = 2
    psf_radius: int = 8
    sbf_tolerance: float = 0.02
    max_stars: int = 5000
    background: str = "synthetic"
    hard_negative_fraction: float = 0.3
    field_library_size: int = 8192
    field_seed: int = 0
    noise: bool = True
    chunk_size: int = 64
    physics_nuisance: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.gamma_range
        if not 2.0 < lo <= hi:
            raise SimulatorError(
                f"gamma_range must satisfy 2 < low <= high (finite EFF light), got {self.gamma_range}"
            )
        if not 0.0 < self.sbf_tolerance < 1.0:
            raise SimulatorError(f"sbf_tolerance must be in (0, 1), got {self.sbf_tolerance}")
        if not 0.0 <= self.hard_negative_fraction <= 1.0:
            raise SimulatorError("hard_negative_fraction must be in [0, 1]")
        if self.physics_nuisance and (
            self.feh != 0.0 or self.family != "mist" or self.imf != "kroupa"
        ):
            raise SimulatorError(
                "physics_nuisance draws [Fe/H], R_V and the IMF per cluster: leave feh, family "
                "and imf at their defaults (0.0, 'mist', 'kroupa')"
            )


def _as_list(value) -> list:
    """``value`` itself if it is a list, else a one-element list."""
    return value if isinstance(value, list) else [value]


class ClusterSimulator:
    """Batched forward model of star-cluster cutouts (CPU or CUDA, same code).

    Parameters
    ----------
    preset : str or Instrument
        Instrument preset name (``"m83-wfc3"``, ``"m31-phat"``), TOML path, or an Instrument.
    prior : ClusterPrior, optional
        Prior over θ (default :data:`simulators.priors.DEFAULT_PRIOR`, or
        :data:`simulators.nuisance.NUISANCE_PRIOR` with ``physics_nuisance=True``).
    cluster_fraction : float
        Probability that a sample is a cluster (label 1) when labels are not given.
    device : str or torch.device
        Where the simulation runs; the generator passed to :meth:`simulate` must live there.
    population : StellarPopulation, optional
        Use this population instead of building one (must have the preset's bands).
    **options
        Fields of :class:`SimulatorOptions`.

    Examples
    --------
    >>> sim = ClusterSimulator("m83-wfc3")                      # doctest: +SKIP
    >>> batch = sim.simulate(8, torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> batch.images.shape                                     # doctest: +SKIP
    torch.Size([8, 3, 64, 64])
    """

    def __init__(
        self,
        preset: str | Instrument = "m83-wfc3",
        prior: ClusterPrior | None = None,
        *,
        cluster_fraction: float = 0.5,
        device: str | torch.device = "cpu",
        population=None,
        **options,
    ) -> None:
        self.instrument = get_preset(preset)
        if not 0.0 <= cluster_fraction <= 1.0:
            raise SimulatorError(f"cluster_fraction must be in [0, 1], got {cluster_fraction}")
        self.cluster_fraction = float(cluster_fraction)
        try:
            self.options = SimulatorOptions(**options)
        except TypeError as err:
            raise SimulatorError(
                f"unknown simulator option ({err}); valid: {list(SimulatorOptions.__dataclass_fields__)}"
            ) from err
        self.prior = self._check_prior(prior)
        self.device = torch.device(device)
        inst = self.instrument
        self.bands = inst.bands
        self.observation_shape = (len(self.bands), inst.image_size, inst.image_size)
        fehs = self.options.feh if isinstance(self.options.feh, Sequence) else (self.options.feh,)
        self.feh_values = tuple(float(f) for f in fehs)
        if population is not None and self.options.physics_nuisance:
            raise SimulatorError("physics_nuisance builds its own populations: drop population=")
        if self.options.physics_nuisance:
            from .nuisance import IMF_CHOICES, PopulationBlend

            pops = [PopulationBlend(self.bands, imf=name) for name in IMF_CHOICES]
        elif population is not None:
            pops = [population]
        else:
            from .population import StellarPopulation

            pops = [
                StellarPopulation(
                    self.bands, feh=f, family=self.options.family, imf=self.options.imf
                )
                for f in self.feh_values
            ]
        for p in pops:
            if tuple(p.bands) != self.bands:
                raise SimulatorError(
                    f"population bands {tuple(p.bands)} differ from the preset's {self.bands}"
                )
        #: Populations drawn per sample: one per metallicity (a blend per IMF when marginalised).
        self.populations = [p.to(self.device) if hasattr(p, "to") else p for p in pops]
        self.imf = self.populations[0].imf
        self.flux_scale = torch.tensor(inst.flux_scale(), dtype=torch.float32, device=self.device)
        self.psfs = [self._load_psf(b) for b in inst.band_setups]
        self.fwhm_px = torch.tensor(
            [p.fwhm_arcsec() / inst.pixel_scale for p in self.psfs], device=self.device
        )
        self.renderer = PhaseRenderer(
            self.psfs,
            inst.image_size,
            n_phase=self.options.n_phase,
            radius_px=self.options.psf_radius,
            device=self.device,
            chunk_size=self.options.chunk_size,
        )
        self.noise = NoiseModel.from_instrument(inst, self.device)
        # stars whose total flux is below 5 sigma of one background pixel (sky + read noise) in every band peak
        # below ~0.85 sigma: they go to their nearest phase node (worst-case peak error ~18 % of that, < 0.15
        # sigma), which saves 9x deposits for the many faint stars of rich clusters and fields
        self.faint_flux = (
            5.0
            * self.noise.variance(torch.zeros(1, len(self.bands), 1, 1, device=self.device))
            .sqrt()
            .flatten()
        )
        self._threshold_tables = [self._sbf_threshold_table(p) for p in self.populations]
        self._canvas_y, self._canvas_x = self.renderer.canvas_coordinates()
        self.background = background_from_option(
            self.options.background,
            instrument=inst,
            population=getattr(self.populations[0], "nominal", self.populations[0]),
            noise=self.noise if self.options.noise else None,
            canvas_margin=self.renderer.radius,
            hard_negative_fraction=self.options.hard_negative_fraction,
            field_library_size=self.options.field_library_size,
            field_seed=self.options.field_seed,
            device=self.device,
        )
        # the synthetic field model (None for other backgrounds), for benchmarks and inspection
        self.field = getattr(self.background, "field", None)

    # -- construction helpers ---------------------------------------------------------------------
    def _load_psf(self, band) -> EffectivePSF:
        if band.psf == "builtin":
            return load_builtin_psf(
                band.name,
                self.instrument.pixel_scale,
                native_pixel_scale=band.native_pixel_scale,
                fwhm=band.psf_fwhm,
            )
        return load_fits_psf(
            band.psf, oversampling=band.psf_oversampling, pixel_scale=self.instrument.pixel_scale
        )

    def _check_prior(self, prior: ClusterPrior | None) -> ClusterPrior:
        """The prior to use: the default for the options, or ``prior`` if it fits them."""
        if self.options.physics_nuisance:
            from .nuisance import NUISANCE_PARAMETERS, NUISANCE_PRIOR

            if prior is None:
                return NUISANCE_PRIOR
            for p in NUISANCE_PARAMETERS:
                if p.name not in prior.nuisance_names:
                    raise SimulatorError(
                        f"physics_nuisance needs a prior with the nuisance {p.name!r} (e.g. "
                        "simulators.nuisance.NUISANCE_PRIOR)"
                    )
                q = prior.parameter(p.name)
                if q.low < p.low - 1e-9 or q.high > p.high + 1e-9:
                    raise SimulatorError(
                        f"prior of {p.name!r} [{q.low}, {q.high}] must lie within the "
                        f"interpolation nodes [{p.low}, {p.high}]"
                    )
            return prior
        if prior is None:
            return DEFAULT_PRIOR
        if prior.nuisance_names:
            raise SimulatorError(
                f"the prior carries physics nuisances {prior.nuisance_names}: "
                "they need physics_nuisance=True"
            )
        return prior

    def _sbf_threshold_table(self, population) -> dict[str, torch.Tensor]:
        """Drawn-star mass threshold table of ``population`` (see :func:`sbf_threshold_table`)."""
        p = self.prior.parameter("log_age")
        return sbf_threshold_table(
            population, population.imf, (p.low, p.high), self.options.sbf_tolerance, self.device
        )

    # -- public API ---------------------------------------------------------------------------------
    def card(self) -> dict:
        """JSON-serialisable description of everything that defines the simulated data."""
        opts = asdict(self.options)
        opts["feh"] = list(self.feh_values)
        if not opts["physics_nuisance"]:  # cards of fixed-physics simulators read as before
            del opts["physics_nuisance"]
        card = {
            "simulator": CLUSTER_KIND,
            "preset": self.instrument.to_dict(),
            "prior": self.prior.to_dict(),
            "photometry_table_id": [
                i for p in self.populations for i in _as_list(getattr(p, "table_id", "unknown"))
            ],
            "imf": repr(self.imf),
            "cluster_fraction": self.cluster_fraction,
            "options": opts,
            "psf": [
                {"band": b, "source": p.source, "fwhm_arcsec": round(p.fwhm_arcsec(), 5)}
                for b, p in zip(self.bands, self.psfs, strict=True)
            ],
            "visibility_definition": VISIBILITY_DEFINITION,
            "image_units": "e-/s per pixel, sky-subtracted",
        }
        if self.options.physics_nuisance:
            from .nuisance import nuisance_card

            card["imf"] = [repr(p.imf) for p in self.populations]
            card["nuisance_physics"] = nuisance_card()
        return card

    @classmethod
    def from_card(cls, card: dict, device: str | torch.device = "cpu") -> ClusterSimulator:
        """The simulator that wrote ``card`` (the output of :meth:`card`), on ``device``.

        The instrument, prior, cluster fraction and options are rebuilt from the card (JSON
        lists become tuples; a one-element ``feh`` list becomes a single metallicity); the
        physics tables are those of this installation.

        Raises
        ------
        SimulatorError
            If ``card`` is not a cluster-simulator card, lacks an entry or holds an invalid one.
        """
        from .instruments import Instrument

        if card.get("simulator") != CLUSTER_KIND:
            raise SimulatorError(f"not a {CLUSTER_KIND} card: it names {card.get('simulator')!r}")
        try:
            options = {
                key: tuple(value) if isinstance(value, list) else value
                for key, value in card.get("options", {}).items()
            }
            feh = options.get("feh")
            if isinstance(feh, tuple) and len(feh) == 1:
                options["feh"] = float(feh[0])
            instrument = Instrument.from_dict(card["preset"])
            prior = ClusterPrior.from_dict(card["prior"])
            cluster_fraction = float(card.get("cluster_fraction", 0.5))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SimulatorError(
                f"incomplete {CLUSTER_KIND} card ({type(err).__name__}: {err})"
            ) from err
        return cls(instrument, prior, cluster_fraction=cluster_fraction, device=device, **options)

    def mass_threshold(
        self, log_age: torch.Tensor, log_mass: torch.Tensor, group: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample drawn-star mass threshold (M☉) and the live-mass limit (M☉).

        Returns ``(m_thr, m_live)`` for clusters of population ``group`` (an index of
        :attr:`populations`); stars in [m_thr, m_live] are drawn individually (see
        :func:`drawn_mass_range`).
        """
        return drawn_mass_range(
            self._threshold_tables[group],
            self.populations[group],
            self.populations[group].imf,
            log_age,
            log_mass,
            self.options.max_stars,
        )

    def simulate(
        self,
        n: int,
        generator: torch.Generator,
        *,
        theta: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
    ) -> SimulationBatch:
        """Simulate ``n`` cutouts.

        Parameters
        ----------
        n : int
            Batch size.
        generator : torch.Generator
            Source of all randomness, on the simulator's device.
        theta : torch.Tensor, optional
            (n, 4) cluster parameters; drawn from the prior if not given.
        label : torch.Tensor, optional
            (n,) 1 = cluster, 0 = background only; drawn with ``cluster_fraction`` if not given.

        Returns
        -------
        SimulationBatch
            images float32 (n, C, H, W) e⁻/s (sky-subtracted), theta, label (int64), visibility
            (float32), nuisances: ``feh``, ``eff_gamma``, ``offset_y``, ``offset_x`` (px),
            ``mass_threshold`` (M☉), ``n_stars`` (drawn cluster stars), ``sbf_smooth_fraction``,
            then the background's: ``field_sfr_density`` (M☉ yr⁻¹ kpc⁻²) and ``n_field_stars``
            (synthetic field only), ``hard_negative``.
        """
        dev = self.device
        if generator.device != dev:
            raise SimulatorError(
                f"generator is on {generator.device} but the simulator runs on {dev}; "
                f"use torch.Generator(device='{dev}')"
            )
        opt, inst = self.options, self.instrument
        if theta is None:
            theta = self.prior.sample(n, generator, device=dev)
        else:
            theta = torch.as_tensor(theta, dtype=torch.float32, device=dev).reshape(
                n, self.prior.dim
            )
        if label is None:
            label = (torch.rand(n, generator=generator, device=dev) < self.cluster_fraction).long()
        else:
            label = torch.as_tensor(label, device=dev).long().reshape(n).clone()
        # independent streams, so that a sample's field, nuisances and noise do not depend on its label
        seeds = torch.randint(0, 2**62, (4,), generator=generator, device=dev).tolist()
        g_nuis, g_cluster, g_field, g_noise = (
            torch.Generator(device=dev).manual_seed(int(x)) for x in seeds
        )
        h = inst.image_size
        rnd = torch.rand(n, 4, generator=g_nuis, device=dev)
        gamma = opt.gamma_range[0] + (opt.gamma_range[1] - opt.gamma_range[0]) * rnd[:, 0]
        off = opt.offset_range * (2 * rnd[:, 1:3] - 1)
        centre = (h - 1) / 2.0 + off  # (y, x) px
        if opt.physics_nuisance:  # one IMF per cluster; [Fe/H] and R_V are θ columns
            group = (torch.rand(n, generator=g_nuis, device=dev) * len(self.populations)).long()
            group = group.clamp(max=len(self.populations) - 1)
            feh = theta[:, self.prior.index("feh")]
        else:  # one metallicity per cluster
            group = (rnd[:, 3] * len(self.feh_values)).long().clamp(max=len(self.feh_values) - 1)
            feh = torch.tensor(self.feh_values, device=dev)[group]
        nuis = {
            "feh": feh,
            "eff_gamma": gamma,
            "offset_y": off[:, 0],
            "offset_x": off[:, 1],
            "mass_threshold": torch.zeros(n, device=dev),
            "n_stars": torch.zeros(n, device=dev),
            "sbf_smooth_fraction": torch.zeros(n, device=dev),
        }
        c_n = len(self.bands)
        nc = self.renderer.canvas
        smooth = torch.zeros(n, c_n, nc, nc, device=dev)
        parts: list[StarList] = []
        r_h = 10 ** theta[:, self.prior.index("log_rh")] / inst.pc_per_pixel  # px
        a = eff_core_radius(r_h, gamma, opt.eff_truncation)
        r_t = opt.eff_truncation * r_h
        ap_radius = torch.maximum(2 * r_h, self.fwhm_px[-1].expand(n))
        signal_ap = torch.zeros(n, device=dev)
        if opt.physics_nuisance:
            nuis["imf_index"] = group.float()
        for fi, pop in enumerate(self.populations):
            idx = ((label == 1) & (group == fi)).nonzero().flatten()
            if len(idx) == 0:
                continue
            stars, sm, s_ap, info = self.draw_clusters(
                pop,
                fi,
                theta[idx],
                gamma[idx],
                centre[idx],
                a[idx],
                r_t[idx],
                ap_radius[idx],
                g_cluster,
            )
            stars.sample_index = idx[stars.sample_index]
            parts.append(stars)
            smooth[idx] = sm
            signal_ap[idx] = s_ap
            for k, v in info.items():
                nuis[k][idx] = v.float()

        def render(extra: Sequence[StarList]) -> torch.Tensor:
            stars = self._flat([*parts, *extra], c_n)
            return self.renderer.render(n, *stars, smooth=smooth, faint_flux=self.faint_flux)

        composite = self.background.compose(
            ClusterScene(n, label, centre, render), g_field, g_noise
        )
        nuis.update(composite.nuisances)
        red = inst.reddest_band_index
        var = self.noise.variance(composite.scene)[:, red]
        vis = torch.zeros(n, device=dev)
        cl = label == 1
        if bool(cl.any()):
            vis[cl] = visibility(signal_ap[cl], var[cl], centre[cl], ap_radius[cl])
        return SimulationBatch(theta, composite.images.float().contiguous(), label, vis, nuis)

    # -- internals -----------------------------------------------------------------------------------
    def _flat(self, parts: list[StarList], n_bands: int) -> tuple[torch.Tensor, ...]:
        if not parts:
            z = torch.zeros(0, device=self.device)
            return z.long(), z, z, torch.zeros(0, n_bands, device=self.device)
        s = StarList.cat(parts)
        return s.sample_index, s.y, s.x, s.flux

    def draw_clusters(
        self,
        pop,
        group: int,
        theta: torch.Tensor,
        gamma: torch.Tensor,
        centre: torch.Tensor,
        a: torch.Tensor,
        r_t: torch.Tensor,
        ap_radius: torch.Tensor,
        generator: torch.Generator,
    ):
        """Stars, smooth light, aperture signal and nuisances of clusters of one population.

        Parameters
        ----------
        pop : StellarPopulation or simulators.nuisance.PopulationBlend
            Population of the clusters (a blend takes each cluster's [Fe/H] and R_V from θ).
        group : int
            Index of that population in :attr:`populations`.
        theta : torch.Tensor
            (B, D) cluster parameters in the prior's order and units.
        gamma : torch.Tensor
            (B,) EFF slopes.
        centre : torch.Tensor
            (B, 2) cluster centres (y, x), px.
        a, r_t : torch.Tensor
            (B,) EFF core and truncation radii, px.
        ap_radius : torch.Tensor
            (B,) visibility aperture radius, px.
        generator : torch.Generator
            Source of the star draws.

        Returns
        -------
        stars : StarList
            Drawn stars (sample index within the B clusters, position px, flux e⁻/s per band).
        smooth : torch.Tensor
            (B, C, canvas, canvas) smooth light of the undrawn stars, e⁻/s per pixel.
        signal : torch.Tensor
            (B,) cluster light inside the visibility aperture in the reddest band, e⁻/s.
        nuisances : dict of str to torch.Tensor
            ``mass_threshold``, ``n_stars`` and ``sbf_smooth_fraction`` per cluster.
        """
        dev = self.device
        b = len(theta)
        index = self.prior.index
        log_age, log_mass = theta[:, index("log_age")], theta[:, index("log_mass")]
        av = theta[:, index("av")]
        physics = {name: theta[:, index(name)] for name in self.prior.nuisance_names}
        imf = pop.imf
        mass = 10 ** log_mass.double()
        m_thr, m_live = self.mass_threshold(log_age, log_mass, group)
        lam = mass * imf.number_per_mass(m_thr.double(), m_live.double()).double()
        n_st = torch.poisson(lam, generator=generator).long()
        sidx = torch.repeat_interleave(torch.arange(b, device=dev), n_st)
        s = len(sidx)
        u = torch.rand(s, 3, generator=generator, device=dev)
        if s:
            m = imf.sample(u[:, :1], m_thr[sidx, None], m_live[sidx, None]).float()[:, 0]
            per_star = {name: value[sidx] for name, value in physics.items()}
            mags = pop.star_magnitudes_flat(log_age[sidx], m, av[sidx], **per_star).float()
            flux = (
                torch.where(torch.isfinite(mags), 10 ** (-0.4 * mags), torch.zeros_like(mags))
                * self.flux_scale
            )
        else:
            flux = torch.zeros(0, len(self.bands), device=dev)
        rad = eff_sample_radius(
            u[:, 1].double(), a[sidx].double(), gamma[sidx].double(), r_t[sidx].double()
        ).float()
        phi = 2 * math.pi * u[:, 2]
        y = centre[sidx, 0] + rad * torch.sin(phi)
        x = centre[sidx, 1] + rad * torch.cos(phi)
        # smooth light: IMF-expected flux of stars below m_thr, EFF profile sampled at canvas pixel centres
        f_smooth = (
            mass[:, None] * pop.unresolved_flux_per_mass(log_age, av, m_thr, **physics).double()
        ).float() * self.flux_scale
        cy, cx = self._canvas_y, self._canvas_x
        r2 = (cy.view(1, -1, 1) - centre[:, 0, None, None]) ** 2 + (
            cx.view(1, 1, -1) - centre[:, 1, None, None]
        ) ** 2
        prof = eff_surface_density(r2, a.view(-1, 1, 1), gamma.view(-1, 1, 1), r_t.view(-1, 1, 1))
        edge = (
            torch.minimum(centre, (self.instrument.image_size - 1) - centre).amin(1)
            + self.renderer.radius
            + 0.5
        )
        inside = eff_enclosed_fraction(edge, a, gamma, r_t)
        prof = prof * (inside / prof.sum((1, 2)).clamp(min=1e-30)).view(-1, 1, 1)
        smooth = prof[:, None] * f_smooth[:, :, None, None]
        # visibility signal: drawn stars inside the aperture + enclosed smooth fraction (reddest band)
        red = self.instrument.reddest_band_index
        in_ap = (rad <= ap_radius[sidx]).float()
        s_ap = torch.zeros(b, device=dev).index_add_(0, sidx, flux[:, red] * in_ap)
        s_ap = s_ap + f_smooth[:, red] * eff_enclosed_fraction(ap_radius, a, gamma, r_t)
        info = {
            "mass_threshold": m_thr,
            "n_stars": n_st,
            "sbf_smooth_fraction": self._smooth_sbf(group, log_age, m_thr),
        }
        return StarList(sidx, y, x, flux), smooth, s_ap, info

    def _smooth_sbf(self, group: int, log_age: torch.Tensor, m_thr: torch.Tensor) -> torch.Tensor:
        """Fraction of fluctuation power (worst band) left in the smooth part at threshold m_thr."""
        tab = self._threshold_tables[group]
        ages, edges, frac = tab["ages"], tab["edges"], tab["power_below"]
        i = ((log_age - ages[0]) / (ages[1] - ages[0])).round().long().clamp(0, len(ages) - 1)
        e = edges[i].contiguous()  # (B, G+1)
        j = (
            torch.searchsorted(e, m_thr.double()[:, None]).squeeze(1) - 1
        )  # cells entirely below m_thr: 0..j-1
        val = frac[i, (j - 1).clamp(min=0, max=frac.shape[1] - 1)].amax(-1)
        return torch.where(j > 0, val, torch.zeros_like(val)).float()
