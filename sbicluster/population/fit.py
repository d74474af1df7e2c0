"""NUTS over the population hyper-parameters Λ (pyro).

This module owns the hierarchical model and its sampling:

    Λ ~ hyper-priors (:data:`.distributions.HYPER_PRIORS`, uniform),
    log p(catalogue | Λ) = Σ_i log L_i(Λ) − N log α(Λ),

with L_i the importance-weighted likelihood of cluster i (:mod:`.likelihood`) and α(Λ) the
detected fraction of the population (:mod:`.selection`; α = 1 when selection is ignored). The
catalogue term enters the pyro model as one ``pyro.factor``; all N × S draws are evaluated in one
vectorised float64 pass per gradient. Chains run one after another, each seeded from ``seed``
inside :func:`torch.random.fork_rng` (no global RNG state is changed) with pyro's parameter store
cleared. Sampling runs with one torch thread (restored afterwards): each step's work is small,
and on a shared 2-core machine two threads contend (≈ 10× slower measured). It must not read
or write files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .distributions import HYPER_PRIORS, PopulationModel
from .likelihood import ESS_WARNING, ImportanceLikelihood
from .selection import SelectionFunction, SelectionNormaliser

__all__ = ["NutsConfig", "PopulationFit", "fit_population", "log_posterior"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NutsConfig:
    """NUTS settings.

    Parameters
    ----------
    num_samples : int
        Kept draws per chain (default 500).
    warmup : int
        Adaptation steps per chain (default 300: step size and a dense mass matrix).
    chains : int
        Chains, run one after another (default 2; R̂ needs ≥ 2).
    max_tree_depth : int
        Cap on the NUTS tree depth (default 6: ≤ 63 leapfrog steps per draw; ample for 3–4
        well-scaled hyper-parameters).
    target_accept : float
        Target acceptance probability of the step-size adaptation (default 0.8).
    seed : int
        Seed of chain c is ``seed + c``.
    """

    num_samples: int = 500
    warmup: int = 300
    chains: int = 2
    max_tree_depth: int = 6
    target_accept: float = 0.8
    seed: int = 0


@dataclass
class PopulationFit:
    """Result of :func:`fit_population`.

    Attributes
    ----------
    samples : dict of str to numpy.ndarray
        (chains, draws) per hyper-parameter.
    divergences : numpy.ndarray
        (chains, draws) booleans.
    median : dict of str to float
        Posterior medians of Λ.
    ess : numpy.ndarray
        (N,) effective draws of each cluster's importance weights at the median Λ.
    log_alpha_median : float
        log α at the median Λ (0 when selection is ignored).
    runtime_s : float
        Wall time of the sampling, s.
    config : NutsConfig
    names : tuple of str
    """

    samples: dict[str, np.ndarray]
    divergences: np.ndarray
    median: dict[str, float]
    ess: np.ndarray
    log_alpha_median: float
    runtime_s: float
    config: NutsConfig
    names: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    @property
    def low_ess(self) -> int:
        """Clusters with fewer than :data:`.likelihood.ESS_WARNING` effective draws."""
        return int(np.sum(self.ess < ESS_WARNING))

    def to_inference_data(self, posterior_predictive: dict | None = None, attrs=None):
        """The hyper-posterior as :class:`arviz.InferenceData` (``posterior``, ``sample_stats``,
        optionally ``posterior_predictive`` with dims (chain, draw, cluster))."""
        import arviz as az

        kwargs = {}
        if posterior_predictive:
            kwargs["posterior_predictive"] = posterior_predictive
            kwargs["dims"] = {k: ["cluster"] for k in posterior_predictive}
        idata = az.from_dict(
            posterior=self.samples, sample_stats={"diverging": self.divergences}, **kwargs
        )
        idata.posterior.attrs.update(attrs or {})
        return idata


def log_posterior(
    likelihood: ImportanceLikelihood,
    normaliser: SelectionNormaliser,
    hyper: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Σ_i log L_i(Λ) − N log α(Λ) (the catalogue's log likelihood; flat hyper-priors add a
    constant inside their box)."""
    return likelihood.total_log_likelihood(hyper) - likelihood.n * normaliser.log_alpha(hyper)


def _model(likelihood, normaliser, names):
    import pyro
    import pyro.distributions as dist

    hyper = {
        k: pyro.sample(
            k,
            dist.Uniform(
                torch.tensor(HYPER_PRIORS[k][0], dtype=torch.float64),
                torch.tensor(HYPER_PRIORS[k][1], dtype=torch.float64),
            ),
        )
        for k in names
    }
    pyro.factor("catalogue", log_posterior(likelihood, normaliser, hyper))


def _run_chains(config, likelihood, normaliser, names, progress, chains, diverging) -> None:
    """Run ``config.chains`` NUTS chains one after another, appending samples and divergences."""
    import pyro
    from pyro.infer import MCMC, NUTS

    for c in range(config.chains):
        pyro.clear_param_store()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + c)
            kernel = NUTS(
                _model,
                target_accept_prob=config.target_accept,
                max_tree_depth=config.max_tree_depth,
                full_mass=True,
            )
            mcmc = MCMC(
                kernel,
                num_samples=config.num_samples,
                warmup_steps=config.warmup,
                num_chains=1,
                disable_progbar=not progress,
            )
            mcmc.run(likelihood, normaliser, names)
        got = mcmc.get_samples()
        chains.append({k: got[k].numpy() for k in names})
        extra = mcmc.diagnostics()
        div = np.zeros(config.num_samples, dtype=bool)
        idx = extra.get("divergences", {}).get("chain 0", [])
        div[[i for i in idx if i < config.num_samples]] = True
        diverging.append(div)


def fit_population(
    draws: np.ndarray,
    population: PopulationModel,
    selection: SelectionFunction,
    config: NutsConfig = NutsConfig(),
    *,
    progress: bool = False,
) -> PopulationFit:
    """Sample the hyper-posterior p(Λ | catalogue) with NUTS.

    Parameters
    ----------
    draws : numpy.ndarray
        (N, S, D) posterior draws of the catalogue's clusters under the training prior.
    population : PopulationModel
        p(θ | Λ) and π(θ).
    selection : SelectionFunction
        p_det(θ) of the catalogue (:meth:`SelectionFunction.none` ignores selection).
    config : NutsConfig
        Sampler settings and seed.
    progress : bool
        Show pyro's progress bar.

    Returns
    -------
    PopulationFit
    """
    likelihood = ImportanceLikelihood(draws, population)
    normaliser = SelectionNormaliser(selection, population, seed=config.seed)
    names = population.hyper_names
    chains, diverging = [], []
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-step work is small: extra threads only contend (restored below)
    try:
        _run_chains(config, likelihood, normaliser, names, progress, chains, diverging)
    finally:
        torch.set_num_threads(threads)
    runtime = time.perf_counter() - start
    samples = {k: np.stack([ch[k] for ch in chains]) for k in names}
    median = {k: float(np.median(v)) for k, v in samples.items()}
    hyper = likelihood.hyper_tensor(median)
    ess = likelihood.ess(hyper)
    with torch.no_grad():
        log_alpha = float(normaliser.log_alpha(hyper))
    fit = PopulationFit(
        samples, np.stack(diverging), median, ess, log_alpha, runtime, config, names
    )
    if fit.low_ess:
        log.warning(
            "%d of %d clusters have fewer than %d effective importance draws at the median "
            "hyper-parameters (smallest %.1f): their likelihoods are noisy; more posterior "
            "draws (infer --samples) help",
            fit.low_ess,
            likelihood.n,
            int(ESS_WARNING),
            float(ess.min()),
        )
    return fit
