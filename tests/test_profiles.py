"""Truncated EFF profile: r_h is the projected half-light radius; sampling and density agree."""

import math

import pytest
import torch

from simulators.profiles import (
    eff_core_radius,
    eff_enclosed_fraction,
    eff_sample_radius,
    eff_surface_density,
)


@pytest.mark.parametrize("gamma", [2.2, 2.6, 3.0, 4.0])
def test_half_light_radius_is_r_h(gamma):
    r_h = torch.tensor([3.0], dtype=torch.float64)
    g = torch.tensor([gamma], dtype=torch.float64)
    a = eff_core_radius(r_h, g, 10.0)
    assert float(eff_enclosed_fraction(r_h, a, g, 10 * r_h)) == pytest.approx(0.5, abs=1e-8)
    # Monte-Carlo: the median sampled radius is r_h (1e5 draws: ~0.4 % standard error)
    v = torch.rand(100_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rad = eff_sample_radius(v, a, g, 10 * r_h)
    assert float(rad.median()) == pytest.approx(3.0, rel=0.015)
    assert float(rad.max()) <= 30.0 + 1e-9


def test_surface_density_integrates_to_one_and_matches_enclosed_fraction():
    a, g, rt = (
        torch.tensor(1.3, dtype=torch.float64),
        torch.tensor(2.7, dtype=torch.float64),
        torch.tensor(25.0, dtype=torch.float64),
    )
    r = torch.linspace(0, 30, 300_001, dtype=torch.float64)
    integrand = eff_surface_density(r**2, a, g, rt) * 2 * math.pi * r
    cum = torch.cumulative_trapezoid(integrand, r)
    assert float(cum[-1]) == pytest.approx(1.0, abs=1e-4)
    i = 50_000  # r = 5
    assert float(cum[i - 1]) == pytest.approx(
        float(eff_enclosed_fraction(r[i], a, g, rt)), abs=1e-4
    )


def test_untruncated_limit_matches_closed_form():
    # for a huge truncation, r_h -> a sqrt(2^(2/(gamma-2)) - 1)
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)
    a = eff_core_radius(torch.ones(2, dtype=torch.float64), g, 1e6)
    expect = 1 / torch.sqrt(2 ** (2 / (g - 2)) - 1)
    assert torch.allclose(a, expect, rtol=1e-3)
