"""Population inference: hyper-parameters of a cluster population from per-cluster posteriors.

Modules, in the order the data flow through them:

* :mod:`.distributions` — p(θ | Λ): mass function, age distribution, A_V distribution;
* :mod:`.likelihood` — importance-weighted per-cluster likelihoods and their ESS;
* :mod:`.selection` — p_det(θ), its fit to simulations, α(Λ);
* :mod:`.fit` — the pyro model and NUTS;
* :mod:`.results` — the catalogue from an ``sbicluster infer`` folder;
* :mod:`.report` — ``population.nc``, figures, ``report.md``, ``metrics.json``
  (:func:`.report.run_population` is the entry point of ``sbicluster population``).
"""

from .distributions import HYPER_PRIORS, PopulationModel
from .fit import NutsConfig, PopulationFit, fit_population
from .likelihood import ESS_WARNING, ImportanceLikelihood
from .selection import SelectionFunction, SelectionNormaliser, estimate_selection, load_selection

__all__ = [
    "HYPER_PRIORS",
    "PopulationModel",
    "NutsConfig",
    "PopulationFit",
    "fit_population",
    "ESS_WARNING",
    "ImportanceLikelihood",
    "SelectionFunction",
    "SelectionNormaliser",
    "estimate_selection",
    "load_selection",
]
