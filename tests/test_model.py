"""ClusterModel: the bounded flow posterior, its sbi wrapper and the training losses."""

import copy
import json
import math

import pytest
import torch
import zuko
from sbi.inference import DirectPosterior

from sbicluster.model import (
    DEFAULT_FLOW,
    BoxLogitTransform,
    ClusterModel,
    _flow_layers,
    default_architecture,
)
from simulators.toy import LinearGaussianToy


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy()


@pytest.fixture(scope="module")
def model(toy):
    torch.manual_seed(0)
    return ClusterModel(
        toy.prior, toy.bands, toy.observation_shape, default_architecture("small", 2, [1.0, 1.0])
    ).eval()


def test_box_logit_jacobian_matches_autograd(toy):
    low, high = toy.prior.low(), toy.prior.high()
    t = BoxLogitTransform(low, high)
    theta = low + (high - low) * torch.tensor([0.1, 0.5, 0.8, 0.97])
    jac = torch.autograd.functional.jacobian(lambda x: t(x), theta)
    z, ladj = t.call_and_ladj(theta)
    assert ladj.item() == pytest.approx(torch.logdet(jac).item(), rel=1e-5)
    assert torch.allclose(t.inv(z), theta, atol=1e-5)
    # unit variance under the uniform prior
    u = toy.prior.sample(200_000, torch.Generator().manual_seed(1))
    assert t(u).std(0).tolist() == pytest.approx([1.0] * toy.prior.dim, abs=0.02)


def test_flow_density_integrates_to_one_over_the_prior_box(toy, model):
    """Monte Carlo ∫ q(θ|x) dθ = V · E_uniform[q] over the box (untrained flow, broad density)."""
    x = toy.simulate(1, torch.Generator().manual_seed(2), label=torch.ones(1)).images
    theta = toy.prior.sample(200_000, torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = model.embed(x)
        lp = model.flow_log_prob(theta, feats.expand(theta.shape[0], -1))
    volume = float(torch.prod(toy.prior.high() - toy.prior.low()))
    integral = volume * lp.exp().mean().item()
    assert integral == pytest.approx(1.0, abs=0.05)


def test_samples_never_leave_the_prior_and_sbi_accepts_all(toy, model):
    x = toy.simulate(5, torch.Generator().manual_seed(4)).images
    with torch.no_grad():
        s = model.sample_from_features(model.embed(x), 2000, torch.Generator().manual_seed(5))
    assert bool(toy.prior.contains(s.reshape(-1, toy.prior.dim)).all())
    post = model.posterior()
    assert isinstance(post, DirectPosterior)
    draws = post.sample_batched((500,), x=x, show_progress_bars=False)
    assert draws.shape == (500, 5, toy.prior.dim)
    assert bool(toy.prior.contains(draws.reshape(-1, toy.prior.dim)).all())


def test_model_log_prob_equals_sbi_log_prob(toy, model):
    b = toy.simulate(1, torch.Generator().manual_seed(6), label=torch.ones(1))
    theta = toy.prior.sample(7, torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = model.log_prob(theta, b.images.expand(7, -1, -1, -1))
        theirs = model.posterior().log_prob(theta, x=b.images, norm_posterior=False)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_flow_loss_uses_cluster_samples_only(toy, model):
    b = toy.simulate(32, torch.Generator().manual_seed(8))
    assert 0 < int(b.label.sum()) < 32
    w = {"classifier": 1.0, "visibility": 0.5}
    base = model.losses(b.theta, b.images, b.label, b.visibility, weights=w)
    theta2 = b.theta.clone()
    theta2[b.label == 0] = toy.prior.sample(
        int((b.label == 0).sum()), torch.Generator().manual_seed(9)
    )
    other = model.losses(theta2, b.images, b.label, b.visibility, weights=w)
    assert base["nll"].item() == pytest.approx(other["nll"].item(), rel=1e-6)
    expected = base["nll"] + 1.0 * base["bce"] + 0.5 * base["mse"]
    assert base["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    # BCE of an uninformed classifier is close to log 2
    assert abs(base["bce"].item() - math.log(2)) < 0.3


def test_balance_term_pairs_each_cluster_with_the_next_clusters_theta_in_its_half(toy, model):
    """The balanced-NPE term: the clusters split in two halves, in each joint pairs (θ_i, x_i) and
    independent pairs (θ_(i-1), x_i) of that half, both against the uniform prior's log density;
    the penalty is the product of the halves' imbalances, weighted into the total, 0 at weight 0."""
    from sbicluster.balance import imbalance

    b = toy.simulate(32, torch.Generator().manual_seed(12))
    w = {"classifier": 1.0, "visibility": 0.5, "balance": 100.0}
    with torch.no_grad():
        parts = model.losses(b.theta, b.images, b.label, b.visibility, weights=w)
        off = model.losses(b.theta, b.images, b.label, b.visibility, weights={**w, "balance": 0})
        is_cl = b.label.bool()
        theta, feats = b.theta[is_cl], model.embed(b.images[is_cl])
        log_prior = -float(torch.log(toy.prior.high() - toy.prior.low()).sum())
        half = len(theta) // 2
        halves = [
            imbalance(
                model.flow_log_prob(theta[part], feats[part]) - log_prior,
                model.flow_log_prob(theta[part].roll(1, 0), feats[part]) - log_prior,
            )
            for part in (slice(0, half), slice(half, None))
        ]
    assert parts["balance"].item() == pytest.approx((halves[0] * halves[1]).item(), rel=1e-5)
    assert parts["balance"].item() != 0.0
    assert off["balance"].item() == 0.0
    assert (parts["total"] - off["total"]).item() == pytest.approx(
        100.0 * parts["balance"].item(), rel=1e-4, abs=1e-6
    )


def test_batched_log_prob_embeds_once_and_matches_per_pair(toy, model):
    """posterior.log_prob_batched (S draws × B cutouts) equals log q evaluated pair by pair."""
    b = toy.simulate(3, torch.Generator().manual_seed(10), label=torch.ones(3))
    theta = toy.prior.sample(15, torch.Generator().manual_seed(11)).reshape(5, 3, 4)
    with torch.no_grad():
        batched = model.posterior().log_prob_batched(theta, x=b.images, norm_posterior=False)
        pairs = torch.stack([model.log_prob(theta[i], b.images) for i in range(5)])
    assert batched.shape == (5, 3)
    assert torch.allclose(batched, pairs, atol=1e-4)


def test_conditional_affine_flow_is_normalised_and_sampled_by_its_inverse(toy):
    """The optional per-cutout affine layer keeps the density normalised over the prior box and
    the fast sampler equal to the flow's own inverse (layer weights perturbed off the identity)."""
    torch.manual_seed(1)
    arch = default_architecture("small", 2, [1.0, 1.0], flow_overrides={"conditional_affine": True})
    model = ClusterModel(toy.prior, toy.bands, toy.observation_shape, arch).eval()
    layers = list(model.flow.transform.transforms)
    assert len(layers) == 1 + 1 + arch["flow"]["num_transforms"]  # box, affine, splines
    with torch.no_grad():
        last = layers[1].hyper[-1]
        last.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(6))
        last.bias.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(7))
        x = toy.simulate(3, torch.Generator().manual_seed(8), label=torch.ones(3)).images
        feats = model.embed(x)
        theta = toy.prior.sample(200_000, torch.Generator().manual_seed(9))
        volume = float(torch.prod(toy.prior.high() - toy.prior.low()))
        for i in range(3):
            lp = model.flow_log_prob(theta, feats[i : i + 1].expand(theta.shape[0], -1))
            assert volume * lp.exp().mean().item() == pytest.approx(1.0, abs=0.05)
        z = torch.randn(200, 3, toy.prior.dim, generator=torch.Generator().manual_seed(10))
        fast = model._coupling_inverse(z, feats)
        slow = model.flow(feats).transform.inv(z)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_cards_without_the_affine_option_build_the_original_flow(toy):
    arch = default_architecture("small", 2, [1.0, 1.0])
    arch["flow"].pop("conditional_affine")
    model = ClusterModel(toy.prior, toy.bands, toy.observation_shape, arch)
    assert len(list(model.flow.transform.transforms)) == 1 + arch["flow"]["num_transforms"]


def _perturbed_zuko_nsf(dim: int, context: int, seed: int) -> zuko.flows.Flow:
    """A ``zuko_nsf`` flow of ``dim`` parameters, its weights moved off the identity map."""
    torch.manual_seed(seed)
    fl = {**DEFAULT_FLOW, "type": "zuko_nsf", "hidden_features": 16, "num_transforms": 2}
    transforms, base = _flow_layers(fl, dim, context)
    flow = zuko.flows.Flow(transforms, base)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return flow.eval()


@pytest.mark.parametrize("dim", [1, 2])
def test_zuko_nsf_flow_is_normalised_and_its_samples_follow_its_density(dim):
    """The autoregressive ``zuko_nsf`` option on a 1-D and a 2-D problem: ∫ q = 1 on a grid, and
    the mean and standard deviation of its draws agree with those of the gridded density."""
    flow = _perturbed_zuko_nsf(dim, context=3, seed=dim)
    c = torch.tensor([0.3, -1.0, 0.5])
    axis = torch.linspace(-12.0, 12.0, 2001 if dim == 1 else 481, dtype=torch.float64)
    grid = torch.cartesian_prod(*[axis] * dim).reshape(-1, dim)
    step = float(axis[1] - axis[0]) ** dim
    with torch.no_grad():
        density = flow(c).log_prob(grid.float()).double().exp()
        draws = flow(c).sample((40_000,)).double()
    assert float(density.sum() * step) == pytest.approx(1.0, abs=2e-3)
    mean = (density[:, None] * grid).sum(0) * step
    std = ((density[:, None] * (grid - mean) ** 2).sum(0) * step).sqrt()
    assert torch.all((draws.mean(0) - mean).abs() < 5 * std / math.sqrt(len(draws)))
    assert torch.allclose(draws.std(0), std, rtol=0.03)


def test_cluster_model_with_the_zuko_nsf_flow_samples_inside_the_prior(toy):
    arch = default_architecture("small", 2, [1.0, 1.0], flow_overrides={"type": "zuko_nsf"})
    torch.manual_seed(2)
    model = ClusterModel(toy.prior, toy.bands, toy.observation_shape, arch).eval()
    x = toy.simulate(3, torch.Generator().manual_seed(4)).images
    with torch.no_grad():
        feats = model.embed(x)
        draws = model.sample_from_features(feats, 500, torch.Generator().manual_seed(5))
        log_q = model.flow_log_prob(draws, feats)
    assert draws.shape == (500, 3, toy.prior.dim)
    assert bool(toy.prior.contains(draws).all())
    assert bool(torch.isfinite(log_q).all())


def test_cpu_and_paper_presets_share_one_flow_and_the_shipped_card_matches_it():
    from sbicluster.artifact import DEFAULT_MODEL_DIR

    cpu, paper = (default_architecture(p, 3, [1.0, 1.0, 1.0]) for p in ("cpu", "paper"))
    assert cpu["flow"] == paper["flow"] == DEFAULT_FLOW
    assert cpu["embedding"] != paper["embedding"]
    card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    shipped = copy.deepcopy(card["architecture"])
    # the shipped model is the trained network plus a fitted base temperature (recalibration)
    assert shipped["flow"].pop("base_temperature")["per_dimension"] is False
    assert card["recalibration"]["config"]["n_simulations"] >= 10_000
    rebuilt = default_architecture(
        shipped["preset"], shipped["n_bands"], shipped["normalisation"]["softening_e_per_s"]
    )
    assert rebuilt == shipped
