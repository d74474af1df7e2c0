"""The MMD misspecification test: its statistic, its null calibration and its power (seeded)."""

import numpy as np
import pytest

from sbicluster.diagnostics.misspecification import _unbiased_mmd2, mmd_permutation_test


def test_unbiased_mmd2_matches_the_direct_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.3, 1.0, size=(11, 3))
    z = np.concatenate([x, y])
    kernel = np.exp(-((z[:, None, :] - z[None, :, :]) ** 2).sum(-1) / 2.0)
    kxx, kyy, kxy = kernel[:7, :7], kernel[7:, 7:], kernel[:7, 7:]
    direct = (kxx.sum() - 7) / (7 * 6) + (kyy.sum() - 11) / (11 * 10) - 2 * kxy.sum() / (7 * 11)
    member = np.zeros((18, 1))
    member[:7] = 1
    assert _unbiased_mmd2(kernel, member, kernel.sum())[0] == pytest.approx(direct, rel=1e-12)


def test_same_distribution_gives_uniform_p_values():
    """Under the null, P(p ≤ α) ≤ α for a permutation test: over 40 seeded pairs of samples from
    one 8-D Gaussian, the p-values have mean ≈ 0.5 and few fall below 0.05."""
    rng = np.random.default_rng(1)
    p = []
    for _ in range(40):
        x, y = rng.normal(size=(60, 8)), rng.normal(size=(120, 8))
        p.append(mmd_permutation_test(x, y, rng, num_permutations=199).p_value)
    p = np.array(p)
    assert 0.35 < p.mean() < 0.65
    # Binomial(40, 0.05): P(≥ 6) ≈ 0.014
    assert (p <= 0.05).sum() <= 5


def test_shifted_and_rescaled_samples_are_rejected():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(400, 8))
    shifted = rng.normal(size=(200, 8)) + np.r_[0.5, np.zeros(7)]
    wider = rng.normal(size=(200, 8)) * np.r_[2.0, np.ones(7)]
    for x in (shifted, wider):
        result = mmd_permutation_test(x, y, rng, num_permutations=199)
        assert result.p_value == pytest.approx(1 / 200)
        assert result.mmd2 > result.null_quantile_95


def test_same_seed_same_answer_and_bad_inputs():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    a = mmd_permutation_test(x, y, np.random.default_rng(9), num_permutations=99)
    b = mmd_permutation_test(x, y, np.random.default_rng(9), num_permutations=99)
    assert a == b
    with pytest.raises(ValueError, match="features"):
        mmd_permutation_test(x, y[:, :3], rng)
    with pytest.raises(ValueError, match="finite"):
        mmd_permutation_test(np.full((5, 4), np.nan), y, rng)


def test_toy_model_embedding_accepts_its_own_simulator_and_flags_a_brighter_one(toy_model_dir):
    """End to end on the linear-Gaussian toy: fresh simulations of the training simulator are not
    rejected; the same θ seen through twice the signal (a miscalibrated zero point) are."""
    import torch

    from sbicluster.artifact import load_model
    from sbicluster.diagnostics import misspecification_test
    from simulators.toy import LinearGaussianToy

    model = load_model(toy_model_dir)
    toy = LinearGaussianToy()
    ones = torch.ones(300, dtype=torch.long)
    reference = toy.simulate(300, torch.Generator().manual_seed(1), label=ones).images
    same = toy.simulate(300, torch.Generator().manual_seed(2), label=ones).images
    shifted = (same - toy.background) * 2.0 + toy.background
    assert (
        misspecification_test(model, same, reference, seed=0, num_permutations=199).p_value > 0.05
    )
    assert (
        misspecification_test(model, shifted, reference, seed=0, num_permutations=199).p_value
        < 0.01
    )
