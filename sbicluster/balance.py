"""The balancing penalty of balanced neural posterior estimation (BNPE).

Delaunoy et al. 2023 (NeurIPS, arXiv:2304.10978) read a posterior estimate q(θ | x) as a classifier
between dependent pairs (θ, x) ~ p(θ, x) and independent pairs (θ, x) ~ p(θ) p(x)::

    d(θ, x) = σ(log q(θ | x) − log p(θ)),

and call it *balanced* when the imbalance ``a = E_joint[d] + E_marginal[d] − 1`` is zero. The exact
posterior is balanced (``E_joint[d] + E_marginal[d] = ∫ p(θ, x) dθ dx = 1``), and a balanced
classifier is conservative: its credible regions are never too narrow on average. Adding ``λ a²`` to
the NPE loss (they use λ = 100) pushes an overconfident estimate towards the conservative side.

On a mini-batch the plug-in estimate ``imbalance(...)²`` is biased upwards by the
variance of ``â``, which with a few dozen pairs is as large as the penalty itself and rewards
making ``d`` constant rather than balanced. :func:`split_balancing_penalty` multiplies the
imbalances of two disjoint halves of the batch instead, whose expectation is exactly ``a²``.
This module only computes penalties; :meth:`sbicluster.model.ClusterModel.losses` forms the pairs.
"""

from __future__ import annotations

import torch


def imbalance(log_ratio_joint: torch.Tensor, log_ratio_marginal: torch.Tensor) -> torch.Tensor:
    """``mean σ(r_joint) + mean σ(r_marginal) − 1`` for log ratios ``r = log q(θ|x) − log p(θ)``.

    Parameters
    ----------
    log_ratio_joint : torch.Tensor
        (N,) log q(θ_i | x_i) − log p(θ_i) on dependent pairs (θ_i, x_i) drawn from the simulator.
    log_ratio_marginal : torch.Tensor
        (M,) the same on independent pairs, e.g. θ shuffled across the batch.

    Returns
    -------
    torch.Tensor
        Scalar in (−1, 1): negative when the estimate is overconfident, 0 when balanced.
    """
    if log_ratio_joint.numel() == 0 or log_ratio_marginal.numel() == 0:
        raise ValueError("the balancing penalty needs at least one joint and one marginal pair")
    return torch.sigmoid(log_ratio_joint).mean() + torch.sigmoid(log_ratio_marginal).mean() - 1.0


def split_balancing_penalty(
    first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Unbiased penalty: the product of the imbalances of two independent halves of a batch.

    Parameters
    ----------
    first, second : tuple of torch.Tensor
        ``(log_ratio_joint, log_ratio_marginal)`` of two halves that share no simulation (each
        half forms its independent pairs from its own θ), as in :func:`imbalance`.

    Returns
    -------
    torch.Tensor
        Scalar in (−1, 1) whose expectation is ``a²``; a single value may be negative.
    """
    return imbalance(*first) * imbalance(*second)
