"""Batched inference: input validation, bounded chunks, prior support, reproducibility."""

import numpy as np
import pytest
import torch

from sbicluster.errors import InputError
from sbicluster.inference import (
    EMBED_ROWS,
    classifier_logits,
    embed_in_parts,
    predict,
    symmetric_view,
    symmetric_views,
    view_averaged_heads,
)
from sbicluster.model import ClusterModel, default_architecture
from simulators.toy import LinearGaussianToy


@pytest.fixture(scope="module")
def setup():
    toy = LinearGaussianToy()
    torch.manual_seed(0)
    model = ClusterModel(
        toy.prior, toy.bands, toy.observation_shape, default_architecture("small", 2, [1.0, 1.0])
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


def test_embedding_in_parts_gives_the_features_of_one_pass(setup):
    toy, model = setup
    x = toy.simulate(2 * EMBED_ROWS + 5, torch.Generator().manual_seed(9)).images
    with torch.no_grad():
        whole = model.embed(x).float()
        parts = embed_in_parts(model, x)
    assert parts.shape == whole.shape
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)


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


def test_symmetric_views_are_the_dihedral_group_of_the_square():
    """One lit pixel at (0, 1) of a 5 × 5 cutout visits its 8 images under rotations and flips."""
    image = torch.zeros(1, 2, 5, 5)
    image[0, :, 0, 1] = 1.0
    views = symmetric_views(image, 8)
    assert len(views) == 8 and views[0] is image
    lit = {tuple(torch.nonzero(v[0, 0]).flatten().tolist()) for v in views}
    assert lit == {(0, 1), (1, 0), (0, 3), (3, 0), (4, 1), (1, 4), (4, 3), (3, 4)}
    assert [len(symmetric_views(image, k)) for k in (1, 2, 4)] == [1, 2, 4]
    assert torch.equal(symmetric_views(image, 2)[1], torch.rot90(image, 2, dims=(-2, -1)))
    with pytest.raises(InputError, match="one of"):
        symmetric_views(image, 3)
    with pytest.raises(InputError, match="square"):
        symmetric_views(torch.zeros(1, 2, 5, 6), 4)
    assert len(symmetric_views(torch.zeros(1, 2, 5, 6), 2)) == 2


def test_symmetric_view_alone_matches_its_place_in_the_group():
    """View k on its own is the k-th of the 8 views (identity, 180°, 90°, 270°, then mirrored);
    bad indices and 90° views of non-square cutouts are refused."""
    image = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(1, 2, 5, 5)
    views = symmetric_views(image, 8)
    for k in range(8):
        assert torch.equal(symmetric_view(image, k), views[k])
    assert torch.equal(symmetric_view(image, 4), torch.flip(image, dims=(-1,)))
    assert torch.equal(symmetric_view(image, 2), torch.rot90(image, 1, dims=(-2, -1)))
    for bad in (-1, 8):
        with pytest.raises(InputError, match="view index"):
            symmetric_view(image, bad)
    rectangle = torch.zeros(1, 2, 5, 6)
    with pytest.raises(InputError, match="square"):
        symmetric_view(rectangle, 6)
    assert symmetric_view(rectangle, 5).shape == rectangle.shape


def test_eight_views_make_p_cluster_invariant_to_rotating_the_cutout(setup):
    """Averaged over the whole group, P(cluster) and visibility of a rotated or mirrored cutout
    equal those of the original (an untrained network is not invariant on one view); the
    posterior draws still come from the cutout as given."""
    toy, model = setup
    x = toy.simulate(64, torch.Generator().manual_seed(10)).images
    moved = torch.flip(torch.rot90(x, 1, dims=(-2, -1)), dims=(-2,))

    def run(images, views):
        return predict(
            model,
            images,
            num_samples=20,
            views=views,
            generator=torch.Generator().manual_seed(11),
            progress=False,
        )

    one, one_moved = run(x, 1), run(moved, 1)
    eight, eight_moved = run(x, 8), run(moved, 8)
    assert np.abs(one.p_cluster - one_moved.p_cluster).max() > 1e-4
    np.testing.assert_allclose(eight.p_cluster, eight_moved.p_cluster, atol=1e-6)
    np.testing.assert_allclose(eight.visibility, eight_moved.visibility, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(eight.samples, one.samples)
    with torch.no_grad():
        logits = [model.heads(model.embed(v))[0] for v in symmetric_views(x, 8)]
    expected = torch.sigmoid(torch.stack(logits).mean(0)).numpy()
    np.testing.assert_allclose(eight.p_cluster, expected, atol=1e-6)
    logit, _ = view_averaged_heads(model, x, 8)
    np.testing.assert_allclose(torch.sigmoid(logit).numpy(), eight.p_cluster, atol=1e-6)
    # in chunks of 24 (64 cutouts: three chunks, the last one short) the same logits
    np.testing.assert_allclose(
        classifier_logits(model, x, views=8, batch_size=24), logit.double().numpy(), atol=1e-5
    )
    with pytest.raises(InputError, match="views"):
        run(x, 5)
