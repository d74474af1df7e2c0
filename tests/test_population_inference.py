"""Population inference (sbicluster.population) on cases with known answers, and its command.

Per-cluster posteriors are exact: a Gaussian likelihood in each parameter times the uniform
training prior is a truncated Gaussian, so every integral the model approximates (the
importance-weighted likelihood, α(Λ), the hyper-posterior) has a quadrature reference.
"""

import json
import logging
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit

from sbicluster.population import (
    ImportanceLikelihood,
    NutsConfig,
    PopulationModel,
    SelectionFunction,
    SelectionNormaliser,
    fit_population,
)
from sbicluster.population.fit import log_posterior
from sbicluster.population.selection import (
    _exponents,
    fit_selection,
    model_fingerprint,
    shipped_selection,
)
from simulators.priors import DEFAULT_PRIOR
from tests.conftest import assert_one_line_error, run_main

PRIOR = DEFAULT_PRIOR
LOW, HIGH = PRIOR.low().double().numpy(), PRIOR.high().double().numpy()
TRUTH = {"beta": -2.0, "gamma": -0.8, "log_av_scale": 0.0}
SIGMA = np.array([0.3, 0.15, 0.1, 0.3])  # per-parameter likelihood widths (dex, dex, dex, mag)


def _exact_posteriors(theta, sigma, draws, rng):
    """Observations θ + N(0, σ) and S draws each of the truncated-Gaussian posterior."""
    obs = theta + rng.normal(size=theta.shape) * sigma
    a, b = (LOW - obs) / sigma, (HIGH - obs) / sigma
    size = (len(theta), draws, PRIOR.dim)
    samples = stats.truncnorm.rvs(
        a[:, None], b[:, None], loc=obs[:, None], scale=sigma, size=size, random_state=rng
    )
    return obs, samples


def _grid_log_lik(obs_j, sigma_j, lo, hi, log_density):
    """Σ_i log ∫ N(x; obs_ij, σ_j) p(x) dx on a fine grid (p given as log density on it)."""
    x = np.linspace(lo, hi, 4001)
    like = stats.norm.pdf(x[None, :], obs_j[:, None], sigma_j)
    return np.log(np.trapezoid(like * np.exp(log_density(x))[None, :], x, axis=1))


def _pl_log_density(k, lo, hi):
    """log of p(x) ∝ exp(k x) on [lo, hi]."""
    z = (math.exp(k * hi) - math.exp(k * lo)) / k if abs(k) > 1e-12 else hi - lo
    return lambda x: k * x - math.log(z)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hyper(values):
    return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}


def test_population_sampler_follows_its_density():
    """Draws of p(θ | Λ) pass a KS test against the CDF of the density, power law and Schechter."""
    rng = np.random.default_rng(1)
    for mf, hyper in (("powerlaw", TRUTH), ("schechter", {**TRUTH, "log_mc": 4.2})):
        pop = PopulationModel(PRIOR, mf)
        theta = pop.sample(4000, hyper, rng)
        for name in ("log_mass", "log_age", "av"):
            j = PRIOR.index(name)
            grid = np.linspace(LOW[j], HIGH[j], 20001)
            dens = np.exp(pop.log_marginal(name, torch.as_tensor(grid), _hyper(hyper)).numpy())
            cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
            cdf /= cdf[-1]
            p = stats.kstest(theta[:, j], lambda x, g=grid, c=cdf: np.interp(x, g, c)).pvalue
            assert p > 0.01, (mf, name, p)


def test_importance_likelihood_matches_the_exact_integral():
    """mean_s p(θ_s|Λ)/π(θ_s) over exact posterior draws equals ∫N p / ∫N π within MC error."""
    rng = np.random.default_rng(2)
    pop = PopulationModel(PRIOR)
    theta = pop.sample(20, TRUTH, rng)
    obs, draws = _exact_posteriors(theta, SIGMA, 20000, rng)
    lik = ImportanceLikelihood(draws, pop)
    for hyper in (TRUTH, {"beta": -1.3, "gamma": 0.2, "log_av_scale": -0.5}):
        got = lik.log_likelihood(_hyper(hyper)).numpy()
        fast = float(lik.total_log_likelihood(_hyper(hyper)))
        k = {
            "log_mass": (hyper["beta"] + 1) * math.log(10),
            "log_age": (hyper["gamma"] + 1) * math.log(10),
            "av": -(10 ** -hyper["log_av_scale"]),
        }
        exact = np.zeros(len(theta))
        for name, kk in k.items():
            j = PRIOR.index(name)
            num = _grid_log_lik(
                obs[:, j], SIGMA[j], LOW[j], HIGH[j], _pl_log_density(kk, LOW[j], HIGH[j])
            )
            den = _grid_log_lik(
                obs[:, j], SIGMA[j], LOW[j], HIGH[j], _pl_log_density(0.0, LOW[j], HIGH[j])
            )
            exact += num - den
        assert np.max(np.abs(got - exact)) < 0.05, np.abs(got - exact)
        assert abs(fast - got.sum()) < 1e-3 * len(theta)


def test_ess_is_all_draws_for_equal_weights_and_few_for_a_misplaced_posterior():
    """Equal weights give ESS = S; a posterior far in the tail of p(θ|Λ) gives ESS ≪ S."""
    pop = PopulationModel(PRIOR)
    rng = np.random.default_rng(3)
    draws = PRIOR.sample(500, torch.Generator().manual_seed(0)).double().numpy()[None]
    draws[..., PRIOR.index("av")] = 1.0
    draws[..., PRIOR.index("log_mass")] = 4.0
    draws[..., PRIOR.index("log_age")] = 8.0
    lik = ImportanceLikelihood(draws, pop)
    assert lik.ess(_hyper(TRUTH))[0] == pytest.approx(500, rel=1e-9)
    wide = PRIOR.sample(500, torch.Generator().manual_seed(1)).double().numpy()[None]
    ess = ImportanceLikelihood(wide, pop).ess(_hyper({**TRUTH, "beta": -3.0, "gamma": -2.0}))
    assert ess[0] < 50
    del rng


def test_alpha_matches_a_direct_integral():
    """α(Λ) on Sobol points equals the 1-D quadrature of a mass-only p_det within 0.5 %."""
    exps = _exponents(PRIOR.dim, 1)
    coef = np.zeros(len(exps))
    coef[0] = 1.0
    coef[exps.index(tuple(int(i == PRIOR.index("log_mass")) for i in range(4)))] = 4.0
    sel = SelectionFunction(PRIOR, coef, degree=1)
    j = PRIOR.index("log_mass")
    for mf, hyper in (("powerlaw", TRUTH), ("schechter", {**TRUTH, "log_mc": 4.0})):
        pop = PopulationModel(PRIOR, mf)
        alpha = math.exp(float(SelectionNormaliser(sel, pop).log_alpha(_hyper(hyper))))
        x = np.linspace(LOW[j], HIGH[j], 20001)
        p_m = np.exp(pop.log_marginal("log_mass", torch.as_tensor(x), _hyper(hyper)).numpy())
        z = 2 * (x - LOW[j]) / (HIGH[j] - LOW[j]) - 1
        exact = np.trapezoid(expit(1.0 + 4.0 * z) * p_m, x)
        assert np.trapezoid(p_m, x) == pytest.approx(1.0, abs=1e-6)
        assert alpha == pytest.approx(exact, rel=5e-3)


def _grid_posterior(obs_j, sigma_j, j, slope_grid):
    """Exact posterior of a power-law index on a grid (flat hyper-prior): mean and sd."""
    lo, hi = LOW[j], HIGH[j]
    den = _grid_log_lik(obs_j, sigma_j, lo, hi, _pl_log_density(0.0, lo, hi))
    logp = np.array(
        [
            np.sum(
                _grid_log_lik(
                    obs_j, sigma_j, lo, hi, _pl_log_density((b + 1) * math.log(10), lo, hi)
                )
                - den
            )
            for b in slope_grid
        ]
    )
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = np.sum(w * slope_grid)
    return mean, math.sqrt(np.sum(w * (slope_grid - mean) ** 2))


@pytest.mark.slow
def test_nuts_hyper_posterior_matches_a_brute_force_grid():
    """NUTS means and sds of β and γ agree with the exact grid posterior (200 clusters)."""
    rng = np.random.default_rng(4)
    pop = PopulationModel(PRIOR)
    theta = pop.sample(200, TRUTH, rng)
    obs, draws = _exact_posteriors(theta, SIGMA, 1000, rng)
    fit = fit_population(
        draws,
        pop,
        SelectionFunction.none(PRIOR),
        NutsConfig(num_samples=400, warmup=200, chains=1, seed=1),
    )
    for name, param, grid in (
        ("beta", "log_mass", np.linspace(-3.0, -1.0, 201)),
        ("gamma", "log_age", np.linspace(-1.6, 0.0, 201)),
    ):
        j = PRIOR.index(param)
        mean, sd = _grid_posterior(obs[:, j], SIGMA[j], j, grid)
        got = fit.samples[name].reshape(-1)
        # MC error of the NUTS mean (≈ sd/√100) plus the importance-sampling error of 1000 draws
        assert abs(got.mean() - mean) < 0.3 * sd, (name, got.mean(), mean, sd)
        assert got.std() == pytest.approx(sd, rel=0.25), (name, got.std(), sd)
    assert np.median(fit.ess) > 100


def _mass_selection():
    exps = _exponents(PRIOR.dim, 1)
    coef = np.zeros(len(exps))
    coef[0] = 1.0
    coef[exps.index(tuple(int(i == PRIOR.index("log_mass")) for i in range(4)))] = 4.0
    return SelectionFunction(PRIOR, coef, degree=1)


def test_ignoring_selection_biases_the_slope_and_including_it_removes_the_bias():
    """A mass-dependent p_det flattens the fitted β unless α(Λ) enters the likelihood."""
    rng = np.random.default_rng(5)
    pop = PopulationModel(PRIOR)
    sel = _mass_selection()
    theta = pop.sample(4000, TRUTH, rng)
    theta = theta[rng.random(len(theta)) < sel(theta)]
    _, draws = _exact_posteriors(theta, SIGMA, 300, rng)
    lik = ImportanceLikelihood(draws, pop)
    betas = np.linspace(-3.0, -0.5, 101)
    result = {}
    for label, fn in (("with", sel), ("without", SelectionFunction.none(PRIOR))):
        norm = SelectionNormaliser(fn, pop)
        with torch.no_grad():
            logp = np.array(
                [float(log_posterior(lik, norm, _hyper({**TRUTH, "beta": b}))) for b in betas]
            )
        w = np.exp(logp - logp.max())
        w /= w.sum()
        mean = np.sum(w * betas)
        result[label] = (mean, math.sqrt(np.sum(w * (betas - mean) ** 2)))
    (m_with, s_with), (m_without, _) = result["with"], result["without"]
    assert abs(m_with - TRUTH["beta"]) < 3 * s_with, result
    assert m_without - TRUTH["beta"] > 8 * s_with, result


def test_selection_fit_recovers_a_known_detection_probability():
    """The logistic fit to 6000 labelled draws is within 0.035 of the true p_det on average."""
    rng = np.random.default_rng(6)
    theta = PRIOR.sample(6000, torch.Generator().manual_seed(6)).double().numpy()
    z = 2 * (theta - LOW) / (HIGH - LOW) - 1
    p_true = expit(1.0 + 4.0 * z[:, 1] - 2.0 * z[:, 0] - z[:, 3])
    detected = rng.random(len(theta)) < p_true
    coef = fit_selection(theta, detected, PRIOR)
    fn = SelectionFunction(PRIOR, coef)
    test = PRIOR.sample(2000, torch.Generator().manual_seed(7)).double().numpy()
    zt = 2 * (test - LOW) / (HIGH - LOW) - 1
    truth = expit(1.0 + 4.0 * zt[:, 1] - 2.0 * zt[:, 0] - zt[:, 3])
    err = np.abs(fn(test) - truth)
    assert err.mean() < 0.035 and err.max() < 0.15, (err.mean(), err.max())
    # a saved and reloaded function gives the same p_det
    data = json.loads(json.dumps(fn.to_dict()))
    assert np.allclose(SelectionFunction.from_dict(data)(test), fn(test))


# -- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def infer_dir(toy_model_dir, toy_cutouts, tmp_path_factory):
    """An ``sbicluster infer`` folder of the 6 toy cutouts (300 draws each)."""
    from sbicluster.api import infer

    out = tmp_path_factory.mktemp("population") / "infer"
    infer(toy_cutouts[0], model=toy_model_dir, out=out, num_samples=300, progress=False)
    return out


_FAST = ("--samples", "60", "--warmup", "60", "--chains", "1")


def test_population_command_writes_its_report(infer_dir, tmp_path, capsys, caplog):
    """The command fits the toy catalogue, writes every output and reports low ESS."""
    out = tmp_path / "pop"
    with caplog.at_level(logging.WARNING):
        run = run_main(capsys, "population", infer_dir, "--out", out, "--selection", "none", *_FAST)
    assert run.returncode == 0, run.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {
        "population.nc",
        "corner.png",
        "ppc.png",
        "selection.json",
        "metrics.json",
        "report.md",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["catalogue"]["cutouts"] == 6
    assert metrics["catalogue"]["selected"] + metrics["catalogue"]["below_threshold"] == 6
    assert set(metrics["hyper"]) == {"beta", "gamma", "log_av_scale"}
    import arviz as az

    idata = az.from_netcdf(out / "population.nc")
    assert idata.posterior["beta"].shape == (1, 60)
    assert (
        idata.posterior_predictive["log_mass_median"].shape[-1] == metrics["catalogue"]["selected"]
    )
    assert "ignored" in (out / "report.md").read_text()
    # the same folder again is refused, and replaced with --overwrite (Schechter adds log_mc)
    before = (out / "metrics.json").read_bytes()
    again = run_main(capsys, "population", infer_dir, "--out", out, "--selection", "none", *_FAST)
    assert_one_line_error(again, "--overwrite")
    assert (out / "metrics.json").read_bytes() == before
    run = run_main(
        capsys,
        "population",
        infer_dir,
        "--out",
        out,
        "--selection",
        "none",
        "--mass-function",
        "schechter",
        "--overwrite",
        *_FAST,
    )
    assert run.returncode == 0, run.stderr
    assert "log_mc" in json.loads((out / "metrics.json").read_text())["hyper"]


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case",
    [
        "missing_dir",
        "no_posterior",
        "threshold",
        "visibility",
        "samples",
        "chains",
        "selection_missing",
        "selection_garbage",
        "selection_other_cuts",
        "nothing_selected",
        "model_without_selection",
    ],
)
def test_population_bad_inputs_are_one_line_errors(case, infer_dir, tmp_path, capsys):
    """Each bad input: exit 2, one line on stderr, nothing written in --out."""
    out = tmp_path / "out"
    results, extra = infer_dir, ["--selection", "none"]
    if case == "missing_dir":
        results, fragment = tmp_path / "nowhere", "does not exist"
    elif case == "no_posterior":
        results = tmp_path / "half"
        results.mkdir()
        (results / "summary.ecsv").write_bytes((infer_dir / "summary.ecsv").read_bytes())
        fragment = "lacks posterior.nc"
    elif case == "threshold":
        extra, fragment = [*extra, "--threshold", "1.5"], "--threshold"
    elif case == "visibility":
        extra, fragment = [*extra, "--visibility-cut", "-1"], "--visibility-cut"
    elif case == "samples":
        extra, fragment = [*extra, "--samples", "0"], "--samples"
    elif case == "chains":
        extra, fragment = [*extra, "--chains", "0"], "--chains"
    elif case == "selection_missing":
        extra, fragment = ["--selection", tmp_path / "nope.json"], "no such file"
    elif case == "selection_garbage":
        extra = ["--selection", _write(tmp_path / "bad.json", "{not json")]
        fragment = "not a selection function"
    elif case == "selection_other_cuts":
        fn = _mass_selection()
        fn.threshold = 0.9
        extra, fragment = ["--selection", fn.save(tmp_path / "sel.json")], "made for"
    elif case == "nothing_selected":
        extra, fragment = [*extra, "--visibility-cut", "1e30"], "no cutout"
    else:  # the toy model has no shipped selection function and the default model is another
        extra, fragment = ["--selection", "auto"], "--model"
    run = run_main(capsys, "population", results, "--out", out, *_FAST, *extra)
    assert_one_line_error(run, fragment)
    assert not out.exists()


def test_the_shipped_selection_function_serves_only_the_model_it_was_fitted_with():
    """The default model's own card finds the shipped p_det for the infer defaults; the card of a
    model retrained or recalibrated under the same name does not (it detects differently), while
    a new name for the software versions changes nothing."""
    import copy

    from sbicluster.artifact import load_model

    card = load_model(None).card
    fn = shipped_selection(card, 0.5, 0.0, 8)
    assert fn is not None and fn.provenance["model_fingerprint"] == model_fingerprint(card)
    assert shipped_selection(card, 0.7, 0.0, 8) is None  # other cuts
    retrained = copy.deepcopy(card)
    retrained["metrics"]["val_nll"] += 0.01
    recalibrated = copy.deepcopy(card)
    recalibrated["recalibration"]["validation_nll_after"] += 0.01
    for other in (retrained, recalibrated):
        assert model_fingerprint(other) != model_fingerprint(card)
        assert shipped_selection(other, 0.5, 0.0, 8) is None
    reinstalled = copy.deepcopy(card)
    reinstalled["software"] = {"torch": "0.0.0"}
    assert shipped_selection(reinstalled, 0.5, 0.0, 8) is not None
    # the card a results folder carries (JSON written and read back) has the same fingerprint
    assert model_fingerprint(json.loads(json.dumps(card))) == model_fingerprint(card)
