"""IMF normalisation, mass budgets and inverse-CDF sampling statistics (seeded, fast)."""

import math

import numpy as np
import pytest
import torch

from simulators.errors import SimulatorError
from simulators.imf import Chabrier2003, Kroupa2001, get_imf

IMFS = ["kroupa", "chabrier"]


@pytest.mark.parametrize("name", IMFS)
def test_pdf_normalised_and_zero_outside(name):
    imf = get_imf(name)
    m = torch.logspace(math.log10(imf.m_min), math.log10(imf.m_max), 400001, dtype=torch.float64)
    integral = torch.trapezoid(imf.pdf(m), m)
    assert abs(float(integral) - 1.0) < 1e-4
    assert float(imf.pdf(torch.tensor([0.05, 150.0])).abs().sum()) == 0.0


def test_kroupa_analytic_values():
    imf = Kroupa2001()
    # continuity at the 0.5 Msun break and the slope ratio of the two segments
    eps = 1e-9
    lo, hi = (
        imf.pdf(torch.tensor([0.5 - eps], dtype=torch.float64)),
        imf.pdf(torch.tensor([0.5 + eps], dtype=torch.float64)),
    )
    assert float(hi / lo) == pytest.approx(1.0, rel=1e-6)
    r = imf.pdf(torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert float(r[0] / r[1]) == pytest.approx(2**2.3, rel=1e-9)
    # mean mass (notes: 0.58 Msun per star); closed form for the two power laws
    # continuity at 0.5 gives k1 = 2 k2 for dN/dm = k1 m^-1.3 (m < 0.5), k2 m^-2.3 (m > 0.5)
    mass = 2 * (0.5**0.7 - 0.08**0.7) / 0.7 + (0.5**-0.3 - 120**-0.3) / 0.3
    n = 2 * (0.08**-0.3 - 0.5**-0.3) / 0.3 + (0.5**-1.3 - 120**-1.3) / 1.3
    assert imf.mean_mass() == pytest.approx(mass / n, rel=1e-9)
    assert imf.mean_mass() == pytest.approx(0.58, abs=0.005)


@pytest.mark.parametrize("name", IMFS)
def test_budgets_consistent(name):
    imf = get_imf(name)
    total_n = imf.number_per_mass(imf.m_min, imf.m_max)
    assert float(total_n) == pytest.approx(1 / imf.mean_mass(), rel=1e-6)
    assert float(imf.mass_fraction(imf.m_min, imf.m_max)) == pytest.approx(1.0, rel=1e-6)
    # additivity and broadcasting
    lo = torch.tensor([[0.08], [1.0]])
    hi = torch.tensor([[1.0, 8.0]])
    parts = imf.mass_fraction(lo, hi)
    assert parts.shape == (2, 2)
    assert float(imf.mass_fraction(0.08, 1.0) + imf.mass_fraction(1.0, 120.0)) == pytest.approx(
        1.0, rel=1e-6
    )
    # an empty interval carries nothing
    assert float(imf.number_per_mass(5.0, 2.0)) == 0.0


@pytest.mark.parametrize("name", IMFS)
def test_sampling_matches_truncated_distribution(name):
    imf = get_imf(name)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(3, 200_000, generator=g)
    lo = torch.tensor([[0.08], [0.3], [2.0]])
    hi = torch.tensor([[120.0], [1.5], [120.0]])
    m = imf.sample(u, lo, hi)
    assert m.shape == u.shape and m.dtype == torch.float32
    assert bool((m >= lo).all() and (m <= hi).all())
    # mean of each truncated IMF: (cum mass)/(cum number) over the interval
    for k in range(3):
        expect = float(
            imf.mass_fraction(lo[k], hi[k])
            * imf.mean_mass()
            / (imf.number_per_mass(lo[k], hi[k]) * imf.mean_mass())
        )
        sem = float(m[k].std()) / math.sqrt(m.shape[1])
        assert abs(float(m[k].double().mean()) - expect) < 5 * sem
    # KS distance to the analytic CDF of the full IMF
    x = torch.sort(m[0].double()).values
    cdf = imf.cdf(x).numpy()
    emp = np.arange(1, len(x) + 1) / len(x)
    assert np.abs(cdf - emp).max() < 1.63 / math.sqrt(len(x))  # KS 99% critical value


def test_sampling_is_deterministic_and_dtype_preserving():
    imf = Kroupa2001()
    u = torch.rand(2, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = imf.sample(u, torch.full((2, 1), 0.08), torch.full((2, 1), 120.0))
    b = imf.sample(u, torch.full((2, 1), 0.08), torch.full((2, 1), 120.0))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    # u = 0 and u = 1 map to the limits
    e = imf.sample(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5]]), torch.tensor([[10.0]]))
    assert torch.allclose(e, torch.tensor([[0.5, 10.0]]), rtol=1e-5)


def test_chabrier_lognormal_shape():
    imf = Chabrier2003()
    m = torch.tensor([0.2, 0.5], dtype=torch.float64)
    # dN/dlog m ratio of the lognormal (m_c = 0.079, sigma = 0.69)
    dndlog = imf.pdf(m) * m
    expect = math.exp(
        -((math.log10(0.2) - math.log10(0.079)) ** 2 - (math.log10(0.5) - math.log10(0.079)) ** 2)
        / (2 * 0.69**2)
    )
    assert float(dndlog[0] / dndlog[1]) == pytest.approx(expect, rel=1e-6)


def test_unknown_imf_error_names_choices():
    with pytest.raises(SimulatorError, match="kroupa"):
        get_imf("salpeter1955")
