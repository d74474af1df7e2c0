"""The exact-likelihood reference (pyro NUTS) and NPE on a linear-Gaussian photometry model.

With magnitudes linear in (log age, A_V, log M) and Gaussian noise, the exact posterior far from
the prior bounds is Gaussian with covariance σ² (JᵀJ)⁻¹, and r_h (absent from the photometry)
keeps its uniform prior: both samplers must reproduce that.
"""

import numpy as np
import pytest
import torch

from sbicluster.baselines.photometry import (
    SmoothPhotometryModel,
    aperture_magnitudes,
    nuts_reference,
    train_npe,
)
from simulators.priors import DEFAULT_PRIOR

# rows: bands; columns: d mag / d(log age), d mag / d A_V, d mag / d(log M)
J = torch.tensor([[1.2, 1.6, -2.5], [0.6, 1.3, -2.5], [0.2, 0.6, -2.5]])
SIGMA = 0.05


def _linear(log_age, av, log_mass):
    return torch.stack([log_age, av, log_mass], -1) @ J.T


def _analytic(x):
    """Mean and σ of (log age, A_V, log M) of the exact posterior (bounds far away)."""
    jj = J.double()
    cov = SIGMA**2 * torch.linalg.inv(jj.T @ jj)
    mean = torch.linalg.solve(jj.T @ jj, jj.T @ x.double())
    return mean.numpy(), cov.diag().sqrt().numpy()


TRUTH = torch.tensor([8.0, 4.2, 0.3, 1.5])  # log age, log M, log r_h, A_V: inside the box


def test_nuts_matches_the_analytic_posterior():
    model = SmoothPhotometryModel(_linear, DEFAULT_PRIOR, sigma=SIGMA)
    x = model.simulate(TRUTH[None], torch.Generator().manual_seed(0))[0]
    chains = nuts_reference(
        model, x, num_samples=600, warmup=300, num_chains=2, seed=1, return_chains=True
    )
    assert chains.shape == (2, 300, 4)
    draws = chains.reshape(-1, 4)
    mean, sd = _analytic(x)
    got = draws[:, [0, 3, 1]]  # (log age, A_V, log M)
    # Monte-Carlo error of the mean with ~600 correlated draws is ≲ 0.1 σ
    np.testing.assert_array_less(np.abs(got.mean(0) - mean) / sd, 0.2)
    np.testing.assert_allclose(got.std(0) / sd, 1.0, atol=0.12)
    # r_h is not in the photometry: its posterior is the uniform prior (σ = range / √12)
    rh = draws[:, 2]
    assert abs(rh.std() - (1.0 - np.log10(0.5)) / np.sqrt(12)) < 0.04
    assert rh.min() >= np.log10(0.5) and rh.max() <= 1.0


def test_grid_reference_matches_the_analytic_posterior():
    from benchmarks.pyro_reference import GridReference

    model = SmoothPhotometryModel(_linear, DEFAULT_PRIOR, sigma=SIGMA)
    x = model.simulate(TRUTH[None], torch.Generator().manual_seed(0))[0]
    draws = GridReference(model).sample(x, 20000, torch.Generator().manual_seed(1))
    mean, sd = _analytic(x)
    got = draws[:, [0, 3, 1]]  # (log age, A_V, log M); iid draws: MC error of the mean 0.007 σ
    np.testing.assert_array_less(np.abs(got.mean(0) - mean) / sd, 0.03)
    np.testing.assert_allclose(got.std(0) / sd, 1.0, atol=0.02)
    rh = draws[:, 2]
    assert abs(rh.std() - (1.0 - np.log10(0.5)) / np.sqrt(12)) < 0.01


def test_smooth_photometry_likelihood_depends_smoothly_on_age():
    """NUTS needs d log L / d log age ≠ 0 from the real (tabulated) integrated magnitudes."""
    from simulators.population import StellarPopulation

    pop = StellarPopulation(("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W"))
    model = SmoothPhotometryModel(
        pop.integrated_magnitudes, DEFAULT_PRIOR, sigma=SIGMA, distance_modulus=28.3
    )
    truth = torch.tensor([[7.5, 4.5, 0.3, 0.8], [9.3, 5.0, 0.3, 0.4]])
    x = model.mean(truth)
    for dage in (0.013, -0.027):  # off the 0.01-dex grid nodes
        theta = (truth + torch.tensor([dage, 0.0, 0.0, 0.0])).requires_grad_(True)
        (g,) = torch.autograd.grad(model.log_likelihood(theta, x).sum(), theta)
        # the gradient pulls the age back towards the truth; r_h does not enter
        assert bool((torch.sign(g[:, 0]) == -np.sign(dage)).all()), g
        assert bool((g[:, 0].abs() > 10).all()) and bool((g[:, 2] == 0).all())


def test_aperture_magnitudes_of_a_flat_source():
    img = torch.zeros(2, 3, 21, 21)
    img[:, :, 10, 10] = torch.tensor([100.0, 10.0, 1.0])  # point source at the centre
    img = img + 0.5  # flat sky
    m = aperture_magnitudes(img, 3.0, annulus=(6.0, 9.0), softening=1e-3)
    # bright limit of the luptitude: −2.5 log10(f); 10× flux ratios give 2.5 mag steps
    np.testing.assert_allclose((m[:, 1:] - m[:, :-1]).numpy(), 2.5, atol=1e-3)
    np.testing.assert_allclose(m[:, 0].numpy(), -2.5 * np.log10(100.0), atol=1e-3)


@pytest.mark.slow
def test_npe_agrees_with_nuts_on_the_tractable_model():
    model = SmoothPhotometryModel(_linear, DEFAULT_PRIOR, sigma=SIGMA)
    gen = torch.Generator().manual_seed(0)
    theta = DEFAULT_PRIOR.sample(10000, gen)
    x = model.simulate(theta, gen)
    posterior = train_npe(theta, x, DEFAULT_PRIOR, max_num_epochs=100, seed=0)
    x_obs = model.simulate(TRUTH[None], torch.Generator().manual_seed(5))
    with torch.random.fork_rng(devices=[]):  # sbi samples from torch's global generator
        torch.manual_seed(3)
        npe = posterior.sample((2000,), x=x_obs, show_progress_bars=False).numpy()
    ref = nuts_reference(model, x_obs[0], num_samples=1000, warmup=300, num_chains=2, seed=2)
    sd = ref.std(0)
    # a MAF on 10⁴ simulations of a strongly degenerate age–A_V–mass posterior. Measured against
    # NUTS: |Δ mean| ≤ 0.09 σ; σ ratio 0.96 (age), 0.88 (mass), 0.81 (r_h), 0.94 (A_V). r_h,
    # which integrated light barely constrains (NUTS σ ≈ the prior's 0.375 dex), is the loosest;
    # a posterior at prior width would give a mass ratio of ≈ 15.
    assert np.all(np.abs(npe.mean(0) - ref.mean(0)) / sd < 0.3)
    assert np.all(np.abs(npe.std(0) / sd - 1) < [0.2, 0.2, 0.25, 0.2])  # (age, M, r_h, A_V)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_pyro_reference_benchmark_runs(tmp_path, monkeypatch, workers):
    import benchmarks.records
    from benchmarks import pyro_reference

    monkeypatch.setattr(benchmarks.records, "RESULTS_DIR", tmp_path)
    res = pyro_reference.main(
        [
            "--objects",
            "2",
            "--train",
            "600",
            "--epochs",
            "3",
            "--chains",
            "2",
            "--warmup",
            "30",
            "--samples",
            "40",
            "--workers",
            str(workers),
            "--sweep",
            "300",
        ]
    )
    assert len(res["per_object"]) == 2 and res["nuts"]["jit"]
    row = res["per_object"][0]
    for k in ("npe_vs_grid", "nuts_vs_grid", "npe_vs_nuts"):
        assert 0.0 <= row[k]["c2st"] <= 1.0
    assert set(row["rhat"]) == {"log_age", "log_mass", "av"}
    assert [c["simulations"] for c in res["convergence"]] == [300, res["train_simulations"]]
    assert all(0.0 <= c["c2st_median"] <= c["c2st_max"] <= 1.0 for c in res["convergence"])
    md = (tmp_path / "pyro_reference.md").read_text()
    assert "What is compared" in md and "NUTS" in md and "by number of training" in md


@pytest.mark.parametrize("sweep", ["2000,50", "5000,20000"])
def test_pyro_reference_refuses_tiny_or_too_large_sweep_sizes(sweep):
    from benchmarks import pyro_reference

    with pytest.raises(SystemExit):  # before any simulation: --train is 20,000
        pyro_reference.main(["--sweep", sweep])
