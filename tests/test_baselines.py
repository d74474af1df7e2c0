"""The paper's binned-softmax baseline: densities, sampling and training on a known problem."""

import math

import numpy as np
import torch
from torch import nn

from sbicluster.baselines.binned import BinnedPosterior, BinnedTrainingConfig, train_binned
from simulators.batch import SimulationBatch
from simulators.priors import DEFAULT_PRIOR


def _model(seed=0):
    torch.manual_seed(seed)  # initialisation only; the library takes explicit generators
    emb = nn.Sequential(nn.Flatten(), nn.Linear(4, 64), nn.ReLU())
    return BinnedPosterior(emb, 64, DEFAULT_PRIOR, hidden=64)


def test_density_is_normalised_over_the_prior_box():
    m = _model()
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn((1, 2800), generator=gen) * 2
    size = torch.randn((1, 14), generator=gen)
    theta = DEFAULT_PRIOR.sample(200000, gen)
    q = m.log_prob_from_logits(grid, size, theta[:, None, :]).exp()  # (S, 1)
    volume = float(torch.prod(DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()))
    assert abs(float(q.mean()) * volume - 1.0) < 0.03  # ∫ q dθ = E_prior[q] × V
    outside = DEFAULT_PRIOR.high()[None, None] + 0.1
    assert torch.isinf(m.log_prob_from_logits(grid, size, outside)).all()


def test_samples_follow_bin_probabilities():
    m = _model()
    gen = torch.Generator().manual_seed(1)
    grid = torch.full((1, 2800), -20.0)
    grid[0, 5] = 0.0  # bin (age 0, A_V 0, mass 5)
    grid[0, 2799] = math.log(3.0)  # last bin, 3× more probable
    size = torch.zeros((1, 14))
    s = m.sample_from_logits(grid, size, 20000, gen)[0]
    assert DEFAULT_PRIOR.contains(s).all()
    flat, j = m.bin_index(s)
    frac_last = float((flat == 2799).float().mean())
    assert (
        abs(frac_last - 0.75) < 0.015
        and float(((flat == 5) | (flat == 2799)).float().mean()) == 1.0
    )
    # the size head is uniform over its 14 bins: log r_h is uniform over the prior range
    assert abs(float(j.float().mean()) - 6.5) < 0.1


class _LinearToy:
    """x = (θ − centre)/half-range + 0.05 ε as a 4-pixel 'image'; always a cluster."""

    prior = DEFAULT_PRIOR
    device = "cpu"

    def simulate(self, n, generator):
        theta = self.prior.sample(n, generator)
        lo, hi = self.prior.low(), self.prior.high()
        x = 2 * (theta - lo) / (hi - lo) - 1 + 0.05 * torch.randn(theta.shape, generator=generator)
        return SimulationBatch(
            theta, x[:, :, None, None], torch.ones(n, dtype=torch.long), torch.ones(n)
        )


def test_training_recovers_parameters_to_bin_resolution():
    toy = _LinearToy()
    m = _model()
    losses = []
    train_binned(
        toy,
        m,
        BinnedTrainingConfig(steps=300, batch_size=256, lr=3e-3, seed=0),
        callback=lambda step, loss: losses.append(loss),
    )
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 2.0
    test = toy.simulate(500, torch.Generator().manual_seed(99))
    draws = m.sample(test.images, 200, torch.Generator().manual_seed(3))
    med = draws.median(dim=1).values
    err = (med - test.theta).abs().median(dim=0).values
    # noise 0.05 of the half-range = 2.5 % of the range; bins are 5–10 % of the range
    width = DEFAULT_PRIOR.high() - DEFAULT_PRIOR.low()
    assert torch.all(err / width < 0.06), err / width
    lp = m.log_prob(test.theta, test.images)
    # the prior density is −log V = −3.53; one bin in every dimension would give +7.0
    assert torch.isfinite(lp).all() and float(lp.mean()) > 0.5
