"""A location on the recalibrated flow's base distribution: z = (u − μ(x)) / τ(x).

Checks (that a fresh location changes nothing is tested in ``test_recalibration.py``): a
shifted, tempered posterior is one normalised density that sampling and ``log_prob`` agree on;
the fit recovers a known x-dependent bias and width of a Gaussian posterior and makes it
calibrated, joint and per marginal, in every third of x; the model saves and loads, and its fit
is reproducible; the command's ``--location`` (diagnose reports' sentence on it: in
``test_recalibration.py``).
"""

import math

import numpy as np
import torch
from scipy import stats

from sbicluster.artifact import load_model, save_model
from sbicluster.recalibration import (
    RecalibrationConfig,
    base_coordinates,
    fit_temperature,
    recalibrate,
    temperature_nll,
    with_base_temperature,
)
from sbicluster.temperature import LOCATION_BOUND, LOG_TEMPERATURE_BOUND, BaseTemperature
from simulators.toy import LinearGaussianToy
from tests.conftest import run_main, toy_features


def _set_constant_layer(model, tau: float, shift) -> None:
    """Make the model's layer give τ and μ = ``shift`` (D values) for every cutout."""
    layer = model.base_temperature
    with torch.no_grad():
        layer.hyper[-1].weight.zero_()
        layer.hyper[-1].bias.fill_(
            LOG_TEMPERATURE_BOUND * math.atanh(math.log(tau) / LOG_TEMPERATURE_BOUND)
        )
        layer.location_net[-1].weight.zero_()
        layer.location_net[-1].bias.copy_(
            LOCATION_BOUND * torch.atanh(torch.as_tensor(shift) / LOCATION_BOUND)
        )


def test_a_shifted_posterior_is_one_density_that_sampling_and_log_prob_agree_on(toy_model):
    """μ = (0.6, −0.4, 0.2, 0) and τ = 1.3: the draws' base coordinates have mean μ and standard
    deviation τ; log q is log N(u; μ, τ² I) + the untouched flow's Jacobian term; and E over q's
    own draws of q_1 / q is ∫ q_1 = 1 (a log_prob that ignored the shift would not give 1)."""
    tau, shift = 1.3, torch.tensor([0.6, -0.4, 0.2, 0.0])
    theta, features = toy_features(toy_model, 6, seed=3)
    shifted = with_base_temperature(toy_model, location=True)
    _set_constant_layer(shifted, tau, shift)
    with torch.no_grad():
        draws = shifted.sample_from_features(features, 20000, torch.Generator().manual_seed(4))
        low, high = toy_model.prior.low(), toy_model.prior.high()
        assert bool(((draws > low) & (draws < high)).all())
        u = base_coordinates(
            toy_model, draws.reshape(-1, 4), features.repeat(len(draws), 1)
        ).reshape(draws.shape)
        np.testing.assert_allclose(u.mean(dim=0), shift.expand(6, 4), atol=0.05)
        np.testing.assert_allclose(u.std(dim=0), tau, rtol=0.03)
        u_truth = base_coordinates(toy_model, theta, features)
        log_q1 = toy_model.flow_log_prob(theta, features)
        log_n = torch.distributions.Normal(0.0, 1.0).log_prob
        expected = log_q1 + (log_n((u_truth - shift) / tau) - math.log(tau) - log_n(u_truth)).sum(
            -1
        )
        np.testing.assert_allclose(shifted.flow_log_prob(theta, features), expected, atol=1e-4)
        ratio = torch.exp(
            toy_model.flow_log_prob(draws, features) - shifted.flow_log_prob(draws, features)
        )
        np.testing.assert_allclose(ratio.mean(0), 1.0, atol=0.05)


def test_temperature_nll_with_a_shift_is_the_gaussian_likelihood():
    u = torch.tensor([[0.3, -1.2], [2.0, 0.1]])
    log_tau = torch.tensor([[0.2], [-0.4]])
    shift = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    normal = torch.distributions.Normal(shift, log_tau.exp())
    expected = -normal.log_prob(u).sum(-1) - math.log(2 * math.pi)  # less D/2 log 2π, D = 2
    np.testing.assert_allclose(temperature_nll(log_tau, u, shift), expected, atol=1e-6)


def _biased_and_miscalibrated(n: int, seed: int):
    """A Gaussian posterior wrong in centre and width by known functions of x: the model says
    θ | x ~ N(m(x), s² I) (D = 4), the truth is N(m(x) + s δ(x), κ(x)² s² I), x uniform on
    [−1, 1]², δ(x) = x₁ · (0.8, −0.5, 0.3, 0), log κ(x) = 0.4 x₀. In base coordinates
    u = (θ − m) / s ~ N(δ(x), κ(x)² I)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    delta = x[:, 1:2] * np.array([0.8, -0.5, 0.3, 0.0])
    kappa = np.exp(0.4 * x[:, 0])
    u = delta + kappa[:, None] * rng.standard_normal((n, 4))
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return as_tensor(x), as_tensor(u), delta, kappa


def _coverages(u: np.ndarray, shift: np.ndarray, tau: np.ndarray, level: float):
    """Exact joint and per-marginal coverage of N(μ, τ² I)'s level-HPD regions (a ball, and
    central intervals) for truths u."""
    z = (u - shift) / tau[:, None]
    joint = float(np.mean((z**2).sum(1) <= stats.chi2.ppf(level, df=u.shape[1])))
    marginal = np.mean(np.abs(z) <= stats.norm.ppf(0.5 + level / 2), axis=0)
    return joint, marginal


def test_the_fit_recovers_a_known_bias_and_width_and_calibrates_every_bin():
    x, u, _, _ = _biased_and_miscalibrated(16000, seed=0)
    layer = BaseTemperature(4, 2, (16,), location=True)
    record = fit_temperature(layer, x, u, RecalibrationConfig(n_simulations=16000, seed=1))
    assert record["validation_nll_after"] < record["validation_nll_before"] - 0.1
    grid = torch.stack([torch.linspace(-0.7, 0.7, 8), torch.linspace(0.7, -0.7, 8)], 1)
    with torch.no_grad():
        fitted_shift = layer.shift(grid).numpy()
        fitted_log_tau = layer.log_temperature(grid)[:, 0].numpy()
    expected_shift = grid[:, 1:2].numpy() * np.array([0.8, -0.5, 0.3, 0.0])
    np.testing.assert_allclose(fitted_shift, expected_shift, atol=0.08)
    np.testing.assert_allclose(fitted_log_tau, 0.4 * grid[:, 0].numpy(), atol=0.06)

    x_test, u_test, delta, kappa = _biased_and_miscalibrated(30000, seed=2)
    with torch.no_grad():
        shift = layer.shift(x_test).numpy()
        tau = layer.log_temperature(x_test)[:, 0].exp().numpy()
    u_np = u_test.numpy()
    n = len(u_np)
    # within the project's calibration tolerance, 0.03, in every third of each x coordinate (the
    # exact posterior itself deviates by up to ≈ 0.012 on these ≈ 10,000 clusters per third)
    for axis in (0, 1):
        thirds = np.digitize(x_test[:, axis].numpy(), [-1 / 3, 1 / 3])
        for k in range(3):
            sel = thirds == k
            for level in (0.5, 0.9):
                joint, marginal = _coverages(u_np[sel], shift[sel], tau[sel], level)
                assert abs(joint - level) < 0.03, (axis, k, level, joint)
                assert np.all(np.abs(marginal - level) < 0.03), (axis, k, level, marginal)
    # before: the untouched posterior misses the biased third of x₁ badly (known analytically)
    outer = x_test[:, 1].numpy() > 1 / 3
    before, _ = _coverages(u_np[outer], np.zeros((outer.sum(), 4)), np.ones(outer.sum()), 0.5)
    exact = np.mean(
        stats.ncx2.cdf(
            stats.chi2.ppf(0.5, 4) / kappa[outer] ** 2,
            4,
            (delta[outer] ** 2).sum(1) / kappa[outer] ** 2,
        )
    )
    assert abs(before - exact) < 0.02 and before < 0.5 - 0.03
    # after: the truths sit on the posterior's centre in every third (no bias left)
    residual_mean = (u_np - shift)[outer].mean(0)
    np.testing.assert_allclose(residual_mean, 0.0, atol=4 * 1.5 / math.sqrt(outer.sum()))
    assert n == 30000


def test_a_model_with_a_location_saves_loads_and_records_it(toy_model, tmp_path):
    config = RecalibrationConfig(n_simulations=2000, location=True)
    new = recalibrate(toy_model, LinearGaussianToy(), config)
    record = new.card["recalibration"]
    assert record["method"].startswith("temperature and location")
    assert record["config"]["location"] is True
    assert all(len(row["shift_mean"]) == 4 for row in record["temperature_by_visibility"])
    save_model(new, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.base_temperature.location
    theta, features = toy_features(toy_model, 8, seed=6)
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded.flow_log_prob(theta, features), new.flow_log_prob(theta, features)
        )
        np.testing.assert_array_equal(
            loaded.base_temperature.shift(features), new.base_temperature.shift(features)
        )


def test_command_location_flag_fits_a_location(toy_model_dir, tmp_path, capsys):
    out = tmp_path / "recal"
    run = run_main(
        capsys, "recalibrate", "--model", toy_model_dir, "--out", out, "--n", 1500, "--location"
    )
    assert run.returncode == 0, run.stderr
    model = load_model(out)
    assert model.base_temperature.location
    assert model.card["recalibration"]["config"]["location"] is True


def test_a_recalibration_with_a_location_is_reproducible(toy_model):
    """Same model, configuration and seed: bit-identical temperature and location weights."""
    config = RecalibrationConfig(n_simulations=1000, seed=4, location=True)
    first, second = (recalibrate(toy_model, LinearGaussianToy(), config) for _ in range(2))
    state = second.base_temperature.state_dict()
    assert any(key.startswith("location_net.") for key in state)
    for key, value in first.base_temperature.state_dict().items():
        assert torch.equal(value, state[key]), key
