"""The mixture posterior of benchmarks/ensemble.py: its draws and its density."""

import numpy as np
from scipy import stats

from benchmarks.ensemble import mixture_draws, mixture_log_prob
from sbicluster.diagnostics import joint_coverage


def test_mixture_log_prob_is_the_mean_of_the_member_densities():
    x = np.linspace(-40.0, 40.0, 81)
    lp = [stats.norm(-3, 1).logpdf(x), stats.norm(4, 2).logpdf(x), stats.norm(0, 5).logpdf(x)]
    expected = np.log(np.mean([np.exp(v) for v in lp], axis=0))
    finite = np.isfinite(expected)  # far tails underflow in the direct sum, not in logsumexp
    np.testing.assert_allclose(mixture_log_prob(lp)[finite], expected[finite], rtol=1e-10)
    # where exp underflows the log-sum-exp form is still exact: the widest member dominates
    np.testing.assert_allclose(mixture_log_prob(lp)[0], lp[2][0] + np.log(1 / 3), rtol=1e-6)


def test_mixture_draws_take_an_even_share_of_each_member():
    draws = [np.full((5, 10, 2), float(k)) for k in range(3)]
    mixed = mixture_draws(draws)
    assert mixed.shape == (5, 10, 2)
    assert [int((mixed[0, :, 0] == k).sum()) for k in range(3)] == [4, 3, 3]


def test_mixture_of_two_members_is_calibrated_where_each_member_is_not():
    """Truth drawn from the even mixture of N(−2, 1) and N(2, 1): HPD regions of the mixture
    (draws and density from the two members) cover at the nominal rate; one member alone is
    overconfident."""
    rng = np.random.default_rng(7)
    n, s = 2000, 400
    a, b = stats.norm(-2.0, 1.0), stats.norm(2.0, 1.0)
    truth = np.where(rng.random(n) < 0.5, a.rvs(n, random_state=rng), b.rvs(n, random_state=rng))
    draws_a = a.rvs((n, s), random_state=rng)
    draws_b = b.rvs((n, s), random_state=rng)
    mixed = mixture_draws([draws_a[..., None], draws_b[..., None]])[..., 0]
    lp_true = mixture_log_prob([a.logpdf(truth), b.logpdf(truth)])
    lp_draws = mixture_log_prob([a.logpdf(mixed), b.logpdf(mixed)])
    mixture = joint_coverage(lp_true, lp_draws)
    alone = joint_coverage(a.logpdf(truth), a.logpdf(draws_a))
    assert mixture.verdict == "calibrated"
    assert np.abs(mixture.empirical - mixture.levels).max() < 0.04
    assert alone.verdict == "overconfident"


def test_a_view_member_conditions_the_flow_on_that_view():
    """``--views-of``: member k's density is the flow given symmetric view k (view 2 is the 90°
    rotation), and view 0 is the cutout as given."""
    import torch

    from benchmarks.ensemble import member_log_prob
    from sbicluster.model import ClusterModel, default_architecture
    from simulators.toy import LinearGaussianToy

    toy = LinearGaussianToy()
    torch.manual_seed(0)
    model = ClusterModel(
        toy.prior, toy.bands, toy.observation_shape, default_architecture("small", 2, [1.0, 1.0])
    ).eval()
    x = toy.simulate(3, torch.Generator().manual_seed(1), label=torch.ones(3)).images
    theta = toy.prior.sample(6, torch.Generator().manual_seed(2)).reshape(2, 3, 4)
    with torch.no_grad():
        rotated = model.flow_log_prob(theta, model.embed(torch.rot90(x, 1, dims=(-2, -1))))
        as_given = model.flow_log_prob(theta, model.embed(x))
        assert torch.allclose(member_log_prob(model, 2)(theta, x), rotated, atol=1e-5)
        assert torch.allclose(member_log_prob(model, 0)(theta, x), as_given, atol=1e-5)
        assert not torch.allclose(rotated, as_given, atol=1e-3)
