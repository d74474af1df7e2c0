"""Baselines the flow posterior is measured against.

- :mod:`.binned` — the reference paper's output design (20 × 10 × 14 joint softmax + 14-bin size
  head) on the shared embedding, with bins converted to densities;
- :mod:`.photometry` — a posterior from integrated (aperture) photometry only, and the tractable
  smooth-photometry likelihood used for the exact-likelihood (pyro NUTS) reference.
"""

from .binned import GRID_BINS, SIZE_BINS, BinnedPosterior, BinnedTrainingConfig, train_binned

__all__ = ["GRID_BINS", "SIZE_BINS", "BinnedPosterior", "BinnedTrainingConfig", "train_binned"]
