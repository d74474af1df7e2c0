"""Posteriors from integrated light only, and the tractable smooth-photometry likelihood.

This module owns two things that measure the flow posterior from outside:

* :func:`aperture_magnitudes` turns cutouts into integrated (aperture) photometry, and
  :func:`train_npe` fits an sbi neural posterior to such low-dimensional summaries — so the
  information the pixels add over integrated light can be measured on the same simulations;
* :class:`SmoothPhotometryModel` is a *tractable* simulator — IMF-expected (non-stochastic)
  magnitudes plus Gaussian noise — whose exact likelihood :func:`nuts_reference` samples with
  pyro's NUTS, so the NPE machinery can be validated against an exact-likelihood posterior.

It must not know about images' rendering, the flow model or the diagnostics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "LIKELIHOOD_PARAMETERS",
    "aperture_magnitudes",
    "SmoothPhotometryModel",
    "train_npe",
    "nuts_reference",
]

logger = logging.getLogger(__name__)

_POGSON = 2.5 / math.log(10.0)


def aperture_magnitudes(
    images: torch.Tensor,
    radius: float,
    *,
    annulus: tuple[float, float] | None = None,
    softening: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Background-subtracted aperture photometry as asinh magnitudes ("luptitudes").

    Parameters
    ----------
    images : torch.Tensor
        Cutouts (B, C, H, W) in e⁻/s per pixel; the aperture is centred on the cutout centre.
    radius : float
        Aperture radius (pixels).
    annulus : tuple of float, optional
        Inner and outer radius (pixels) of the sky annulus; its median per band is subtracted.
        ``None``: no sky subtraction.
    softening : float or torch.Tensor
        Softening flux b (e⁻/s, scalar or per band (C,)) of the asinh magnitude; near the noise of
        the aperture flux. Luptitudes stay finite for zero or negative fluxes.

    Returns
    -------
    torch.Tensor
        (B, C) instrumental asinh magnitudes, −2.5/ln 10 · [asinh(f / 2b) + ln b] (mag; add a
        zero point for calibrated magnitudes).
    """
    b_, c, h, w = images.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, device=images.device, dtype=images.dtype) - (h - 1) / 2,
        torch.arange(w, device=images.device, dtype=images.dtype) - (w - 1) / 2,
        indexing="ij",
    )
    r = torch.sqrt(xx**2 + yy**2)
    ap = r <= radius
    flux = images[..., ap].sum(-1)  # (B, C)
    if annulus is not None:
        ring = (r >= annulus[0]) & (r < annulus[1])
        flux = flux - images[..., ring].median(-1).values * ap.sum()
    soft = torch.as_tensor(softening, dtype=images.dtype, device=images.device)
    return -_POGSON * (torch.asinh(flux / (2 * soft)) + torch.log(soft))


LIKELIHOOD_PARAMETERS = ("log_age", "log_mass", "av")
"""Parameters that enter :class:`SmoothPhotometryModel`'s likelihood (log r_h does not), in θ order."""


class SmoothPhotometryModel:
    """Tractable simulator: smooth integrated magnitudes + Gaussian noise.

    x = m(log age, A_V, log M) + μ + σ ε, ε ~ N(0, I), where m are IMF-expected absolute
    magnitudes (no stochastic sampling of stars), μ the distance modulus and σ the photometric
    error (mag). The size r_h does not enter, so its exact posterior equals its prior.

    Parameters
    ----------
    magnitudes : callable
        ``magnitudes(log_age, av, log_mass) -> (B, n_band)`` absolute magnitudes, differentiable in
        torch (e.g. ``StellarPopulation(bands).integrated_magnitudes``).
    prior : simulators.priors.ClusterPrior
        Parameter box; the positions of log age, log mass and A_V in θ are read from it.
    sigma : float or sequence of float
        Photometric error per band (mag).
    distance_modulus : float
        μ (mag).
    """

    def __init__(
        self, magnitudes: Callable, prior, sigma: float = 0.05, distance_modulus: float = 0.0
    ) -> None:
        self.magnitudes = magnitudes
        self.prior = prior
        self.sigma = torch.as_tensor(sigma, dtype=torch.float32)
        self.distance_modulus = float(distance_modulus)
        self._age, self._mass, self._av = (prior.index(name) for name in LIKELIHOOD_PARAMETERS)

    def mean(self, theta: torch.Tensor) -> torch.Tensor:
        """Noise-free apparent magnitudes (..., n_band) of θ (..., D)."""
        flat = theta.reshape(-1, theta.shape[-1])
        m = (
            self.magnitudes(flat[:, self._age], flat[:, self._av], flat[:, self._mass])
            + self.distance_modulus
        )
        return m.reshape(*theta.shape[:-1], m.shape[-1])

    def simulate(self, theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noisy magnitudes (B, n_band) for θ (B, D)."""
        m = self.mean(theta)
        return m + self.sigma * torch.randn(m.shape, generator=generator, device=m.device)

    def log_likelihood(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | θ) (nats); θ (..., D), x broadcastable to (..., n_band)."""
        d = torch.distributions.Normal(self.mean(theta), self.sigma)
        return d.log_prob(x).sum(-1)


def train_npe(
    theta: torch.Tensor,
    x: torch.Tensor,
    prior,
    *,
    density_estimator: str = "maf",
    max_num_epochs: int = 200,
    batch_size: int = 256,
    seed: int = 0,
):
    """Fit an sbi neural posterior estimator to (θ, x) pairs of low-dimensional summaries.

    Parameters
    ----------
    theta : torch.Tensor
        Parameters (N, D) drawn from ``prior``.
    x : torch.Tensor
        Summaries (N, K), e.g. aperture magnitudes.
    prior : simulators.priors.ClusterPrior
        Prior (its torch distribution is the NPE prior).
    density_estimator : str
        sbi estimator name (``"nsf"``, ``"maf"``, ...).
    max_num_epochs : int
        Epoch cap (early stopping on a 10 % validation split also applies).
    batch_size : int
        Training batch size.
    seed : int
        Seed of weight initialisation and data shuffling (sbi draws from torch's global generator;
        it is re-seeded here and restored afterwards).

    Returns
    -------
    sbi.inference.DirectPosterior
    """
    from sbi.inference import NPE

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        npe = NPE(
            prior=prior.distribution(),
            density_estimator=density_estimator,
            show_progress_bars=False,
        )
        npe.append_simulations(theta.float(), x.float())
        estimator = npe.train(training_batch_size=batch_size, max_num_epochs=max_num_epochs)
        return npe.build_posterior(estimator)
    finally:
        torch.random.set_rng_state(state)


def nuts_reference(
    model: SmoothPhotometryModel,
    x_obs: torch.Tensor,
    *,
    num_samples: int = 1000,
    warmup: int = 500,
    num_chains: int = 4,
    seed: int = 0,
    jit: bool = True,
    max_tree_depth: int = 10,
    return_chains: bool = False,
) -> np.ndarray:
    """Exact-likelihood posterior draws for one observation with pyro's NUTS.

    Parameters
    ----------
    model : SmoothPhotometryModel
        Tractable simulator (its prior is the uniform box).
    x_obs : torch.Tensor
        Observed magnitudes (n_band,).
    num_samples : int
        Total draws kept (split over chains: ⌈num_samples / num_chains⌉ per chain).
    warmup : int
        Warm-up steps per chain.
    num_chains : int
        Independent chains started from prior draws (run one after another), which guards
        against a single chain stuck in one mode of a multimodal posterior.
    seed : int
        Seed (pyro uses torch's global generator; it is re-seeded and restored afterwards).
    jit : bool
        Compile the potential with the PyTorch JIT (cheaper gradients; the magnitude function
        must be traceable).
    max_tree_depth : int
        Largest NUTS tree depth (at most 2^depth − 1 gradient evaluations per draw; pyro's
        default 10). Lower caps the cost of draws in strongly curved regions, at some loss of
        mixing.
    return_chains : bool
        Return the draws per chain, (num_chains, ⌈num_samples / num_chains⌉, D), for convergence
        checks (e.g. split R̂), instead of the pooled (num_samples, D).

    Returns
    -------
    numpy.ndarray
        Draws (num_samples, D) in θ units (the prior's: log age / dex(yr), log M / dex(M☉),
        log r_h / dex(pc), A_V / mag), or per chain (see ``return_chains``).

    Notes
    -----
    NUTS samples only (log age, log M, A_V), the parameters the likelihood depends on; log r_h
    does not enter :class:`SmoothPhotometryModel`, so its exact posterior is its uniform prior and
    it is drawn from that directly (seeded by ``seed``), which also makes the warm-up cheaper. A
    dense mass matrix is adapted during warm-up: age, extinction and
    mass are strongly correlated in integrated colours, which a diagonal mass matrix handles
    poorly. Chains stuck in different modes of a multimodal posterior are pooled with equal
    weight, which is not the exact posterior: check agreement between chains.
    """
    import pyro
    import pyro.distributions as pdist
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_sample

    low, high = model.prior.low(), model.prior.high()
    free = torch.tensor([model.prior.index(name) for name in LIKELIHOOD_PARAMETERS])
    rh = model.prior.index("log_rh")  # absent from the likelihood

    def pyro_model():
        sub = pyro.sample("theta", pdist.Uniform(low[free], high[free]).to_event(1))
        theta = torch.zeros(sub.shape[:-1] + (len(low),), dtype=sub.dtype)
        theta = theta.index_copy(-1, free, sub)  # log r_h left at 0: the mean ignores it
        pyro.sample("x", pdist.Normal(model.mean(theta), model.sigma).to_event(1), obs=x_obs)

    per_chain = int(math.ceil(num_samples / num_chains))
    gen = torch.Generator().manual_seed(seed)
    state = torch.random.get_rng_state()
    draws = []
    try:
        for chain in range(num_chains):
            pyro.set_rng_seed(seed * 1000 + chain)
            pyro.clear_param_store()
            kernel = NUTS(
                pyro_model,
                target_accept_prob=0.9,
                init_strategy=init_to_sample,
                full_mass=True,
                max_tree_depth=max_tree_depth,
                jit_compile=jit,
                ignore_jit_warnings=True,
            )
            mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=warmup, disable_progbar=True)
            mcmc.run()
            sub = mcmc.get_samples()["theta"].detach()
            theta = torch.empty(per_chain, len(low))
            theta[:, free] = sub
            theta[:, rh] = low[rh] + (high[rh] - low[rh]) * torch.rand(per_chain, generator=gen)
            draws.append(theta.numpy())
    finally:
        torch.random.set_rng_state(state)
    chains = np.stack(draws)
    return chains if return_chains else chains.reshape(-1, len(low))[:num_samples]
