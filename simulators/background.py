"""Backgrounds of the cutouts: what lies behind a cluster, and what a background-only sample is.

This module owns the :class:`Background` interface and its three implementations, one per value
of ``SimulatorOptions.background`` (built once by :func:`background_from_option`):

* :class:`SyntheticFieldBackground` (``"synthetic"``) — a :class:`SyntheticField`: resolved field
  stars of mixed ages drawn from a constant star-formation history (the same isochrones, IMF and
  photometry as the clusters), with a surface density set by a per-sample star-formation-rate
  density, plus smooth galaxy light (the unresolved stars) with a random gentle gradient; and
  *hard negatives* for the classifier: chance groupings of a few bright field stars near the
  centre, or a single bright star. Sky and detector noise over the whole scene.
* :class:`EmptyBackground` (``"none"``) — sky and detector noise only (tests and pictures).
* :class:`ImagePatchBackground` (a path) — an :class:`ImageBackground`: random patches of real
  multi-band images (a FITS cube or a folder of them), with NaN-masked regions avoided or filled;
  only the cluster's own Poisson noise is added to the real, already noisy patch.

It also owns :class:`StarList`, the flat list of stars (cluster and field alike) that the
renderer takes. A background receives the batch's clusters as a :class:`ClusterScene` (which
renders them, together with any stars the background adds) and returns a :class:`Composite`. It
must not sample clusters, implement rendering (:mod:`simulators.render`) or the noise model
(:mod:`simulators.noise`): it calls them.

Randomness: every background draws its own quantities from the ``generator`` it is given and its
noise from ``noise_generator``, in a fixed order, so the same generator states give the same
batch.

Field model. With a constant SFR density Σ_SFR (M☉ yr⁻¹ kpc⁻²) over log age 6.5–10.1, the
expected number of field stars in a cutout of area A that are brighter than the preset's
``field_mag_limit`` (reddest band, before field extinction) is
``Σ_SFR · A · Σ_ages Δt_age · n_bright(age)``, with ``n_bright`` the IMF-expected number of such
live stars per M☉ formed. Their properties are drawn from a library of stars built once at
construction (with a fixed seed), so sampling a field costs one Poisson draw and an index per star.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import SimulatorError

__all__ = [
    "Background",
    "ClusterScene",
    "Composite",
    "EmptyBackground",
    "HARD_NEGATIVE_KINDS",
    "ImageBackground",
    "ImagePatchBackground",
    "StarList",
    "SyntheticField",
    "SyntheticFieldBackground",
    "background_from_option",
    "mass_grid",
]

log = logging.getLogger(__name__)

HARD_NEGATIVE_KINDS = {0: "none", 1: "chance grouping", 2: "single bright star"}


def mass_grid(m_low: torch.Tensor, m_high: torch.Tensor, n: int = 800) -> torch.Tensor:
    """Cell edges (A, 2n+1) in initial mass from ``m_low`` to ``m_high`` (each (A,), M☉).

    The union of ``n`` logarithmic cells and ``n`` cells logarithmic in ``1 − m/m_high`` (down to
    1e-8): post-main-sequence phases occupy a tiny initial-mass range just below the live limit
    and need that resolution; a plain log grid would smear them over whole cells.
    """
    f = torch.linspace(0, 1, n + 1, dtype=torch.float64, device=m_high.device)
    lo, hi = m_low.double()[:, None], m_high.double()[:, None]
    log_part = lo * (hi / lo) ** f
    d_max = torch.log10((1 - lo / hi).clamp(min=1e-8))
    top = hi * (1 - 10 ** (d_max + (-8.0 - d_max) * f[1:]))
    edges = torch.cat([log_part, top, hi], 1)
    return torch.sort(edges, 1).values


class StarList:
    """A flattened list of stars of a batch: sample index, position (px) and count rates (e⁻/s).

    Cluster stars and field stars alike; ``sample_index`` (S,) int64 says which sample of the
    batch each star belongs to, ``y``/``x`` (S,) are cutout pixel coordinates and ``flux`` (S, C)
    the count rates per band.
    """

    def __init__(
        self, sample_index: torch.Tensor, y: torch.Tensor, x: torch.Tensor, flux: torch.Tensor
    ) -> None:
        self.sample_index, self.y, self.x, self.flux = sample_index, y, x, flux

    @staticmethod
    def cat(parts: list[StarList]) -> StarList:
        """Concatenate star lists."""
        return StarList(
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("sample_index", "y", "x", "flux"))
        )


class SyntheticField:
    """Field stars and smooth galaxy light of a disk galaxy.

    Parameters
    ----------
    instrument : simulators.instruments.Instrument
        Bands, zero points, pixel scale, distance, field and galaxy-light parameters.
    population : simulators.population.StellarPopulation
        Stellar magnitudes per band (same bands as ``instrument``).
    canvas_margin : int
        Field stars are scattered over the cutout enlarged by this many pixels on every side (px).
    library_size : int
        Number of stars in the field-star library.
    seed : int
        Seed of the library (fixed so that a simulator is reproducible).
    device : torch.device or str
        Device of the library and outputs (the library is built on the CPU, then moved).
    """

    def __init__(
        self,
        instrument,
        population,
        *,
        canvas_margin: int = 8,
        library_size: int = 8192,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.instrument = instrument
        self.device = torch.device(device)
        self.margin = int(canvas_margin)
        size = instrument.image_size + 2 * self.margin
        self.area_kpc2 = (size * instrument.pc_per_pixel / 1000.0) ** 2
        flux_scale = torch.tensor(instrument.flux_scale(), dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        imf = population.imf
        edges = np.arange(6.5, 10.1 + 1e-9, 0.1)
        ages = torch.tensor(0.5 * (edges[1:] + edges[:-1]))
        dt = torch.tensor(10 ** edges[1:] - 10 ** edges[:-1])  # yr
        m_hi = (
            torch.as_tensor(population.max_live_mass(ages.float()))
            .cpu()
            .double()
            .clamp(max=imf.m_max)
        )
        # bright stars are above ~1 M☉ at every age that matters; a fine grid from 0.5 M☉ to the live limit
        medges = mass_grid(torch.full_like(m_hi, 0.5), m_hi, 600)  # (A, G+1)
        mid = torch.sqrt(medges[:, 1:] * medges[:, :-1])
        n_cell = imf.number_per_mass(medges[:, :-1], medges[:, 1:]).cpu()  # stars per M☉ formed
        mags = (
            population.star_magnitudes(ages.float(), mid.float(), torch.zeros(len(ages)))
            .cpu()
            .double()
        )
        app_red = mags[..., -1] + instrument.distance_modulus
        bright = torch.isfinite(app_red) & (app_red < instrument.field_mag_limit)
        w = dt[:, None] * n_cell * bright  # stars per (M☉/yr) of SFR
        self.stars_per_sfr = float(w.sum()) * self.area_kpc2  # expected stars per (M☉ yr⁻¹ kpc⁻²)
        if self.stars_per_sfr <= 0:
            raise SimulatorError(
                f"no field star is brighter than field_mag_limit={instrument.field_mag_limit} in the reddest band; "
                "raise the limit"
            )
        pick = torch.multinomial(w.flatten().float(), library_size, replacement=True, generator=gen)
        ai, gi = pick // w.shape[1], pick % w.shape[1]
        masses = mid[
            ai, gi
        ]  # the cell's mass, as used for the selection (the grid is fine where it matters)
        lo, hi = instrument.field_av
        av = lo + (hi - lo) * torch.rand(library_size, generator=gen, dtype=torch.float64)
        lib_mags = (
            population.star_magnitudes(ages[ai].float(), masses[:, None].float(), av.float())[:, 0]
            .cpu()
            .double()
        )
        flux = (
            torch.where(
                torch.isfinite(lib_mags), 10 ** (-0.4 * lib_mags), torch.zeros_like(lib_mags)
            )
            * flux_scale
        )
        order = torch.argsort(flux[:, -1], descending=True)
        self.library_flux = flux[order].float().to(self.device)  # (L, C) e⁻/s, brightest first
        self.library_log_age = ages[ai][order].float().to(self.device)
        px_area = instrument.pixel_scale**2
        self.galaxy_level = torch.tensor(
            [10 ** (-0.4 * (b.galaxy_sb - b.zero_point)) * px_area for b in instrument.band_setups],
            dtype=torch.float32,
            device=self.device,
        )  # e⁻/s/px at the reference SFR density

    def to(self, device: torch.device | str) -> SyntheticField:
        """The field with its library on ``device``."""
        new = object.__new__(SyntheticField)
        new.__dict__.update(self.__dict__)
        new.device = torch.device(device)
        for k in ("library_flux", "library_log_age", "galaxy_level"):
            setattr(new, k, getattr(self, k).to(new.device))
        return new

    def draw_sfr(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Log-uniform SFR densities (n,), M☉ yr⁻¹ kpc⁻²."""
        lo, hi = (math.log(v) for v in self.instrument.field_sfr_density)
        u = torch.rand(n, generator=generator, device=self.device)
        return torch.exp(lo + (hi - lo) * u)

    def stars(self, sfr: torch.Tensor, generator: torch.Generator) -> tuple[StarList, torch.Tensor]:
        """Resolved field stars of every sample.

        Returns
        -------
        StarList
            Flattened star list (positions uniform over the cutout plus margin, px).
        torch.Tensor
            (B,) number of field stars per sample.
        """
        lam = sfr.double() * self.stars_per_sfr
        n = torch.poisson(lam, generator=generator).long()
        sidx = torch.repeat_interleave(torch.arange(len(sfr), device=self.device), n)
        s = len(sidx)
        lo, span = -self.margin - 0.5, self.instrument.image_size + 2 * self.margin
        y = lo + span * torch.rand(s, generator=generator, device=self.device)
        x = lo + span * torch.rand(s, generator=generator, device=self.device)
        pick = torch.randint(len(self.library_flux), (s,), generator=generator, device=self.device)
        return StarList(sidx, y, x, self.library_flux[pick]), n

    def galaxy_light(self, sfr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Smooth galaxy light (B, C, H, W), e⁻/s/px: level ∝ SFR density, random linear gradient (±25 %)."""
        b, h = len(sfr), self.instrument.image_size
        level = (sfr / self.instrument.galaxy_sfr_reference).view(
            b, 1, 1, 1
        ) * self.galaxy_level.view(1, -1, 1, 1)
        ang = 2 * math.pi * torch.rand(b, generator=generator, device=self.device)
        amp = 0.25 * torch.rand(b, generator=generator, device=self.device)
        t = (torch.arange(h, device=self.device, dtype=torch.float32) - (h - 1) / 2) / h
        grad = amp.view(b, 1, 1) * (
            torch.cos(ang).view(b, 1, 1) * t.view(1, 1, h)
            + torch.sin(ang).view(b, 1, 1) * t.view(1, h, 1)
        )
        return level * (1.0 + grad).unsqueeze(1)

    def hard_negatives(
        self, kind: torch.Tensor, centre: torch.Tensor, generator: torch.Generator
    ) -> StarList:
        """Stars that mimic a cluster in background-only samples.

        Parameters
        ----------
        kind : torch.Tensor
            int64 (B,): 0 none, 1 chance grouping (3–8 stars from the brightest 20 % of the
            library within a Gaussian of σ = 1–4 px around the centre), 2 a single star from the
            brightest 5 % near the centre.
        centre : torch.Tensor
            (B, 2) centres (y, x), px.
        """
        dev = self.device
        b = len(kind)
        n = torch.where(
            kind == 1,
            torch.randint(3, 9, (b,), generator=generator, device=dev),
            (kind == 2).long(),
        )
        sidx = torch.repeat_interleave(torch.arange(b, device=dev), n)
        s = len(sidx)
        k = kind[sidx]
        top = torch.where(k == 1, 0.2, 0.05) * len(self.library_flux)
        pick = (torch.rand(s, generator=generator, device=dev) * top).long()
        sig = torch.where(
            k == 1,
            1.0 + 3.0 * torch.rand(s, generator=generator, device=dev),
            torch.full((s,), 0.3, device=dev),
        )
        dy, dx = torch.randn(2, s, generator=generator, device=dev) * sig
        return StarList(sidx, centre[sidx, 0] + dy, centre[sidx, 1] + dx, self.library_flux[pick])


class ImageBackground:
    """Random patches of real images as backgrounds.

    Parameters
    ----------
    source : str or Path
        A FITS file holding a (C, H, W) cube in e⁻/s with the preset's bands in order, or a folder
        of such files (``*.fits``, ``*.fits.gz``).
    image_size : int
        Patch side (px).
    n_bands : int
        Expected number of bands C.
    max_nan_fraction : float
        Patches with more NaN/inf pixels than this fraction are rejected and redrawn; the remaining
        NaNs of accepted patches are replaced by the patch's band median.
    device : torch.device or str
        Where the images are held.

    Raises
    ------
    SimulatorError
        No files, wrong shapes, images smaller than a patch, or no patch with few enough NaNs.
    """

    def __init__(
        self,
        source: str | Path,
        image_size: int,
        n_bands: int,
        *,
        max_nan_fraction: float = 0.05,
        device: torch.device | str = "cpu",
    ) -> None:
        from astropy.io import fits

        src = Path(source)
        files = sorted([*src.glob("*.fits"), *src.glob("*.fits.gz")]) if src.is_dir() else [src]
        if not files or not all(f.is_file() for f in files):
            raise SimulatorError(f"background images: no FITS file found at {str(src)!r}")
        self.device = torch.device(device)
        self.size = int(image_size)
        self.max_nan_fraction = float(max_nan_fraction)
        self.images, self.valid_sat = [], []
        for f in files:
            data = fits.getdata(f)
            if data is None or data.ndim != 3 or data.shape[0] != n_bands:
                raise SimulatorError(
                    f"{f}: expected a (C={n_bands}, H, W) cube in the preset's band order, got shape "
                    f"{None if data is None else data.shape}"
                )
            if min(data.shape[1:]) < self.size:
                raise SimulatorError(
                    f"{f}: image {data.shape[1:]} is smaller than a {self.size}-px patch"
                )
            img = torch.as_tensor(np.asarray(data, dtype=np.float32))
            bad = (~torch.isfinite(img)).any(0).double()
            sat = torch.nn.functional.pad(
                bad.cumsum(0).cumsum(1), (1, 0, 1, 0)
            )  # summed-area table
            self.images.append(img.to(self.device))
            self.valid_sat.append(sat)
        self.source = str(src)

    def sample(self, n: int, generator: torch.Generator, *, tries: int = 32) -> torch.Tensor:
        """``n`` patches (n, C, H, W) in e⁻/s (NaNs avoided/filled as documented)."""
        s = self.size
        out = []
        which = torch.randint(
            len(self.images), (n,), generator=generator, device=generator.device
        ).cpu()
        for i, img in enumerate(self.images):
            m = int((which == i).sum())
            if m == 0:
                continue
            h, w = img.shape[1:]
            y0 = torch.randint(
                h - s + 1, (m, tries), generator=generator, device=generator.device
            ).cpu()
            x0 = torch.randint(
                w - s + 1, (m, tries), generator=generator, device=generator.device
            ).cpu()
            sat = self.valid_sat[i]
            nbad = sat[y0 + s, x0 + s] - sat[y0, x0 + s] - sat[y0 + s, x0] + sat[y0, x0]
            ok = nbad <= self.max_nan_fraction * s * s
            if not bool(ok.any(1).all()):
                raise SimulatorError(
                    f"{self.source}: could not find {s}x{s} patches with <= {self.max_nan_fraction:.0%} NaN pixels "
                    f"in {tries} tries; the image is mostly masked"
                )
            first = ok.float().argmax(1)
            ys, xs = y0[torch.arange(m), first], x0[torch.arange(m), first]
            iy = (ys[:, None] + torch.arange(s)[None, :]).to(self.device)
            ix = (xs[:, None] + torch.arange(s)[None, :]).to(self.device)
            patches = img[:, iy[:, :, None], ix[:, None, :]].permute(1, 0, 2, 3)  # (m, C, s, s)
            finite = torch.isfinite(patches)
            if not bool(finite.all()):
                med = torch.nanmedian(patches.flatten(2), dim=2).values[..., None, None]
                patches = torch.where(finite, patches, med.expand_as(patches))
            out.append((patches, (which == i).nonzero().flatten().to(self.device)))
        result = torch.empty(n, self.images[0].shape[0], s, s, device=self.device)
        for patches, idx in out:
            result[idx] = patches
        return result


# -- the Background interface ------------------------------------------------------------------------


@dataclass
class ClusterScene:
    """The clusters of a batch, as a simulator hands them to its :class:`Background`.

    Attributes
    ----------
    n : int
        Batch size.
    label : torch.Tensor
        int64 (n,): 1 = cluster, 0 = background only.
    centre : torch.Tensor
        (n, 2) cluster centres (y, x), px (also where hard negatives are put).
    render : callable
        ``render(extra)`` → (n, C, H, W) noiseless cutouts, e⁻/s per pixel: the clusters' drawn
        stars and smooth light plus the stars of the :class:`StarList` sequence ``extra``, through
        the PSF. Call it once.
    """

    n: int
    label: torch.Tensor
    centre: torch.Tensor
    render: Callable[[Sequence[StarList]], torch.Tensor]


@dataclass
class Composite:
    """A background's result for a batch.

    Attributes
    ----------
    images : torch.Tensor
        (n, C, H, W) observed cutouts, e⁻/s per pixel, sky-subtracted (noiseless when the
        background was built without a noise model).
    scene : torch.Tensor
        (n, C, H, W) noiseless scene whose noise-model variance defines the visibility.
    nuisances : dict of str to torch.Tensor
        Per-sample quantities the background drew, each (n,), in the order they are recorded.
    """

    images: torch.Tensor
    scene: torch.Tensor
    nuisances: dict[str, torch.Tensor]


class Background(ABC):
    """What lies behind the clusters: turns a :class:`ClusterScene` into observed cutouts.

    Parameters
    ----------
    noise : simulators.noise.NoiseModel or None
        The detector noise model; ``None`` gives noiseless images.
    """

    option: str
    """The value of ``SimulatorOptions.background`` this background implements."""

    def __init__(self, noise) -> None:
        self.noise = noise

    @abstractmethod
    def compose(
        self, scene: ClusterScene, generator: torch.Generator, noise_generator: torch.Generator
    ) -> Composite:
        """Observed cutouts of ``scene`` in front of this background.

        Parameters
        ----------
        scene : ClusterScene
            The batch's clusters (render it exactly once).
        generator : torch.Generator
            Source of the background's own random quantities.
        noise_generator : torch.Generator
            Source of the detector noise.

        Returns
        -------
        Composite
            Images, noiseless scene and nuisances; every background records ``hard_negative``
            (int64, see :data:`HARD_NEGATIVE_KINDS`; 0 where it draws none).
        """

    @staticmethod
    def _no_hard_negatives(scene: ClusterScene) -> torch.Tensor:
        return torch.zeros(scene.n, dtype=torch.long, device=scene.label.device)


class SyntheticFieldBackground(Background):
    """Field stars, hard negatives and galaxy light of a :class:`SyntheticField`, then noise.

    Parameters
    ----------
    field : SyntheticField
        The field model.
    hard_negative_fraction : float
        Fraction of background-only samples that get a chance grouping (half) or a single
        bright star (half).
    noise : simulators.noise.NoiseModel or None
        Detector noise over the whole scene; ``None`` gives noiseless images.

    Notes
    -----
    Draws, in this order, from ``generator``: the SFR densities, the field stars, two uniforms
    per sample (hard negative or not, which kind), the hard-negative stars, the galaxy-light
    gradients. Records ``field_sfr_density``, ``n_field_stars`` and ``hard_negative``.
    """

    option = "synthetic"

    def __init__(self, field: SyntheticField, hard_negative_fraction: float, noise) -> None:
        super().__init__(noise)
        self.field = field
        self.hard_negative_fraction = float(hard_negative_fraction)

    def compose(
        self, scene: ClusterScene, generator: torch.Generator, noise_generator: torch.Generator
    ) -> Composite:
        n, field = scene.n, self.field
        sfr = field.draw_sfr(n, generator)
        field_stars, n_field = field.stars(sfr, generator)
        u = torch.rand(n, 2, generator=generator, device=field.device)
        kind = self._no_hard_negatives(scene)
        hard = (scene.label == 0) & (u[:, 0] < self.hard_negative_fraction)
        kind[hard] = 1 + (u[hard, 1] < 0.5).long()
        stars = [field_stars, field.hard_negatives(kind, scene.centre, generator)]
        noiseless = scene.render(stars)
        noiseless = noiseless + field.galaxy_light(sfr, generator)
        images = (
            noiseless if self.noise is None else self.noise.add_noise(noiseless, noise_generator)
        )
        nuisances = {
            "field_sfr_density": sfr,
            "n_field_stars": n_field.float(),
            "hard_negative": kind,
        }
        return Composite(images, noiseless, nuisances)


class EmptyBackground(Background):
    """No background: the clusters alone, with sky and detector noise (for tests and pictures).

    Draws nothing from ``generator``; records ``hard_negative`` (all 0).
    """

    option = "none"

    def compose(
        self, scene: ClusterScene, generator: torch.Generator, noise_generator: torch.Generator
    ) -> Composite:
        noiseless = scene.render([])
        images = (
            noiseless if self.noise is None else self.noise.add_noise(noiseless, noise_generator)
        )
        return Composite(images, noiseless, {"hard_negative": self._no_hard_negatives(scene)})


class ImagePatchBackground(Background):
    """Real image patches (:class:`ImageBackground`) with the clusters added in front.

    The patches are already noisy, so only the clusters' own Poisson noise is added
    (:meth:`simulators.noise.NoiseModel.add_source_noise`); the noiseless scene for the
    visibility is the clusters plus the patches clipped at 0. Draws the patches from
    ``generator``; records ``hard_negative`` (all 0).

    Parameters
    ----------
    patches : ImageBackground
        Source of the patches.
    noise : simulators.noise.NoiseModel or None
        Noise model; ``None`` adds the clusters without noise.
    """

    def __init__(self, patches: ImageBackground, noise) -> None:
        super().__init__(noise)
        self.patches = patches
        self.option = patches.source

    def compose(
        self, scene: ClusterScene, generator: torch.Generator, noise_generator: torch.Generator
    ) -> Composite:
        clusters = scene.render([])
        patches = self.patches.sample(scene.n, generator)
        if self.noise is not None:
            noisy = self.noise.add_source_noise(clusters, noise_generator)
        else:
            noisy = clusters
        return Composite(
            patches + noisy,
            clusters + patches.clamp(min=0),
            {"hard_negative": self._no_hard_negatives(scene)},
        )


def background_from_option(
    option: str,
    *,
    instrument,
    population,
    noise,
    canvas_margin: int,
    hard_negative_fraction: float,
    field_library_size: int,
    field_seed: int,
    device: torch.device | str = "cpu",
) -> Background:
    """The :class:`Background` that ``SimulatorOptions.background`` names.

    Parameters
    ----------
    option : str
        ``"synthetic"``, ``"none"``, or a path to a FITS cube or a folder of them.
    instrument : simulators.instruments.Instrument
        Bands, cutout size, field and galaxy-light parameters.
    population : simulators.population.StellarPopulation
        Photometry of the field stars (synthetic field only).
    noise : simulators.noise.NoiseModel or None
        Detector noise; ``None`` for noiseless images.
    canvas_margin : int
        Margin (px) around the cutout over which field stars are scattered.
    hard_negative_fraction : float
        See :class:`SyntheticFieldBackground`.
    field_library_size, field_seed : int
        Size and seed of the synthetic field's star library.
    device : torch.device or str
        Where the background lives.

    Raises
    ------
    SimulatorError
        If a path holds no usable FITS cubes.
    """
    if option == "synthetic":
        field = SyntheticField(
            instrument,
            population,
            canvas_margin=canvas_margin,
            library_size=field_library_size,
            seed=field_seed,
            device=device,
        )
        return SyntheticFieldBackground(field, hard_negative_fraction, noise)
    if option == "none":
        return EmptyBackground(noise)
    patches = ImageBackground(option, instrument.image_size, len(instrument.bands), device=device)
    return ImagePatchBackground(patches, noise)
