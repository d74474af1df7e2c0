"""Phase-plane renderer: flux conservation, sub-pixel accuracy against the per-star reference, determinism."""

import numpy as np
import pytest
import torch

from simulators.instruments import get_preset
from simulators.psf import load_builtin_psf
from simulators.render import PhaseRenderer, render_stars_reference


@pytest.fixture(scope="module")
def psfs():
    inst = get_preset("m83-wfc3")
    return [load_builtin_psf(b, inst.pixel_scale) for b in inst.bands]


@pytest.fixture(scope="module")
def renderer(psfs):
    return PhaseRenderer(psfs, 64, n_phase=3)


def _stars(n, b, seed, lo=10.0, hi=54.0):
    g = torch.Generator().manual_seed(seed)
    sidx = torch.randint(b, (n,), generator=g)
    y = lo + (hi - lo) * torch.rand(n, generator=g)
    x = lo + (hi - lo) * torch.rand(n, generator=g)
    flux = torch.rand(n, 3, generator=g) * 10
    return sidx, y, x, flux


def test_total_flux_is_conserved(renderer):
    sidx, y, x, flux = _stars(
        500, 4, 0, lo=-5, hi=68
    )  # some stars in the padding, some off the canvas
    smooth = torch.rand(
        4, 3, renderer.canvas, renderer.canvas, generator=torch.Generator().manual_seed(1)
    )
    canvas = renderer.render(4, sidx, y, x, flux, smooth, crop=False)
    n, r = renderer.canvas, renderer.radius
    on = (y + r >= -0.5) & (y + r < n - 0.5) & (x + r >= -0.5) & (x + r < n - 0.5)
    expect = torch.zeros(4, 3).index_add_(0, sidx[on], flux[on].float()) + smooth.sum((-2, -1))
    assert torch.allclose(canvas.sum((-2, -1)), expect, rtol=1e-4)


@pytest.mark.parametrize(("n_phase", "bound"), [(2, 0.06), (3, 0.02)])
def test_peaks_within_6_percent_of_exact_reference(psfs, n_phase, bound):
    # isolated stars at random sub-pixel positions: compare every star's peak pixel with the exact renderer
    g = torch.Generator().manual_seed(2)
    k = 36
    yy, xx = torch.meshgrid(torch.arange(6) * 9 + 8.0, torch.arange(6) * 9 + 8.0, indexing="ij")
    y = yy.flatten() + torch.rand(k, generator=g) - 0.5
    x = xx.flatten() + torch.rand(k, generator=g) - 0.5
    flux = torch.full((k, 3), 100.0)
    renderer = PhaseRenderer(psfs, 64, n_phase=n_phase)
    img = renderer.render(1, torch.zeros(k, dtype=torch.long), y, x, flux)[0].double().numpy()
    ref = render_stars_reference(
        psfs, 64, y.double().numpy(), x.double().numpy(), flux.double().numpy()
    )
    iy, ix = np.floor(y.numpy() + 0.5).astype(int), np.floor(x.numpy() + 0.5).astype(int)
    rel = np.abs(img[:, iy, ix] - ref[:, iy, ix]) / ref[:, iy, ix]
    assert rel.max() < bound, rel.max()
    # plain nearest-phase binning is much worse: the interpolation between phases does its job
    coarse = (
        PhaseRenderer(psfs, 64, n_phase=n_phase, interpolation="nearest")
        .render(1, torch.zeros(k, dtype=torch.long), y, x, flux)[0]
        .double()
        .numpy()
    )
    assert (np.abs(coarse[:, iy, ix] - ref[:, iy, ix]) / ref[:, iy, ix]).max() > 2 * rel.max()


def test_star_centroid_matches_position(renderer):
    y, x = torch.tensor([30.37]), torch.tensor([33.81])
    img = renderer.render(1, torch.zeros(1, dtype=torch.long), y, x, torch.ones(1, 3))[
        0, 2
    ].double()
    g = torch.arange(64, dtype=torch.float64)
    cy = float((img.sum(1) * g).sum() / img.sum())
    cx = float((img.sum(0) * g).sum() / img.sum())
    assert cy == pytest.approx(30.37, abs=1 / 6 + 0.01) and cx == pytest.approx(
        33.81, abs=1 / 6 + 0.01
    )


def test_deterministic_and_chunk_independent(psfs):
    sidx, y, x, flux = _stars(300, 5, 4)
    a = PhaseRenderer(psfs, 64, chunk_size=2).render(5, sidx, y, x, flux)
    b = PhaseRenderer(psfs, 64, chunk_size=64).render(5, sidx, y, x, flux)
    assert torch.allclose(a, b, atol=1e-5)
    # a sample without stars is exactly zero (up to FFT round-off)
    empty = PhaseRenderer(psfs, 64).render(6, sidx, y, x, flux)[5]
    assert float(empty.abs().max()) < 1e-5
