"""Local recalibration by a temperature on the flow's base distribution.

Checks: a fresh temperature changes nothing; a fitted one is one normalised density that
sampling and ``log_prob`` agree on; the fit recovers a known x-dependent temperature and makes a
posterior whose conditional miscalibration is known analytically calibrated in every bin of x;
the recalibrated model saves and loads; and the command's bad inputs.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sbicluster.artifact import load_model, save_model
from sbicluster.recalibration import (
    RecalibrationConfig,
    base_coordinates,
    fit_temperature,
    recalibrate,
    recalibration_seed,
    temperature_nll,
    with_base_temperature,
)
from sbicluster.temperature import LOG_TEMPERATURE_BOUND, BaseTemperature
from simulators.toy import LinearGaussianToy
from tests.conftest import assert_one_line_error, run_main, toy_features


def _set_constant_temperature(model, tau: float) -> None:
    """Make the model's temperature layer give τ for every cutout."""
    last = model.base_temperature.hyper[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(LOG_TEMPERATURE_BOUND * math.atanh(math.log(tau) / LOG_TEMPERATURE_BOUND))


@pytest.mark.parametrize("location", [False, True])
def test_a_fresh_temperature_leaves_the_posterior_unchanged(toy_model, location):
    """τ = 1, and μ = 0 for a layer with a location: the trained flow's density and draws."""
    theta, features = toy_features(toy_model, 16, seed=1)
    tempered = with_base_temperature(toy_model, location=location)
    assert tempered.base_temperature.location is location
    assert toy_model.base_temperature is None and tempered.base_temperature is not None
    with torch.no_grad():
        np.testing.assert_allclose(
            tempered.flow_log_prob(theta, features),
            toy_model.flow_log_prob(theta, features),
            rtol=0,
            atol=1e-5,
        )
        noise = torch.randn((50, 16, 4), generator=torch.Generator().manual_seed(2))
        np.testing.assert_allclose(
            tempered.sample_from_features(features, 50, noise=noise),
            toy_model.sample_from_features(features, 50, noise=noise),
            rtol=0,
            atol=1e-5,
        )


def test_the_tempered_posterior_is_one_density_that_sampling_and_log_prob_agree_on(toy_model):
    """With τ = 1.6: the draws' base coordinates have standard deviation τ; log q_τ is
    log N(u; 0, τ² I) + the untempered flow's Jacobian term; and E over q_τ's own draws of
    q_1 / q_τ is ∫ q_1 = 1 (it would be τ⁴ ≈ 6.6 if log_prob lacked the temperature's Jacobian)."""
    tau = 1.6
    theta, features = toy_features(toy_model, 6, seed=3)
    tempered = with_base_temperature(toy_model)
    _set_constant_temperature(tempered, tau)
    with torch.no_grad():
        draws = tempered.sample_from_features(features, 20000, torch.Generator().manual_seed(4))
        low, high = toy_model.prior.low(), toy_model.prior.high()
        assert bool(((draws > low) & (draws < high)).all())  # on the flow's support, the box
        u = base_coordinates(
            toy_model, draws.reshape(-1, 4), features.repeat(len(draws), 1)
        ).reshape(draws.shape)
        np.testing.assert_allclose(u.std(dim=0), tau, rtol=0.03)
        np.testing.assert_allclose(u.mean(dim=0), 0.0, atol=0.05)
        # the closed form of the density
        u_truth = base_coordinates(toy_model, theta, features)
        log_q1 = toy_model.flow_log_prob(theta, features)
        log_n = torch.distributions.Normal(0.0, 1.0).log_prob
        expected = log_q1 + (log_n(u_truth / tau) - math.log(tau) - log_n(u_truth)).sum(-1)
        np.testing.assert_allclose(tempered.flow_log_prob(theta, features), expected, atol=1e-4)
        # normalised, as sampled: E_{q_τ}[q_1 / q_τ] = 1
        ratio = torch.exp(
            toy_model.flow_log_prob(draws, features) - tempered.flow_log_prob(draws, features)
        )
        np.testing.assert_allclose(ratio.mean(0), 1.0, atol=0.05)
        # sbi's posterior object uses the same tempered density
        images = (
            LinearGaussianToy()
            .simulate(2, torch.Generator().manual_seed(5), label=torch.ones(2, dtype=torch.long))
            .images
        )
        posterior = tempered.posterior()
        sbi_lp = posterior.log_prob(theta[:1], x=images[:1])
        own_lp = tempered.log_prob(theta[:1], images[:1])
        np.testing.assert_allclose(sbi_lp, own_lp, atol=1e-4)


def _conditionally_miscalibrated(n: int, seed: int):
    """A Gaussian posterior of the right centre whose width is wrong by a known factor κ(x):
    the model says θ | x ~ N(m(x), s² I) (D = 4), the truth is N(m(x), κ(x)² s² I) with
    log κ(x) = 0.5 x₀, x uniform on [−1, 1]². In base coordinates u = (θ − m) / s ~ N(0, κ² I)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    kappa = np.exp(0.5 * x[:, 0])
    u = kappa[:, None] * rng.standard_normal((n, 4))
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(u, dtype=torch.float32), kappa


def _hpd_coverage(u: np.ndarray, tau: np.ndarray, level: float) -> float:
    """Share of truths inside the level-HPD region of N(0, τ² I) (a ball in u): the exact
    coverage of the (tempered) Gaussian posterior."""
    radius2 = stats.chi2.ppf(level, df=u.shape[1])
    return float(np.mean((u**2).sum(1) / tau**2 <= radius2))


def test_the_fit_recovers_a_known_temperature_and_calibrates_every_bin():
    x, u, kappa = _conditionally_miscalibrated(12000, seed=0)
    layer = BaseTemperature(4, 2, (16,))
    config = RecalibrationConfig(n_simulations=12000, seed=1)
    record = fit_temperature(layer, x, u, config)
    assert record["validation_nll_after"] < record["validation_nll_before"] - 0.05
    grid = torch.stack([torch.linspace(-0.9, 0.9, 10), torch.zeros(10)], 1)
    with torch.no_grad():
        fitted = layer.log_temperature(grid)[:, 0].numpy()
    np.testing.assert_allclose(fitted, 0.5 * grid[:, 0].numpy(), atol=0.06)
    # fresh data: coverage by thirds of x₀ before (known analytically) and after the fit
    x_test, u_test, kappa_test = _conditionally_miscalibrated(30000, seed=2)
    with torch.no_grad():
        tau = layer.log_temperature(x_test)[:, 0].exp().numpy()
    thirds = np.digitize(x_test[:, 0].numpy(), [-1 / 3, 1 / 3])
    for level in (0.5, 0.9):
        for k in range(3):
            sel = thirds == k
            before = _hpd_coverage(u_test.numpy()[sel], np.ones(sel.sum()), level)
            after = _hpd_coverage(u_test.numpy()[sel], tau[sel], level)
            exact_before = float(
                np.mean(stats.chi2.cdf(stats.chi2.ppf(level, 4) / kappa_test[sel] ** 2, 4))
            )
            assert abs(before - exact_before) < 0.02
            assert abs(after - level) < 0.02, (level, k, before, after)
        # the untempered posterior is too narrow for large x₀, too wide for small x₀
        assert _hpd_coverage(u_test.numpy()[thirds == 2], np.ones((thirds == 2).sum()), 0.5) < 0.4


def test_temperature_nll_is_the_gaussian_likelihood():
    u = torch.tensor([[0.3, -1.2], [2.0, 0.1]])
    log_tau = torch.tensor([[0.2], [-0.4]])
    normal = torch.distributions.Normal(0.0, log_tau.exp())
    expected = -normal.log_prob(u).sum(-1) - math.log(2 * math.pi)  # less D/2 log 2π, D = 2
    np.testing.assert_allclose(temperature_nll(log_tau, u), expected, atol=1e-6)


def test_recalibrated_model_saves_and_loads(toy_model, tmp_path):
    new = recalibrate(toy_model, LinearGaussianToy(), RecalibrationConfig(n_simulations=2000))
    record = new.card["recalibration"]
    assert record["n_fit"] + record["n_validation"] == 2000
    assert record["validation_nll_after"] <= record["validation_nll_before"]
    assert new.card["name"] == toy_model.card["name"]
    save_model(new, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.base_temperature is not None
    theta, features = toy_features(toy_model, 8, seed=6)
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded.flow_log_prob(theta, features), new.flow_log_prob(theta, features)
        )
    with pytest.raises(Exception, match="already recalibrated"):
        with_base_temperature(loaded)


def test_recalibration_seed_differs_from_the_training_and_diagnose_streams():
    from sbicluster.diagnostics.run import held_out_seed

    assert recalibration_seed(0) not in (0, held_out_seed(0))
    assert recalibration_seed(0) != recalibration_seed(1)
    assert 0 <= recalibration_seed(2**40) < 2**63


def test_command_writes_a_recalibrated_model(toy_model_dir, tmp_path, capsys):
    out = tmp_path / "recal"
    run = run_main(capsys, "recalibrate", "--model", toy_model_dir, "--out", out, "--n", 1500)
    assert run.returncode == 0, run.stderr
    assert "validation NLL" in run.stdout and "median τ" in run.stdout
    assert load_model(out).card["recalibration"]["config"]["n_simulations"] == 1500
    # a second run refuses to replace it without --overwrite and leaves it intact
    before = (out / "weights.safetensors").read_bytes()
    again = run_main(capsys, "recalibrate", "--model", toy_model_dir, "--out", out, "--n", 1500)
    assert_one_line_error(again, "exists", "--overwrite")
    assert (out / "weights.safetensors").read_bytes() == before
    # a recalibrated model is not recalibrated twice
    twice = run_main(capsys, "recalibrate", "--model", out, "--out", tmp_path / "x", "--n", 1500)
    assert_one_line_error(twice, "already recalibrated")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--n", "10"], ["--n 10", "at least 1000"]),
        (["--model", "no/such/model"], ["no/such/model", "does not exist"]),
    ],
)
def test_command_bad_input_is_one_line_and_writes_nothing(
    toy_model_dir, tmp_path, capsys, args, fragments
):
    out = tmp_path / "recal"
    full = ["recalibrate", "--out", out, *args]
    if "--model" not in args:
        full += ["--model", toy_model_dir]
    run = run_main(capsys, *full)
    assert_one_line_error(run, *fragments)
    assert not out.exists()


def test_command_refuses_the_model_folder_as_output(toy_model_dir, capsys):
    before = (toy_model_dir / "weights.safetensors").read_bytes()
    run = run_main(
        capsys, "recalibrate", "--model", toy_model_dir, "--out", toy_model_dir, "--overwrite"
    )
    assert_one_line_error(run, "is the --model folder")
    assert (toy_model_dir / "weights.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "location, sentence",
    [
        (False, "The posterior is recalibrated: a temperature on"),
        (True, "The posterior is recalibrated: a temperature and a location (a shift of each base"),
    ],
)
def test_diagnose_report_says_the_model_is_recalibrated(toy_model, tmp_path, location, sentence):
    from sbicluster.diagnostics import run_diagnostics

    config = RecalibrationConfig(n_simulations=1000, location=location)
    new = recalibrate(toy_model, LinearGaussianToy(), config)
    metrics = run_diagnostics(
        new,
        LinearGaussianToy(),
        n=300,
        num_samples=50,
        seed=3,
        views=1,
        out_dir=tmp_path,
        progress=False,
        lc2st_probes=0,
    )
    assert metrics["model"]["recalibration"]["n_simulations"] == 1000
    assert metrics["model"]["recalibration"]["location"] is location
    assert sentence in (tmp_path / "report.md").read_text()


def test_recalibration_is_reproducible(toy_model):
    """Same model, configuration and seed: bit-identical temperature weights."""
    config = RecalibrationConfig(n_simulations=1000, seed=4)
    first, second = (recalibrate(toy_model, LinearGaussianToy(), config) for _ in range(2))
    for key, value in first.base_temperature.state_dict().items():
        assert torch.equal(value, second.base_temperature.state_dict()[key]), key


def test_benchmark_summary_finds_a_known_width_error_and_its_correction():
    """Base coordinates 1.2× too wide in one visibility bin: mean square 1.44 there, 50 % ball
    coverage P(χ²₄ ≤ q₅₀ / 1.44) before and 0.5 after the matching temperature."""
    from benchmarks.recalibration import summarise

    rng = np.random.default_rng(7)
    visibility = np.repeat([10.0, 200.0], 20000)
    kappa = np.where(visibility < 100, 1.2, 1.0)
    u = kappa[:, None] * rng.standard_normal((len(kappa), 4))
    rows = summarise(u, np.log(kappa), visibility)
    faint, bright = rows
    assert faint["n"] == bright["n"] == 20000
    assert abs(faint["mean_square"] - 1.44) < 0.03 and abs(bright["mean_square"] - 1.0) < 0.03
    expected = stats.chi2.cdf(stats.chi2.ppf(0.5, 4) / 1.44, 4)
    assert abs(faint["ball_coverage_before"]["0.5"] - expected) < 0.01
    for row in rows:
        assert abs(row["ball_coverage_after"]["0.5"] - 0.5) < 0.01
        assert abs(row["ball_coverage_after"]["0.9"] - 0.9) < 0.01
    assert abs(faint["tau_median"] - 1.2) < 1e-6


def test_benchmark_multiplier_equals_a_model_with_that_temperature(toy_model):
    """Benchmark helper: coverage with τ × 1.5 on a τ = 1 model is that of a model whose layer
    gives τ = 1.5, draw for draw; and the layer is left as it was."""
    from benchmarks.recalibration import hpd_coverage_by_multiplier

    theta, features = toy_features(toy_model, 300, seed=8)
    visibility = np.where(np.arange(300) < 150, 10.0, 200.0)
    plain = with_base_temperature(toy_model)
    hot = with_base_temperature(toy_model)
    _set_constant_temperature(hot, 1.5)
    multiplied = hpd_coverage_by_multiplier(
        plain, theta, features, visibility, (1.0, 1.5), num_samples=100, seed=1
    )
    direct = hpd_coverage_by_multiplier(
        hot, theta, features, visibility, (1.0,), num_samples=100, seed=1
    )
    assert multiplied[1]["bins"] == direct[0]["bins"]
    assert multiplied[0]["bins"] != multiplied[1]["bins"]
    assert "log_temperature" not in vars(plain.base_temperature)
