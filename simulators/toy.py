"""A tiny linear-Gaussian "cluster" simulator with an analytic posterior, for tests and demos.

This module owns :class:`LinearGaussianToy`, a :class:`simulators.base.Simulator` (``prior``,
``bands``, ``observation_shape``, ``device``, ``simulate(n, generator, *, theta=None,
label=None) -> SimulationBatch``, ``card()``, ``from_card``) whose posterior is known in closed
form, so that training and diagnostics can be checked against the truth in seconds. It must not
be used to draw scientific conclusions about star clusters: it knows no physics.

The model
---------
With ``t = (θ - low) / (high - low) ∈ [0, 1]^4`` the prior-normalised parameters, a cluster image
is

.. math::

    x = b + A\\,t + σ\\,ε,\\qquad ε \\sim \\mathcal N(0, I),

where ``b`` is a flat background (e⁻/s per pixel), ``A`` (pixels × 4) holds four fixed, partly
overlapping Gaussian blobs with band-dependent weights and ``σ`` is the pixel noise (e⁻/s).
A background-only image is ``b + σ ε``. Under the uniform prior the posterior of ``t`` is the
Gaussian ``N(μ, Σ)`` with ``Σ = σ² (AᵀA)⁻¹`` and ``μ = Σ Aᵀ (x - b) / σ²``, truncated to the unit
box (:meth:`LinearGaussianToy.analytic_posterior`); for truths well inside the box the truncation
is negligible. ``visibility`` is the signal-to-noise ratio ``‖A t‖ / σ`` (0 for backgrounds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .batch import SimulationBatch
from .errors import SimulatorError
from .priors import DEFAULT_PRIOR, ClusterPrior

__all__ = ["LinearGaussianToy", "TOY_KIND"]

TOY_KIND = "linear-gaussian-toy"
"""The kind the toy's card names (its ``name`` entry); see :mod:`simulators.registry`."""


class LinearGaussianToy:
    """Linear-Gaussian image simulator with an analytic posterior (a :class:`simulators.base.Simulator`).

    Parameters
    ----------
    prior : ClusterPrior
        Parameter box; θ is mapped linearly onto ``[0, 1]^4`` before rendering.
    image_size : int
        Cutout side in pixels.
    bands : sequence of str
        Band names (only their number matters).
    amplitude : float
        Peak amplitude of each parameter's blob per unit of ``t``, e⁻/s per pixel.
    noise : float
        Pixel noise standard deviation σ, e⁻/s.
    background : float
        Flat sky level ``b``, e⁻/s per pixel.
    cluster_fraction : float
        Probability that a sample is a cluster (label 1) when labels are not forced.
    device : str or torch.device
        Device of the produced tensors.

    Examples
    --------
    >>> import torch
    >>> toy = LinearGaussianToy()
    >>> batch = toy.simulate(3, torch.Generator().manual_seed(0))
    >>> tuple(batch.images.shape)
    (3, 2, 8, 8)
    """

    def __init__(
        self,
        prior: ClusterPrior = DEFAULT_PRIOR,
        *,
        image_size: int = 8,
        bands: Sequence[str] = ("toy_blue", "toy_red"),
        amplitude: float = 6.0,
        noise: float = 1.0,
        background: float = 2.0,
        cluster_fraction: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        self.prior = prior
        self.bands = tuple(bands)
        self.image_size = int(image_size)
        self.observation_shape = (len(self.bands), self.image_size, self.image_size)
        self.amplitude = float(amplitude)
        self.noise = float(noise)
        self.background = float(background)
        self.cluster_fraction = float(cluster_fraction)
        self.device = torch.device(device)
        self.design = self._design_matrix().to(self.device)  # (P, 4), e⁻/s per unit t

    # ------------------------------------------------------------------ model
    def _design_matrix(self) -> torch.Tensor:
        """Fixed templates: four Gaussian blobs (σ = size/5 px) with band weights 1 ± 0.5, (C·H·W, 4)."""
        c, s = len(self.bands), self.image_size
        yy, xx = torch.meshgrid(
            torch.arange(s, dtype=torch.float64),
            torch.arange(s, dtype=torch.float64),
            indexing="ij",
        )
        centres = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.35), (0.65, 0.65)]
        width = s / 5.0
        cols = []
        for k, (cy, cx) in enumerate(centres):
            blob = torch.exp(
                -((yy - cy * (s - 1)) ** 2 + (xx - cx * (s - 1)) ** 2) / (2 * width**2)
            )
            weights = torch.tensor(
                [1.0 + 0.5 * (-1) ** (k + b) for b in range(c)], dtype=torch.float64
            )
            cols.append((weights[:, None, None] * blob[None]).reshape(-1))
        return (self.amplitude * torch.stack(cols, dim=1)).float()

    def _to_unit(self, theta: torch.Tensor) -> torch.Tensor:
        low, high = self.prior.low(theta.device), self.prior.high(theta.device)
        return (theta - low) / (high - low)

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
            Number of samples.
        generator : torch.Generator
            Source of randomness (on ``self.device``'s type or CPU).
        theta : torch.Tensor, optional
            (n, 4) parameters in prior units; drawn from the prior if omitted.
        label : torch.Tensor, optional
            (n,) 1 = cluster, 0 = background; drawn with ``cluster_fraction`` if omitted.

        Returns
        -------
        SimulationBatch
            images float32 (n, C, H, W) in e⁻/s per pixel, θ, label, visibility (S/N).
        """
        gdev = generator.device
        if theta is None:
            theta = self.prior.sample(n, generator, device=self.device)
        theta = (
            torch.as_tensor(theta, dtype=torch.float32).to(self.device).reshape(n, self.prior.dim)
        )
        if label is None:
            label = (torch.rand(n, generator=generator, device=gdev) < self.cluster_fraction).long()
        label = torch.as_tensor(label).to(self.device).long().reshape(n)
        signal = self._to_unit(theta) @ self.design.T  # (n, P)
        signal = signal * label[:, None].float()
        eps = torch.randn(signal.shape, generator=generator, device=gdev).to(self.device)
        images = (self.background + signal + self.noise * eps).reshape(n, *self.observation_shape)
        visibility = signal.norm(dim=1) / self.noise
        return SimulationBatch(theta, images.float(), label, visibility.float(), {})

    # ------------------------------------------------------------- analytic
    def analytic_posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Untruncated Gaussian posterior of θ given cluster images, in prior units.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) cluster images, e⁻/s.

        Returns
        -------
        mean : torch.Tensor
            (N, 4) posterior means of θ.
        cov : torch.Tensor
            (4, 4) posterior covariance of θ (the same for every image).

        Notes
        -----
        Exact up to the truncation to the prior box, negligible when the mean is more than
        ~4 posterior standard deviations from every bound.
        """
        a = self.design.double().cpu()
        y = images.double().cpu().reshape(images.shape[0], -1) - self.background
        cov_t = self.noise**2 * torch.linalg.inv(a.T @ a)
        mean_t = y @ a @ cov_t / self.noise**2
        scale = (self.prior.high() - self.prior.low()).double()
        mean = self.prior.low().double() + mean_t * scale
        cov = cov_t * scale[:, None] * scale[None, :]
        return mean.float(), cov.float()

    def card(self) -> dict:
        """JSON-serialisable description of this simulator (stored in model cards)."""
        return {
            "name": TOY_KIND,
            "prior": self.prior.to_dict(),
            "bands": list(self.bands),
            "image_size": self.image_size,
            "amplitude": self.amplitude,
            "noise": self.noise,
            "background": self.background,
            "cluster_fraction": self.cluster_fraction,
            "table_id": "none (toy)",
            "visibility": "||A t|| / sigma (signal-to-noise of the noiseless signal), 0 for backgrounds",
        }

    @classmethod
    def from_card(cls, card: dict, device: str | torch.device = "cpu") -> LinearGaussianToy:
        """The toy that wrote ``card`` (the output of :meth:`card`), on ``device``.

        Raises
        ------
        SimulatorError
            If ``card`` is not a toy card or lacks one of its entries.
        """
        if card.get("name") != TOY_KIND:
            raise SimulatorError(f"not a {TOY_KIND} card: its name is {card.get('name')!r}")
        try:
            return cls(
                ClusterPrior.from_dict(card["prior"]),
                image_size=int(card["image_size"]),
                bands=tuple(card["bands"]),
                amplitude=float(card["amplitude"]),
                noise=float(card["noise"]),
                background=float(card["background"]),
                cluster_fraction=float(card["cluster_fraction"]),
                device=device,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise SimulatorError(
                f"incomplete {TOY_KIND} card ({type(err).__name__}: {err})"
            ) from err
