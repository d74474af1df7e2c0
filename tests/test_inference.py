"""Batched inference: input validation, bounded chunks, prior support, reproducibility."""

import numpy as np
import pytest
import torch

from sbicluster.errors import InputError
from sbicluster.inference import predict
from sbicluster.model import ClusterModel, default_architecture
from sbicluster.toy import LinearGaussianToy


@pytest.fixture(scope="module")
def setup():
    toy = LinearGaussianToy()
    torch.manual_seed(0)
    model = ClusterModel(
        toy.prior, toy.bands, toy.image_shape, default_architecture("small", 2, [1.0, 1.0])
    ).eval()
    return toy, model


def test_shapes_ranges_and_prior_support(setup):
    toy, model = setup
    x = toy.simulate(300, torch.Generator().manual_seed(1)).images
    pred = predict(
        model,
        x.numpy(),
        num_samples=50,
        batch_size=64,
        generator=torch.Generator().manual_seed(2),
        progress=False,
    )
    assert pred.samples.shape == (300, 50, 4) and pred.samples.dtype == np.float32
    assert pred.p_cluster.shape == (300,) and np.all((pred.p_cluster >= 0) & (pred.p_cluster <= 1))
    assert pred.visibility.shape == (300,) and np.all(pred.visibility >= 0)
    low, high = toy.prior.low().numpy(), toy.prior.high().numpy()
    assert np.all((pred.samples >= low) & (pred.samples <= high))


def test_same_seed_same_draws_and_chunking_does_not_change_heads(setup):
    toy, model = setup
    x = toy.simulate(40, torch.Generator().manual_seed(3)).images
    a = predict(
        model, x, num_samples=30, generator=torch.Generator().manual_seed(4), progress=False
    )
    b = predict(
        model, x, num_samples=30, generator=torch.Generator().manual_seed(4), progress=False
    )
    c = predict(
        model,
        x,
        num_samples=30,
        generator=torch.Generator().manual_seed(5),
        batch_size=7,
        progress=False,
    )
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    np.testing.assert_allclose(a.p_cluster, c.p_cluster, atol=1e-6)
    np.testing.assert_allclose(a.visibility, c.visibility, rtol=1e-5, atol=1e-6)


def test_draws_follow_the_flow_density(setup):
    """Draws of predict have the flow's own moments (checked against sbi's sampler)."""
    toy, model = setup
    x = toy.simulate(1, torch.Generator().manual_seed(6), label=torch.ones(1)).images
    ours = predict(
        model, x, num_samples=20_000, generator=torch.Generator().manual_seed(7), progress=False
    )
    torch.manual_seed(8)
    theirs = model.posterior().sample((20_000,), x=x, show_progress_bars=False).numpy()
    sd = theirs.std(0)
    np.testing.assert_allclose(ours.samples[0].mean(0), theirs.mean(0), atol=0.05 * sd.max())
    np.testing.assert_allclose(ours.samples[0].std(0), sd, rtol=0.05)


def test_bad_input_is_refused(setup):
    toy, model = setup
    x = toy.simulate(5, torch.Generator().manual_seed(9)).images
    bad = x.clone()
    bad[3, 1, 2, 2] = float("nan")
    with pytest.raises(InputError, match=r"NaN.*\[3\]"):
        predict(model, bad, num_samples=5, progress=False)
    with pytest.raises(InputError, match="shape"):
        predict(model, x[:, :1], num_samples=5, progress=False)
    with pytest.raises(InputError):
        predict(model, x, num_samples=0, progress=False)


def test_fast_coupling_sampler_equals_the_flow_inverse(setup):
    """predict's sampler (context term precomputed once per cutout) is the flow's own inverse."""
    toy, model = setup
    with torch.no_grad():
        features = model.embed(toy.simulate(6, torch.Generator().manual_seed(10)).images)
        z = torch.randn(300, 6, 4, generator=torch.Generator().manual_seed(11))
        fast = model._coupling_inverse(z, features)
        slow = model.flow(features).transform.inv(z)
    assert torch.allclose(fast, slow, atol=1e-4)
