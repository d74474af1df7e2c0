"""Is the observed data set like the training simulations? An MMD two-sample test.

This module owns the misspecification check: a kernel two-sample test (maximum mean discrepancy,
Gretton et al. 2012, JMLR 13, 723) between a set of observed feature vectors and a set of
reference feature vectors, with a permutation p-value. For a trained model the features are the
model's embedding of each cutout (:func:`embed_cutouts`), and the reference set is the embedding of
simulations from the simulator the model was trained on; a small p-value says the observed cutouts
do not look like the training data, so the posteriors of those cutouts are not to be trusted
(Schmitt et al. 2023, arXiv:2112.08866; sbi's ``calc_misspecification_mmd`` is the same idea, but
draws its permutations from torch's global generator and compares a null of a different sample
size, so this module does its own).

It works on arrays and a model's embedding only; it must not simulate (the caller brings the
reference set) and must not know about files or plots.

Construction
------------
Features are standardised by the reference set's per-feature mean and standard deviation. The
kernel is Gaussian, k(a, b) = exp(−|a − b|² / (2 h²)), with h the median pairwise distance of the
pooled set (median heuristic, fixed for all permutations). The statistic is the unbiased MMD²
(diagonal terms excluded); its null distribution is obtained by permuting the pooled set's labels,
and p = (1 + #{permuted MMD² ≥ observed}) / (1 + P), which is a valid p-value at any sample size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["MMDTestResult", "mmd_permutation_test", "embed_cutouts", "misspecification_test"]


@dataclass
class MMDTestResult:
    """Outcome of :func:`mmd_permutation_test`.

    Attributes
    ----------
    mmd2 : float
        Unbiased MMD² of the observed split (dimensionless; ≈ 0 when both sets share a
        distribution, can be slightly negative).
    p_value : float
        Permutation p-value of ``mmd2`` (small: the sets differ).
    null_quantile_95 : float
        95th percentile of MMD² under the permutation null.
    bandwidth : float
        Kernel width h in standardised feature units.
    n_observed, n_reference, n_permutations : int
        Sizes of the two sets and number of permutations.
    """

    mmd2: float
    p_value: float
    null_quantile_95: float
    bandwidth: float
    n_observed: int
    n_reference: int
    n_permutations: int

    def to_dict(self) -> dict:
        """JSON-serialisable copy."""
        return asdict(self)


def _check_sets(observed: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(observed, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"expected observed (n, F) and reference (m, F) features, got {x.shape} and {y.shape}"
        )
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 vectors in each set, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features must be finite")
    return x, y


def _median_distance(z: np.ndarray, rng: np.random.Generator, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance of (a random subset of) ``z`` (its units)."""
    if len(z) > max_points:
        z = z[rng.choice(len(z), max_points, replace=False)]
    sq = np.sum(z**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    upper = d2[np.triu_indices(len(z), k=1)]
    return float(np.sqrt(np.median(upper)))


def _unbiased_mmd2(kernel: np.ndarray, member: np.ndarray, total: float) -> np.ndarray:
    """Unbiased MMD² for each column of the 0/1 membership matrix ``member`` (N, P)."""
    n = member[:, 0].sum()
    m = member.shape[0] - n
    km = kernel @ member  # (N, P)
    s_xx = np.einsum("ip,ip->p", member, km)  # Σ_{x,x'} k, diagonal included
    s_xy = km.sum(axis=0) - s_xx  # Σ_{x,y} k
    s_yy = total - s_xx - 2.0 * s_xy
    # the Gaussian kernel is 1 on the diagonal: n of those in s_xx, m in s_yy
    return (s_xx - n) / (n * (n - 1)) + (s_yy - m) / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def mmd_permutation_test(
    observed: np.ndarray,
    reference: np.ndarray,
    rng: np.random.Generator,
    *,
    num_permutations: int = 500,
    standardise: bool = True,
) -> MMDTestResult:
    """Two-sample test of "observed and reference come from one distribution" (Gaussian-kernel MMD).

    Parameters
    ----------
    observed : numpy.ndarray
        Feature vectors of the observed set, shape (n, F), n ≥ 2.
    reference : numpy.ndarray
        Feature vectors of the reference set, shape (m, F), m ≥ 2 (e.g. embeddings of training
        simulations). Memory grows as (n + m)²: keep n + m ≲ 5,000.
    rng : numpy.random.Generator
        Source of the permutations (and of the subset used for the bandwidth when n + m > 2,000).
    num_permutations : int
        Permutations of the null distribution; the smallest attainable p-value is
        1 / (num_permutations + 1).
    standardise : bool
        Scale every feature by the reference set's mean and standard deviation first.

    Returns
    -------
    MMDTestResult

    Raises
    ------
    ValueError
        If the arrays are not two (·, F) sets of at least 2 finite vectors, or
        ``num_permutations`` < 1.
    """
    x, y = _check_sets(observed, reference)
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be >= 1, got {num_permutations}")
    if standardise:
        mean, std = y.mean(axis=0), y.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x, y = (x - mean) / std, (y - mean) / std
    z = np.concatenate([x, y])
    bandwidth = _median_distance(z, rng)
    if bandwidth <= 0:
        bandwidth = 1.0
    sq = np.sum(z**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    kernel = np.exp(-d2 / (2.0 * bandwidth**2))
    del d2
    total = float(kernel.sum())
    n, big_n = len(x), len(z)
    observed_member = np.zeros((big_n, 1))
    observed_member[:n] = 1.0
    mmd2 = float(_unbiased_mmd2(kernel, observed_member, total)[0])
    null = []
    for p0 in range(0, num_permutations, 100):
        block = min(100, num_permutations - p0)
        member = np.zeros((big_n, block))
        for j in range(block):
            member[rng.permutation(big_n)[:n], j] = 1.0
        null.append(_unbiased_mmd2(kernel, member, total))
    null = np.concatenate(null)
    p_value = (1.0 + np.sum(null >= mmd2)) / (1.0 + num_permutations)
    return MMDTestResult(
        mmd2=mmd2,
        p_value=float(p_value),
        null_quantile_95=float(np.quantile(null, 0.95)),
        bandwidth=float(bandwidth),
        n_observed=int(n),
        n_reference=int(len(y)),
        n_permutations=int(num_permutations),
    )


@torch.no_grad()
def embed_cutouts(model, images: np.ndarray | torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """The model's embedding (the features its posterior is conditioned on) of each cutout.

    Parameters
    ----------
    model : sbicluster.model.ClusterModel
        Trained model.
    images : numpy.ndarray or torch.Tensor
        (N, C, H, W) cutouts in e⁻/s per pixel, band order ``model.bands``.
    batch_size : int
        Cutouts per network pass.

    Returns
    -------
    numpy.ndarray
        float64 (N, F) features.
    """
    from ..inference import embed_in_parts, validate_images

    validate_images(model, images)
    model.eval()
    parts = []
    for i in range(0, len(images), batch_size):
        chunk = torch.as_tensor(images[i : i + batch_size], dtype=torch.float32).to(model.device)
        parts.append(embed_in_parts(model, chunk).double().cpu())
    return torch.cat(parts).numpy()


def misspecification_test(
    model,
    observed_images: np.ndarray | torch.Tensor,
    reference_images: np.ndarray | torch.Tensor,
    *,
    seed: int = 0,
    num_permutations: int = 500,
) -> MMDTestResult:
    """MMD test, in the model's embedding space, of observed cutouts against training simulations.

    Parameters
    ----------
    model : sbicluster.model.ClusterModel
        Trained model.
    observed_images : numpy.ndarray or torch.Tensor
        (n, C, H, W) cutouts to check (e.g. a catalogue's cluster candidates), e⁻/s per pixel.
    reference_images : numpy.ndarray or torch.Tensor
        (m, C, H, W) cluster cutouts simulated by the model's training simulator
        (``simulators.registry.simulator_from_card(model.card["simulator"])``, label 1), m ≳ n.
    seed : int
        Seed of the permutations.
    num_permutations : int
        Permutations of the null distribution.

    Returns
    -------
    MMDTestResult
        A p-value below e.g. 0.01 says the observed cutouts are not distributed like the
        training simulations (a misspecified simulator, or a selection unlike the prior).

    Examples
    --------
    >>> from simulators.registry import simulator_from_card               # doctest: +SKIP
    >>> sim = simulator_from_card(model.card["simulator"])               # doctest: +SKIP
    >>> ref = sim.simulate(1000, torch.Generator().manual_seed(1),
    ...                    label=torch.ones(1000, dtype=torch.long)).images  # doctest: +SKIP
    >>> misspecification_test(model, my_cutouts, ref).p_value            # doctest: +SKIP
    """
    observed = embed_cutouts(model, observed_images)
    reference = embed_cutouts(model, reference_images)
    return mmd_permutation_test(
        observed,
        reference,
        np.random.default_rng(seed),
        num_permutations=num_permutations,
    )
