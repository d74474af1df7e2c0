"""The balanced-NPE penalty on a 1-D Gaussian problem with an analytic posterior.

θ ~ N(0, 1), x = θ + N(0, s²): the posterior is N(x / (1 + s²), s² / (1 + s²)). Candidate
posteriors N(x / (1 + s²), c² s² / (1 + s²)) are too narrow for c < 1 and too wide for c > 1.
"""

import pytest
import torch
from torch.distributions import Normal

from sbicluster.balance import imbalance, split_balancing_penalty

NOISE = 0.5
POSTERIOR_SD = (NOISE**2 / (1 + NOISE**2)) ** 0.5


def _plug_in_penalty(log_ratio_joint, log_ratio_marginal):
    """The squared batch imbalance, the estimate of a² that the paper's loss uses."""
    return imbalance(log_ratio_joint, log_ratio_marginal).square()


def _pairs(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    x = theta + NOISE * torch.randn(n, generator=g, dtype=torch.float64)
    theta_independent = theta[torch.randperm(n, generator=g)]
    return theta, theta_independent, x


def _log_ratio(theta, x, sd):
    """log q(θ | x) − log p(θ) for a Gaussian q of the exact mean and standard deviation ``sd``."""
    return Normal(x / (1 + NOISE**2), sd).log_prob(theta) - Normal(0.0, 1.0).log_prob(theta)


def _imbalance(width_factor):
    theta, theta_ind, x = _pairs()
    sd = width_factor * POSTERIOR_SD
    joint, marginal = _log_ratio(theta, x, sd), _log_ratio(theta_ind, x, sd)
    return float(torch.sigmoid(joint).mean() + torch.sigmoid(marginal).mean() - 1), float(
        _plug_in_penalty(joint, marginal)
    )


def test_the_exact_posterior_is_balanced():
    imbalance, penalty = _imbalance(1.0)
    assert abs(imbalance) < 0.003  # Monte Carlo error of two means of 200,000 values in (0, 1)
    assert penalty < 1e-5


def test_an_overconfident_posterior_is_penalised_far_more_than_an_underconfident_one():
    narrow_imbalance, narrow = _imbalance(0.5)
    wide_imbalance, wide = _imbalance(2.0)
    assert narrow_imbalance < -0.1 and narrow > 0.01
    assert wide_imbalance > 0  # too wide: the sum exceeds 1, but only slightly
    assert narrow > 20 * wide


def test_minimising_the_penalty_alone_recovers_the_posterior_width():
    """Gradient descent on the penalty widens a 3× too narrow Gaussian to the exact width."""
    theta, theta_ind, x = _pairs(n=50_000, seed=1)
    log_sd = torch.tensor(float(torch.log(torch.tensor(POSTERIOR_SD / 3))), requires_grad=True)
    opt = torch.optim.Adam([log_sd], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        sd = log_sd.exp()
        _plug_in_penalty(_log_ratio(theta, x, sd), _log_ratio(theta_ind, x, sd)).backward()
        opt.step()
    assert float(log_sd.exp()) / POSTERIOR_SD == pytest.approx(1.0, abs=0.1)


def test_the_penalty_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError, match="at least one joint and one marginal"):
        imbalance(torch.zeros(3), torch.zeros(0))


def test_on_small_batches_the_split_penalty_is_unbiased_and_the_plug_in_one_is_not():
    """For the exact posterior a² = 0: over 4,000 batches of 16 pairs the plug-in estimate
    averages to the variance of the batch imbalance, the product of two halves to zero."""
    theta, _, x = _pairs(n=64_000, seed=2)
    theta, x = theta.reshape(4000, 16), x.reshape(4000, 16)

    def ratios(t, xx):
        return _log_ratio(t, xx, POSTERIOR_SD), _log_ratio(t.roll(1, dims=0), xx, POSTERIOR_SD)

    plug_in, split = [], []
    for t, xx in zip(theta, x, strict=True):
        plug_in.append(float(_plug_in_penalty(*ratios(t, xx))))
        split.append(float(split_balancing_penalty(ratios(t[:8], xx[:8]), ratios(t[8:], xx[8:]))))
    plug_in, split = torch.tensor(plug_in), torch.tensor(split)
    assert plug_in.mean() > 0.003  # the batch variance, not the (zero) imbalance
    assert abs(split.mean()) < 4 * split.std() / len(split) ** 0.5
    assert abs(split.mean()) < 0.1 * plug_in.mean()
