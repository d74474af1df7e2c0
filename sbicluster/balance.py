"""The balancing penalty of balanced neural posterior estimation (BNPE).

Delaunoy et al. 2023 (NeurIPS, arXiv:2304.10978) read a posterior estimate q(θ | x) as a classifier
between dependent pairs (θ, x) ~ p(θ, x) and independent pairs (θ, x) ~ p(θ) p(x)::

    d(θ, x) = σ(log q(θ | x) − log p(θ)),

and call it *balanced* when ``E_joint[d] + E_marginal[d] = 1``. The exact posterior is balanced
(the sum is ∫ p(θ, x) dθ dx = 1), and a balanced classifier is conservative: its credible regions
are never too narrow on average. Adding ``λ (E_joint[d] + E_marginal[d] − 1)²`` to the NPE loss
(they use λ = 100) pushes an overconfident estimate towards the conservative side at little cost to
the likelihood. This module only computes the penalty; :meth:`sbicluster.model.ClusterModel.losses`
forms the pairs.
"""

from __future__ import annotations

import torch


def balancing_penalty(
    log_ratio_joint: torch.Tensor, log_ratio_marginal: torch.Tensor
) -> torch.Tensor:
    """``(mean σ(r_joint) + mean σ(r_marginal) − 1)²`` for log ratios ``r = log q(θ|x) − log p(θ)``.

    Parameters
    ----------
    log_ratio_joint : torch.Tensor
        (N,) log q(θ_i | x_i) − log p(θ_i) on dependent pairs (θ_i, x_i) drawn from the simulator.
    log_ratio_marginal : torch.Tensor
        (M,) the same on independent pairs, e.g. θ shuffled across the batch.

    Returns
    -------
    torch.Tensor
        The scalar penalty, 0 for a balanced estimate, at most 1.
    """
    if log_ratio_joint.numel() == 0 or log_ratio_marginal.numel() == 0:
        raise ValueError("the balancing penalty needs at least one joint and one marginal pair")
    imbalance = (
        torch.sigmoid(log_ratio_joint).mean() + torch.sigmoid(log_ratio_marginal).mean() - 1.0
    )
    return imbalance.square()
