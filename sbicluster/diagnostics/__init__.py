"""Calibration and accuracy diagnostics of amortised posteriors on held-out simulations.

Subpackage layout (the data flow: draws → statistics → plots → report):

- :mod:`.coverage` — expected coverage of joint and marginal HPD regions, binomial bands;
- :mod:`.sbc` — simulation-based-calibration ranks and uniformity tests;
- :mod:`.accuracy` — bias, robust scatter, RMSE, posterior width vs visibility;
- :mod:`.classification` — ROC/AUC, precision/recall, reliability diagram of P(cluster);
- :mod:`.misspecification` — MMD two-sample test, in the model's embedding space, of observed
  cutouts against training simulations (do the data lie where the model was trained?);
- :mod:`.nuisance_limits` — coverage at one fixed nuisance value of an *exact* posterior that
  marginalises that nuisance (the reference that fixed-physics tests of a marginalised model are
  read against);
- :mod:`.objects` — the per-object reduction of draws (HPD credibility, SBC rank, median, width,
  TARP value: :class:`.objects.DrawStatistics`) that lets a test set be sampled chunk by chunk;
- :mod:`.plots` — matplotlib figures of all of the above (:func:`.plots.diagnostic_figures`: the
  report's set, from the metrics and the per-object statistics behind them);
- :mod:`.report` — ``report.md`` + PNGs + ``metrics.json``;
- :mod:`.run` — :func:`evaluate` (arrays → metrics, for any posterior),
  :func:`evaluate_statistics` (per-object statistics → the same metrics), :func:`run_diagnostics`,
  the whole pipeline on a model and a simulator in bounded memory, and :func:`held_out_seed`, the seeds of its
  random streams.

The statistics modules work on numpy arrays only, so they apply to any posterior.
"""

from .accuracy import (
    PAPER_RELIABLE_RANGE,
    point_accuracy,
    posterior_width,
    reliable_range_mask,
    robust_sigma,
)
from .classification import brier_score, precision_recall, reliability_diagram, roc_auc, roc_curve
from .coverage import (
    CREDIBILITY_LEVELS,
    CoverageResult,
    binomial_band,
    joint_coverage,
    marginal_coverage,
)
from .misspecification import MMDTestResult, misspecification_test, mmd_permutation_test
from .objects import DrawStatistics, draw_statistics
from .plots import diagnostic_figures
from .run import evaluate, evaluate_statistics, held_out_seed, run_diagnostics
from .sbc import SBCResult, run_sbc_checks, sbc_ranks

__all__ = [
    "run_diagnostics",
    "evaluate",
    "evaluate_statistics",
    "DrawStatistics",
    "draw_statistics",
    "diagnostic_figures",
    "held_out_seed",
    "CREDIBILITY_LEVELS",
    "CoverageResult",
    "MMDTestResult",
    "PAPER_RELIABLE_RANGE",
    "SBCResult",
    "binomial_band",
    "brier_score",
    "joint_coverage",
    "marginal_coverage",
    "misspecification_test",
    "mmd_permutation_test",
    "point_accuracy",
    "posterior_width",
    "precision_recall",
    "reliability_diagram",
    "reliable_range_mask",
    "robust_sigma",
    "roc_auc",
    "roc_curve",
    "run_sbc_checks",
    "sbc_ranks",
]
