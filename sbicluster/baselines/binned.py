"""The reference paper's output design: a binned softmax posterior on a shared embedding.

Bialopetravičius & Narbutis (2020, A&A 633, A148) predict one softmax over a joint
age × A_V × mass grid of 20 × 10 × 14 bins and a separate 14-bin softmax over the size r_h. This
module owns that head (:class:`BinnedPosterior`), its conversion to a continuous density (bin
probability / bin volume, piecewise constant, joint grid × independent size), sampling (a bin by
its probability, then uniform inside it), and a minimal online-simulation training loop
(:func:`train_binned`) so that it can be trained on the same embedding, simulations and budget as
the flow posterior. It must not know about the flow model or the diagnostics.

The bins span the prior box of each parameter uniformly (in θ units: dex for age, mass and r_h,
mag for A_V), so the baseline and the flow see exactly the same parameter space.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GRID_BINS", "SIZE_BINS", "BinnedPosterior", "BinnedTrainingConfig", "train_binned"]

logger = logging.getLogger(__name__)

GRID_BINS = {"log_age": 20, "av": 10, "log_mass": 14}
"""Joint-grid bins of the paper, in its order age × A_V × mass."""
SIZE_BINS = 14
"""Bins of the separate size (r_h) head."""

_GRID_ORDER = ("log_age", "av", "log_mass")


class BinnedPosterior(nn.Module):
    """Embedding + two softmax heads: joint (age, A_V, mass) grid and size.

    Parameters
    ----------
    embedding : torch.nn.Module
        Maps images (B, C, H, W) to features (B, F); shared design with the flow model.
    num_features : int
        F, the embedding's output width.
    prior : simulators.priors.ClusterPrior
        Parameter box; bins span each prior range uniformly.
    hidden : int
        Width of the hidden layer of each head (0: a linear head).

    Notes
    -----
    Density of θ = (log age, log M, log r_h, A_V) in θ units:
    q(θ|x) = P_grid(k(θ)) / V_grid × P_size(j(θ)) / Δ_size, with V_grid the volume of the joint
    bin (dex² mag) and Δ_size the size-bin width (dex).
    """

    def __init__(self, embedding: nn.Module, num_features: int, prior, hidden: int = 256) -> None:
        super().__init__()
        self.embedding = embedding
        self.prior = prior
        names = prior.names
        self._grid_idx = [names.index(n) for n in _GRID_ORDER]
        self._size_idx = names.index("log_rh")
        self.grid_shape = tuple(GRID_BINS[n] for n in _GRID_ORDER)
        n_grid = math.prod(self.grid_shape)

        def head(n_out: int) -> nn.Module:
            if hidden:
                return nn.Sequential(
                    nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
                )
            return nn.Linear(num_features, n_out)

        self.grid_head = head(n_grid)
        self.size_head = head(SIZE_BINS)
        self.register_buffer("low", prior.low())
        self.register_buffer("high", prior.high())
        nbins = torch.ones(prior.dim)
        for i, n in zip(self._grid_idx, self.grid_shape, strict=True):
            nbins[i] = n
        nbins[self._size_idx] = SIZE_BINS
        self.register_buffer("nbins", nbins)

    @property
    def bin_width(self) -> torch.Tensor:
        """Bin width per parameter, shape (D,), θ units."""
        return (self.high - self.low) / self.nbins

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised log probabilities: grid (B, 2800) and size (B, 14)."""
        f = self.embedding(images)
        return self.grid_head(f), self.size_head(f)

    def bin_index(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat joint-grid index (B,) and size-bin index (B,) of θ (clamped into the prior box)."""
        k = ((theta - self.low) / self.bin_width).floor().long()
        k = torch.minimum(torch.clamp(k, min=0), self.nbins.long() - 1)
        a, v, m = (k[:, i] for i in self._grid_idx)
        flat = (a * self.grid_shape[1] + v) * self.grid_shape[2] + m
        return flat, k[:, self._size_idx]

    def loss(self, theta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy of the true bins (nats), shape (B,)."""
        grid, size = self.logits(images)
        flat, j = self.bin_index(theta)
        return nn.functional.cross_entropy(
            grid, flat, reduction="none"
        ) + nn.functional.cross_entropy(size, j, reduction="none")

    def _log_volume(self) -> tuple[float, float]:
        w = self.bin_width
        return float(torch.log(w[self._grid_idx]).sum()), float(torch.log(w[self._size_idx]))

    def log_prob_from_logits(
        self, grid_logits: torch.Tensor, size_logits: torch.Tensor, theta: torch.Tensor
    ) -> torch.Tensor:
        """Continuous log density (θ units) of θ (S, B, D) or (B, D) given logits for B objects."""
        squeeze = theta.dim() == 2
        th = theta[None] if squeeze else theta
        s, b, d = th.shape
        flat, j = self.bin_index(th.reshape(s * b, d))
        lg = torch.log_softmax(grid_logits, -1)
        ls = torch.log_softmax(size_logits, -1)
        obj = torch.arange(b, device=th.device).repeat(s)
        lv_grid, lv_size = self._log_volume()
        lp = lg[obj, flat] - lv_grid + ls[obj, j] - lv_size
        inside = self.prior.contains(th.reshape(s * b, d))
        lp = torch.where(inside, lp, torch.full_like(lp, -math.inf)).reshape(s, b)
        return lp[0] if squeeze else lp

    @torch.no_grad()
    def log_prob(self, theta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """log q(θ_i | x_i), shape (N,), in θ units (bins converted to densities)."""
        return self.log_prob_from_logits(*self.logits(images), theta)

    @torch.no_grad()
    def sample_from_logits(
        self,
        grid_logits: torch.Tensor,
        size_logits: torch.Tensor,
        num_samples: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Draws (B, S, D): a bin by its probability, then uniform inside it."""
        b = grid_logits.shape[0]
        dev = grid_logits.device
        pg = torch.softmax(grid_logits.float(), -1)
        ps = torch.softmax(size_logits.float(), -1)
        flat = torch.multinomial(pg, num_samples, replacement=True, generator=generator)  # (B, S)
        j = torch.multinomial(ps, num_samples, replacement=True, generator=generator)
        n_av, n_m = self.grid_shape[1], self.grid_shape[2]
        idx = torch.empty((b, num_samples, self.prior.dim), device=dev)
        idx[..., self._grid_idx[0]] = (flat // (n_av * n_m)).float()
        idx[..., self._grid_idx[1]] = ((flat // n_m) % n_av).float()
        idx[..., self._grid_idx[2]] = (flat % n_m).float()
        idx[..., self._size_idx] = j.float()
        u = torch.rand(idx.shape, generator=generator, device=dev)
        return self.low + (idx + u) * self.bin_width

    @torch.no_grad()
    def sample(
        self, images: torch.Tensor, num_samples: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Posterior draws (B, S, D) in θ units for images (B, C, H, W)."""
        return self.sample_from_logits(*self.logits(images), num_samples, generator)


@dataclass
class BinnedTrainingConfig:
    """Training budget of the binned baseline (match the flow model's for a fair comparison).

    Attributes
    ----------
    steps : int
        Optimiser steps, each on a fresh simulated batch.
    batch_size : int
        Simulations per step (background-only rows are dropped: the head is a posterior).
    lr, weight_decay : float
        AdamW settings.
    seed : int
        Seed of the simulation stream and of the initialisation.
    device : str
        Training device.
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"


def train_binned(
    simulator,
    model: BinnedPosterior,
    config: BinnedTrainingConfig,
    *,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> BinnedPosterior:
    """Train the binned baseline with online simulation (cross-entropy of the true bins).

    Parameters
    ----------
    simulator : ClusterSimulator or compatible
        ``simulate(n, generator) -> SimulationBatch``.
    model : BinnedPosterior
        Untrained model (moved to ``config.device``).
    config : BinnedTrainingConfig
        Budget and optimiser settings.
    progress : bool
        Show a progress bar.
    callback : callable, optional
        Called as ``callback(step, loss)`` after each step.

    Returns
    -------
    BinnedPosterior
        The trained model in eval mode.
    """
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    model.to(device).train()
    sim_device = torch.device(simulator.device)
    gen = torch.Generator(device=sim_device).manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config.steps, 1))
    for step in tqdm(range(config.steps), desc="train binned", disable=not progress):
        batch = simulator.simulate(config.batch_size, gen)
        keep = batch.label == 1
        if not keep.any():
            continue
        loss = model.loss(batch.theta[keep].to(device), batch.images[keep].to(device)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, float(loss.detach()))
    return model.eval()
