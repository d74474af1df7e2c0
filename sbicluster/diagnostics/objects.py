"""Per-object statistics of posterior draws: the few numbers per test object the report needs.

Every calibration and accuracy metric of a diagnostics report is a function of a handful of
numbers per test object, each computed from that object's own draws alone: the smallest joint and
marginal HPD credibility that contains the truth, the SBC rank of each true parameter, the
posterior median and 68 % half-width, and the TARP coverage value. This module owns that
reduction (:func:`draw_statistics`) and the container of its results (:class:`DrawStatistics`),
so that a test set can be sampled chunk by chunk and only a few floats per object kept, whatever
the number of draws: memory then grows with n, not with n × S. The statistics of a test set
computed in chunks are exactly those computed in one go (:meth:`DrawStatistics.concatenate`).
It works on numpy arrays and must not know about models, simulators or plotting.

TARP (Lemos et al. 2023, arXiv:2302.03026) reduces to one number per object as well: the
fraction of its draws closer to its reference point than the truth is, distances taken after
scaling every parameter to [0, 1] over a box. :func:`tarp_coverage_values` computes it exactly as
sbi's ``_run_tarp`` does (same float32 operations) for a given box, and :func:`tarp_from_values`
turns the values into sbi's expected-coverage curve, area to curve and KS p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .accuracy import posterior_width
from .coverage import hpd_credibility_joint, hpd_credibility_ties, marginal_credibility
from .sbc import sbc_ranks

__all__ = [
    "DrawStatistics",
    "draw_statistics",
    "tarp_coverage_values",
    "tarp_from_values",
]

MARGINAL_CHUNK = 32
"""Objects per step of the marginal credibility's kernel density (its working memory is
``MARGINAL_CHUNK × 128 × (S − 128) × D`` float64, ≈ 110 MB at S = 1000; the values do not
depend on it)."""

TARP_SCALE_EPS = 1e-10
"""Added to each box width before scaling, as sbi's ``_run_tarp`` does."""


@dataclass
class DrawStatistics:
    """Per-object reductions of posterior draws, for N test objects with D parameters.

    Attributes
    ----------
    num_samples : int
        Draws per object, S.
    marginal_credibility : numpy.ndarray
        float64 (N, D), in [0, 1]: smallest 1-D HPD credibility containing the truth
        (:func:`~sbicluster.diagnostics.coverage.marginal_credibility`).
    ranks : numpy.ndarray
        int64 (N, D), in {0, …, S}: SBC rank of the truth among the draws.
    median : numpy.ndarray
        float64 (N, D), θ units: posterior median.
    width : numpy.ndarray
        float64 (N, D), θ units: half-width of the central 68 % interval, (q84 − q16)/2.
    joint_credibility : numpy.ndarray or None
        float64 (N,), in [0, 1]: smallest joint HPD credibility containing the truth; ``None``
        without log densities.
    tarp_coverage : numpy.ndarray or None
        float32 (N,), in [0, 1]: TARP coverage value (:func:`tarp_coverage_values`); ``None``
        without reference points.
    """

    num_samples: int
    marginal_credibility: np.ndarray
    ranks: np.ndarray
    median: np.ndarray
    width: np.ndarray
    joint_credibility: np.ndarray | None = None
    tarp_coverage: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ranks.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (a few tens per object, independent of S)."""
        return sum(
            getattr(self, f.name).nbytes
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        )

    @classmethod
    def concatenate(cls, parts: Sequence[DrawStatistics]) -> DrawStatistics:
        """The statistics of consecutive chunks of objects, as one set (in order).

        Parameters
        ----------
        parts : sequence of DrawStatistics
            At least one; all with the same ``num_samples`` and the same optional entries.

        Returns
        -------
        DrawStatistics

        Raises
        ------
        ValueError
            No parts, or parts that disagree on S or on which optional entries they hold.
        """
        if not parts:
            raise ValueError("concatenate needs at least one part")
        num_samples = {p.num_samples for p in parts}
        if len(num_samples) != 1:
            raise ValueError(f"parts drawn with different numbers of draws: {sorted(num_samples)}")
        out = {"num_samples": parts[0].num_samples}
        for f in fields(cls):
            if f.name == "num_samples":
                continue
            values = [getattr(p, f.name) for p in parts]
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise ValueError(f"{f.name} is missing in some parts only")
            else:
                out[f.name] = np.concatenate(values)
        return cls(**out)


def tarp_coverage_values(
    samples: np.ndarray,
    theta: np.ndarray,
    references: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """TARP coverage value of each object: fraction of draws closer to its reference than its truth.

    The same float32 computation as sbi's ``_run_tarp`` with ``z_score_theta=True`` and the l2
    distance, for a given scaling box (sbi takes the box of the truths of the whole test set;
    any fixed box gives a valid test), so it can run on one chunk of objects at a time.

    Parameters
    ----------
    samples : numpy.ndarray
        Draws, shape (N, S, D), θ units.
    theta : numpy.ndarray
        Truths, shape (N, D), θ units.
    references : numpy.ndarray
        One reference point per object, shape (N, D), θ units.
    low, high : numpy.ndarray
        Scaling box, shape (D,), θ units: each parameter is mapped to (θ − low)/(high − low).

    Returns
    -------
    numpy.ndarray
        float32 (N,), in [0, 1]; uniform for a calibrated posterior.
    """
    lo = torch.as_tensor(np.asarray(low), dtype=torch.float32).reshape(1, -1)
    hi = torch.as_tensor(np.asarray(high), dtype=torch.float32).reshape(1, -1)
    scale = hi - lo + TARP_SCALE_EPS
    post = torch.as_tensor(np.moveaxis(np.asarray(samples), 1, 0), dtype=torch.float32)
    th = torch.as_tensor(np.asarray(theta), dtype=torch.float32)
    refs = torch.as_tensor(np.asarray(references), dtype=torch.float32)
    post, th, refs = (post - lo) / scale, (th - lo) / scale, (refs - lo) / scale
    sample_dists = torch.sqrt(torch.sum((refs - post) ** 2, dim=-1))  # (S, N)
    theta_dists = torch.sqrt(torch.sum((refs - th) ** 2, dim=-1))  # (N,)
    values = torch.sum(sample_dists < theta_dists, dim=0) / post.shape[0]
    return values.numpy()


def tarp_from_values(values: np.ndarray, num_bins: int | None = None) -> dict:
    """TARP expected-coverage curve, area to curve and KS p-value from per-object values.

    Parameters
    ----------
    values : numpy.ndarray
        TARP coverage values of the N test objects, shape (N,) (:func:`tarp_coverage_values`).
    num_bins : int, optional
        Bins of the credibility grid; default max(N // 10, 2).

    Returns
    -------
    dict
        ``ecp``, ``alpha`` (arrays, shape (num_bins + 1,)), ``atc`` (area to curve, > 0
        underconfident) and ``ks_pvalue``, as sbi's ``_run_tarp`` and ``check_tarp`` give them.
    """
    from sbi.diagnostics.tarp import check_tarp

    f = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    bins = max(f.shape[0] // 10, 2) if num_bins is None else int(num_bins)
    hist, alpha = torch.histogram(f, density=True, bins=bins)
    ecp = torch.cat([torch.zeros(1), torch.cumsum(hist, dim=0) / hist.sum()])
    atc, ks = check_tarp(ecp, alpha)
    return {"ecp": ecp.numpy(), "alpha": alpha.numpy(), "atc": float(atc), "ks_pvalue": float(ks)}


def draw_statistics(
    theta: np.ndarray,
    samples: np.ndarray,
    *,
    log_prob_true: np.ndarray | None = None,
    log_prob_samples: np.ndarray | None = None,
    tie_rng: np.random.Generator | None = None,
    tarp_references: np.ndarray | None = None,
    tarp_box: tuple[np.ndarray, np.ndarray] | None = None,
) -> DrawStatistics:
    """Reduce the draws of N objects to the per-object statistics of the report.

    Each object's statistics depend only on its own truth, draws, log densities and reference
    point, so this may be called on consecutive chunks of a test set and the results
    concatenated; the one random input (``tie_rng``, one uniform per object) is then consumed in
    the same order.

    Parameters
    ----------
    theta : numpy.ndarray
        Truths, shape (N, D), θ units.
    samples : numpy.ndarray
        Posterior draws, shape (N, S, D), θ units.
    log_prob_true, log_prob_samples : numpy.ndarray, optional
        log q of the truths (N,) and of the draws (N, S), nats; without them no joint
        credibility.
    tie_rng : numpy.random.Generator, optional
        Split draws exactly as dense as the truth at random
        (:func:`~sbicluster.diagnostics.coverage.hpd_credibility_ties`; piecewise-constant
        densities).
    tarp_references : numpy.ndarray, optional
        TARP reference point per object, shape (N, D), θ units; needs ``tarp_box``.
    tarp_box : tuple of numpy.ndarray, optional
        (low, high), each (D,), θ units: the TARP scaling box.

    Returns
    -------
    DrawStatistics
    """
    theta = np.asarray(theta, dtype=float)
    samples = np.asarray(samples, dtype=float)
    joint = None
    if log_prob_true is not None and log_prob_samples is not None:
        if tie_rng is None:
            joint = hpd_credibility_joint(log_prob_true, log_prob_samples)
        else:
            joint = hpd_credibility_ties(log_prob_true, log_prob_samples, tie_rng)
    tarp_values = None
    if tarp_references is not None:
        if tarp_box is None:
            raise ValueError("tarp_references need a tarp_box (low, high)")
        tarp_values = tarp_coverage_values(samples, theta, tarp_references, *tarp_box)
    return DrawStatistics(
        num_samples=int(samples.shape[1]),
        marginal_credibility=marginal_credibility(samples, theta, chunk=MARGINAL_CHUNK),
        ranks=sbc_ranks(samples, theta),
        median=np.median(samples, axis=1),
        width=posterior_width(samples),
        joint_credibility=joint,
        tarp_coverage=tarp_values,
    )
