"""ResNet embedding and its fixed asinh input normalisation."""

import math

import pytest
import torch

from sbicluster.embedding import (
    EMBEDDING_PRESETS,
    AsinhNormalisation,
    EmbeddingConfig,
    build_embedding,
    fast_asinh,
)


def test_asinh_normalisation_matches_formula_per_band():
    norm = AsinhNormalisation([0.5, 2.0])
    x = torch.tensor([[[[1.0]], [[1.0]]]])  # (1, 2, 1, 1) e-/s
    y = norm(x).flatten()
    assert y[0].item() == pytest.approx(math.asinh(2.0), rel=1e-6)
    assert y[1].item() == pytest.approx(math.asinh(0.5), rel=1e-6)


@pytest.mark.parametrize(("dtype", "most_ulps"), [(torch.float32, 1.1), (torch.float64, 2.0)])
def test_fast_asinh_is_within_its_stated_ulps_of_asinh_over_the_whole_range(dtype, most_ulps):
    magnitudes = torch.cat(
        [torch.zeros(1), torch.logspace(-37, 38, 20_001), torch.tensor([1.7e38])]
    ).to(dtype)  # up to half the largest float32, the documented range
    y = torch.cat([magnitudes, -magnitudes])
    # float32: against the exact value (torch.asinh's own error is up to 1.16 ulps there);
    # float64: against torch.asinh, itself within about 1 ulp
    exact = torch.asinh(y.double())
    got = fast_asinh(y)
    assert got.dtype == dtype
    ulp = torch.nextafter(
        exact.abs().to(dtype), torch.tensor(math.inf, dtype=dtype)
    ) - exact.abs().to(dtype)
    error_in_ulps = (got.double() - exact).abs() / ulp.double()
    assert float(error_in_ulps.max()) <= most_ulps
    assert torch.equal(torch.signbit(got), torch.signbit(y))  # odd, including ±0
    assert float(fast_asinh(torch.tensor(1e-30, dtype=dtype))) == pytest.approx(1e-30, rel=1e-6)


def test_normalisation_uses_no_per_image_statistics():
    """Doubling one cutout's flux changes its normalised pixels (flux carries the mass) and
    does not change the other cutouts of the batch."""
    emb = build_embedding(3, [1.0, 1.0, 1.0], "small").eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 5
    out = emb(x)
    x2 = x.clone()
    x2[0] *= 2
    out2 = emb(x2)
    assert not torch.allclose(out[0], out2[0], atol=1e-4)
    assert torch.allclose(out[1:], out2[1:], atol=1e-6)


@pytest.mark.parametrize("bands", [1, 2, 5])
def test_any_number_of_bands_and_image_size(bands):
    emb = build_embedding(bands, [1.0] * bands, "small").eval()
    for size in (8, 15, 32):
        out = emb(torch.randn(3, bands, size, size, generator=torch.Generator().manual_seed(size)))
        assert out.shape == (3, EMBEDDING_PRESETS["small"].features)
        assert torch.isfinite(out).all()


def test_empty_and_faint_cutouts_give_finite_features():
    emb = build_embedding(2, [0.1, 0.1], "small").eval()
    x = torch.zeros(2, 2, 12, 12)
    x[1] = 1e-6
    assert torch.isfinite(emb(x)).all()


def test_stem_keeps_full_resolution():
    emb = build_embedding(2, [1.0, 1.0], EmbeddingConfig(width=8, blocks=(1, 1), features=8))
    conv = emb.stem[0]
    assert conv.kernel_size == (7, 7) and conv.stride == (1, 1) and conv.padding == (3, 3)
    h = emb.stem(emb.normalise(torch.rand(1, 2, 20, 20)))
    assert h.shape[-2:] == (20, 20)


def test_paper_preset_is_larger_than_cpu_and_small():
    counts = {
        name: sum(p.numel() for p in build_embedding(3, [1.0] * 3, name).parameters())
        for name in ("small", "cpu", "paper")
    }
    assert counts["small"] < counts["cpu"] < counts["paper"]
    assert counts["paper"] > 5_000_000  # ResNet-18-like capacity


def test_bad_softening_is_rejected():
    with pytest.raises(ValueError):
        AsinhNormalisation([1.0, 0.0])
    with pytest.raises(ValueError):
        build_embedding(2, [1.0], "small")
    with pytest.raises(ValueError):
        build_embedding(2, [1.0, 1.0], "huge")


def test_channels_last_layout_is_kept_through_loading_and_computes_the_same_function():
    """The network runs in the channels-last layout (faster on CPU); a state dict saved in the
    default layout loads into it, and its outputs equal the default layout's to float rounding."""
    torch.manual_seed(1)
    emb = build_embedding(3, [1.0, 2.0, 0.5], "cpu").eval()
    weight = emb.stem[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    reference = build_embedding(3, [1.0, 2.0, 0.5], "cpu").to(memory_format=torch.contiguous_format)
    reference.load_state_dict(emb.state_dict())
    reference.eval()
    assert reference.stem[0].weight.is_contiguous()
    reloaded = build_embedding(3, [1.0, 2.0, 0.5], "cpu").eval()
    reloaded.load_state_dict(reference.state_dict())
    assert reloaded.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(5, 3, 24, 24, generator=torch.Generator().manual_seed(2)) * 10
    with torch.no_grad():
        h = reference.stages(reference.stem(reference.normalise(x)))
        expected = reference.head(reference.pool(h).flatten(1))
        torch.testing.assert_close(emb(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-5, atol=1e-5)
