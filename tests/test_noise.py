"""Noise model: mean and variance of noisy images match the model; visibility on known cases."""

import math

import pytest
import torch

from simulators.instruments import get_preset
from simulators.noise import NoiseModel, aperture_mask, poisson_counts, visibility


def _model(**kw):
    return NoiseModel([1000.0, 2000.0], [0.01, 0.08], [3.1, 3.1], [3, 2], **kw)


@pytest.mark.parametrize("gaussian_above", [50.0, float("inf")])
def test_noise_mean_and_variance_match_model(gaussian_above):
    nm = _model(gaussian_above=gaussian_above)
    # per-pixel signals spanning faint (Poisson branch) to bright (normal branch) levels, e-/s
    signal = (
        torch.tensor([0.0, 0.003, 0.03, 0.5])
        .repeat(2, 1)
        .view(1, 2, 1, 4)
        .expand(20_000, 2, 1, 4)
        .contiguous()
    )
    g = torch.Generator().manual_seed(3)
    noisy = nm.add_noise(signal, g)
    var_model = nm.variance(signal[:1])[0]
    mean, var = noisy.mean(0), noisy.var(0)
    # sample-variance relative standard error sqrt(2/n) = 1 %; allow 4 %
    assert torch.allclose(var, var_model, rtol=0.04)
    assert torch.allclose(
        mean, signal[0], atol=float(4 * var_model.max().sqrt() / math.sqrt(20_000))
    )


def test_exact_poisson_branch_for_low_counts():
    g = torch.Generator().manual_seed(0)
    lam = torch.full((200_000,), 2.5)
    x = poisson_counts(lam, g)
    assert torch.equal(x, x.round())  # integers: the exact Poisson branch was used
    assert float(x.var()) == pytest.approx(2.5, rel=0.02)


def test_same_seed_same_noise():
    nm = _model()
    s = torch.rand(4, 2, 8, 8)
    a = nm.add_noise(s, torch.Generator().manual_seed(9))
    b = nm.add_noise(s, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_visibility_known_answer():
    # uniform variance v per pixel, point source of flux F in the aperture: S/N = F / sqrt(N_pix v)
    var = torch.full((1, 31, 31), 0.04)
    centre = torch.tensor([[15.0, 15.0]])
    radius = torch.tensor([3.0])
    npix = int(aperture_mask(centre, radius, (31, 31)).sum())
    assert npix == 29  # pixels with centres within 3 px
    img = torch.zeros(1, 31, 31)
    img[0, 15, 15] = 2.0
    assert float(visibility(img, var, centre, radius)) == pytest.approx(
        2.0 / math.sqrt(29 * 0.04), rel=1e-6
    )
    assert float(visibility(torch.tensor([2.0]), var, centre, radius)) == pytest.approx(
        2.0 / math.sqrt(29 * 0.04), rel=1e-6
    )


def test_from_instrument_uses_preset_numbers():
    inst = get_preset("m83-wfc3")
    nm = NoiseModel.from_instrument(inst)
    v = nm.variance(torch.zeros(1, 3, 1, 1)).flatten()
    for c, b in enumerate(inst.band_setups):
        expect = b.sky / b.exposure_time + b.n_exposures * b.read_noise**2 / b.exposure_time**2
        assert float(v[c]) == pytest.approx(expect, rel=1e-5)


def test_merged_read_noise_and_threaded_exact_branch_keep_the_model_variance():
    """Both branches with read noise (exact Poisson drawn in parallel sub-streams below 50 e⁻,
    one merged normal above) have mean λ and variance λ + σ_r²; results depend only on the seed."""
    n = 2_000_000
    lam = torch.cat([torch.full((n,), 7.0), torch.full((n,), 400.0)])
    a = poisson_counts(lam, torch.Generator().manual_seed(4), read_var=25.0)
    b = poisson_counts(lam, torch.Generator().manual_seed(4), read_var=25.0)
    assert torch.equal(a, b)
    low, high = a[:n], a[n:]
    assert float(low.mean()) == pytest.approx(7.0, abs=0.02)
    assert float(low.var()) == pytest.approx(32.0, rel=0.01)
    assert float(high.mean()) == pytest.approx(400.0, abs=0.06)
    assert float(high.var()) == pytest.approx(425.0, rel=0.01)
    # the exact branch is Poisson + normal: its third central moment is λ (a normal's is 0);
    # standard error ≈ 0.5 here
    third = float(((low.double() - low.double().mean()) ** 3).mean())
    assert third == pytest.approx(7.0, rel=0.25)
