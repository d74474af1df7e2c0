"""Detector noise and the visibility (signal-to-noise) measure of a cluster.

This module owns the CCD noise model of sky-subtracted images in e⁻/s per pixel and the
definition of *visibility*. It must not render light or draw backgrounds.

Noise model, per band and pixel, for a noiseless sky-subtracted signal ``s`` (e⁻/s, the sum of
the cluster, field stars and galaxy light), sky level ``b`` (e⁻/s/px), exposure time ``t`` (s),
``n`` exposures with read noise ``σ_r`` (e⁻)::

    counts ~ Poisson((s + b) · t) + Normal(0, n σ_r²)
    image   = counts / t − b                        (sky-subtracted, e⁻/s)
    Var[image] = (s + b) / t + n σ_r² / t²

For speed, pixels with expected counts ``λ = (s + b) t`` above ``gaussian_above`` (default 50 e⁻)
are drawn from Normal(λ, λ + n σ_r²) (Poisson and read noise in one draw: same mean and variance;
neglected skewness 1/√λ ≤ 0.14); below it, from the exact Poisson distribution plus the normal
read noise (:func:`poisson_counts`).

Visibility (returned with every sample): the expected aperture signal-to-noise ratio of the
*cluster's* light in the reddest band of the preset,

    V = S / sqrt(Σ_ap Var),  S = Σ_ap s_cluster,

where the aperture is a circle of radius ``max(2 r_h, FWHM)`` (px) centred on the cluster, ``s_cluster``
is the noiseless cluster image (stars + smooth light, after the PSF) and ``Var`` is the model
variance of the full noiseless scene (cluster + background + sky + read noise). It is a
deterministic function of the noiseless images, so it does not fluctuate with the noise draw.
Background-only samples have V = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from .errors import SimulatorError

__all__ = ["NoiseModel", "visibility", "aperture_mask", "poisson_counts"]


POISSON_SPLITS = 8
"""Independent sub-streams the exact Poisson draws are split into on CPU (fixed, so that the result
depends only on the generator, not on the number of threads)."""


def poisson_counts(
    lam: torch.Tensor,
    generator: torch.Generator,
    gaussian_above: float = 50.0,
    read_var: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Poisson draws of expected counts ``lam`` (e⁻), optionally plus Gaussian read noise.

    Where λ > ``gaussian_above`` the draw is Normal(λ, λ + ``read_var``): the Poisson's normal
    approximation and the read noise merged into one normal draw (without read noise the normal
    is clipped at 0). Below it the Poisson draw is exact, plus Normal(0, ``read_var``). The normal
    branch is much cheaper than ``torch.poisson`` on CPU, where the exact draws are also split
    into :data:`POISSON_SPLITS` sub-streams seeded from ``generator`` and drawn on parallel threads
    (torch's CPU Poisson sampler is serial).

    Parameters
    ----------
    lam : torch.Tensor
        Expected counts (e⁻), any shape, ≥ 0.
    generator : torch.Generator
        Source of randomness, on ``lam``'s device.
    gaussian_above : float
        Switch to the normal branch above this many expected counts (``inf``: always exact).
    read_var : torch.Tensor or float, optional
        Read-noise variance (e⁻²), broadcastable to ``lam``.

    Returns
    -------
    torch.Tensor
        Counts (e⁻), shape and dtype of ``lam``.
    """
    z = torch.randn(lam.shape, generator=generator, device=lam.device, dtype=lam.dtype)
    if read_var is None:
        out = (lam + lam.sqrt() * z).clamp_(min=0)
        read_sd = None
    else:
        rv = torch.as_tensor(read_var, dtype=lam.dtype, device=lam.device).expand(lam.shape)
        out = lam + (lam + rv).sqrt() * z
        read_sd = rv.sqrt()
    low = (lam <= gaussian_above).flatten().nonzero().squeeze(1)
    if low.numel():
        counts = _exact_poisson(lam.flatten().index_select(0, low), generator)
        if read_sd is not None:
            counts += read_sd.flatten().index_select(0, low) * z.flatten().index_select(0, low)
        out.view(-1).index_copy_(0, low, counts)
    return out


def _exact_poisson(lam: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Exact Poisson draws of a 1-D tensor; split over threads on CPU (deterministic split)."""
    if lam.device.type != "cpu" or lam.numel() < 65_536:
        return torch.poisson(lam, generator=generator)
    seeds = torch.randint(0, 2**62, (POISSON_SPLITS,), generator=generator).tolist()
    parts = lam.chunk(POISSON_SPLITS)
    gens = [torch.Generator().manual_seed(int(x)) for x in seeds]
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), torch.get_num_threads()))) as ex:
        drawn = list(
            ex.map(
                lambda pg: torch.poisson(pg[0], generator=pg[1]),
                zip(parts, gens[: len(parts)], strict=True),
            )
        )
    return torch.cat(drawn)


class NoiseModel:
    """Poisson (source + sky) and Gaussian read noise for a set of bands.

    Parameters
    ----------
    exposure_time : sequence of float
        Total exposure time per band (s).
    sky : sequence of float
        Sky level per band (e⁻/s/px).
    read_noise : sequence of float
        Read noise per exposure per band (e⁻).
    n_exposures : sequence of int
        Exposures per band.
    device : torch.device or str
        Where the per-band constants live.
    gaussian_above : float
        Expected counts (e⁻) above which the Poisson draw is replaced by Normal(λ, λ) (same mean and
        variance; the neglected skewness is 1/√λ ≤ 0.14 at the default 50). ``inf`` draws every
        pixel from the exact Poisson distribution.
    """

    def __init__(
        self,
        exposure_time: Sequence[float],
        sky: Sequence[float],
        read_noise: Sequence[float],
        n_exposures: Sequence[int],
        device: torch.device | str = "cpu",
        gaussian_above: float = 50.0,
    ) -> None:
        if not (len(exposure_time) == len(sky) == len(read_noise) == len(n_exposures)):
            raise SimulatorError(
                "noise model: exposure_time, sky, read_noise and n_exposures need one value per band"
            )
        f = dict(dtype=torch.float32, device=device)
        self.exposure_time = torch.tensor(list(exposure_time), **f).view(-1, 1, 1)
        self.sky = torch.tensor(list(sky), **f).view(-1, 1, 1)
        self.gaussian_above = float(gaussian_above)
        self.read_var = torch.tensor(
            [n * r**2 for n, r in zip(n_exposures, read_noise, strict=True)], **f
        ).view(-1, 1, 1)

    @classmethod
    def from_instrument(cls, instrument, device: torch.device | str = "cpu") -> NoiseModel:
        """The noise model of an :class:`simulators.instruments.Instrument`."""
        b = instrument.band_setups
        return cls(
            [x.exposure_time for x in b],
            [x.sky for x in b],
            [x.read_noise for x in b],
            [x.n_exposures for x in b],
            device,
        )

    def to(self, device: torch.device | str) -> NoiseModel:
        """A copy with its constants on ``device``."""
        new = object.__new__(NoiseModel)
        new.gaussian_above = self.gaussian_above
        new.exposure_time, new.sky, new.read_var = (
            x.to(device) for x in (self.exposure_time, self.sky, self.read_var)
        )
        return new

    def variance(self, signal: torch.Tensor) -> torch.Tensor:
        """Model variance ((e⁻/s)²) of each pixel of noiseless sky-subtracted images (B, C, H, W) in e⁻/s."""
        t = self.exposure_time
        return (signal.clamp(min=0) + self.sky) / t + self.read_var / t**2

    def add_noise(self, signal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A noisy realisation (e⁻/s, sky-subtracted) of noiseless images ``signal`` (B, C, H, W)."""
        t = self.exposure_time
        counts = poisson_counts(
            (signal.clamp(min=0) + self.sky) * t,
            generator,
            self.gaussian_above,
            read_var=self.read_var,
        )
        return counts / t - self.sky

    def add_source_noise(self, signal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Poisson noise of ``signal`` alone (e⁻/s): for light added onto real, already noisy images."""
        t = self.exposure_time
        return poisson_counts(signal.clamp(min=0) * t, generator, self.gaussian_above) / t


def aperture_mask(
    centre: torch.Tensor, radius: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """Boolean circular apertures (B, H, W) with centres (B, 2) as (y, x) px and radii (B,) px."""
    h, w = shape
    yy = torch.arange(h, device=centre.device, dtype=centre.dtype).view(1, h, 1)
    xx = torch.arange(w, device=centre.device, dtype=centre.dtype).view(1, 1, w)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    return d2 <= radius.view(-1, 1, 1) ** 2


def visibility(
    signal: torch.Tensor, variance: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Aperture signal-to-noise ratio of the cluster light (see the module docstring).

    Parameters
    ----------
    signal : torch.Tensor
        Either the noiseless cluster image in the chosen band, (B, H, W) e⁻/s, summed here over the
        aperture, or the cluster's aperture flux already summed, (B,) e⁻/s.
    variance : torch.Tensor
        Model variance of the full scene in that band, (B, H, W), (e⁻/s)².
    centre : torch.Tensor
        Aperture centres (B, 2) as (y, x) in pixel coordinates (pixel centres at integers).
    radius : torch.Tensor
        Aperture radii (B,), px.

    Returns
    -------
    torch.Tensor
        (B,) float32, S/N ≥ 0.
    """
    mask = aperture_mask(centre, radius, variance.shape[-2:]).to(variance.dtype)
    s = (signal * mask).sum((-2, -1)) if signal.dim() == 3 else signal
    v = (variance * mask).sum((-2, -1)).clamp(min=1e-30)
    return (s.clamp(min=0) / v.sqrt()).float()
