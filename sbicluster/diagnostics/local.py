"""Calibration at individual observations: the local classifier two-sample test (L-C2ST).

Coverage, SBC and TARP average over observations; a posterior can pass them and still be wrong
for the cluster in hand. L-C2ST (Linhart et al. 2023, arXiv:2306.03580) tests, at one observation
x_o, whether q(θ | x_o) equals the true posterior. This module runs sbi's normalizing-flow variant
(:class:`sbi.diagnostics.lc2st.LC2ST_NF`) on the model's own flow: held-out truths θ_i are mapped
to the flow's base space, z_i = T⁻¹(θ_i; x_i), which for a correct posterior are standard normal
whatever x_i; a classifier learns to tell [z_i, x_i] from [ε, x_i] with ε ~ N(0, I); at a probe
x_o its predicted probabilities on [ε, x_o] should then stay at chance (0.5). The statistic's null
distribution comes from classifiers trained with both classes standard normal, which need no
simulations. The observation x is the embedding network's feature vector of the cutout (what the
flow conditions on).

The report gives the fraction of probes, spread over visibility, at which calibration is not
rejected (for an exact posterior: 1 − α on average), the per-probe statistics and p-values, and
PP-plots of a few probes. This module must not simulate or plot (it returns what the plots need).

What an exact posterior would score
-----------------------------------
All probes are judged by one trained classifier (or ensemble), so its chance fit moves their
verdicts together: for an exact posterior the fraction is not a binomial share around 1 − α but
mostly 1 with a long tail of much lower values, on the runs where the classifier happens to fit
more than its null rivals. Under the null the observed classifier is one more draw of the same
training as the null classifiers (base-space truths of an exact posterior are standard normal
whatever x, as the null samples are). One extra null classifier is therefore trained, and each of
the ``num_null + 1`` in turn plays the observed one against the other ``num_null``, scored as the
observed one is (its statistic at the fixed evaluation points against theirs at fresh points):
``num_null + 1`` fractions an exact posterior could have scored on these probes and these
clusters. From them the report gives the probability that an exact posterior meets the goal and
where the model's own fraction falls among them. They share the probes and the classifiers, so
they show the spread the classifier's chance fit causes, not the spread over other test sets.
"""

from __future__ import annotations

import numpy as np
import torch

from ..checks import is_whole_number

__all__ = [
    "LOCAL_GOAL",
    "MIN_CALIBRATION",
    "embedded_features",
    "exact_posterior_fractions",
    "probe_indices",
    "local_c2st",
]

LOCAL_GOAL = 0.9
"""Goal: calibration not rejected (at α = 0.05) at this fraction of the probes or more."""

MIN_CALIBRATION = 50
"""Fewest held-out clusters that train the test's classifiers."""


def probe_indices(visibility: np.ndarray, n_probes: int) -> np.ndarray:
    """Indices of ``n_probes`` objects spread evenly over the ranks of ``visibility``.

    Parameters
    ----------
    visibility : numpy.ndarray
        Shape (N,), the objects' true visibility.
    n_probes : int
        Probes wanted (at most N).

    Returns
    -------
    numpy.ndarray
        int (min(n_probes, N),), sorted by visibility.
    """
    order = np.argsort(np.asarray(visibility, dtype=float), kind="stable")
    k = min(int(n_probes), len(order))
    return order[np.round(np.linspace(0, len(order) - 1, k)).astype(int)]


def exact_posterior_fractions(
    replay_statistics: np.ndarray, null_statistics: np.ndarray, alpha: float
) -> np.ndarray:
    """Fractions of probes not rejected when each null classifier in turn plays the observed one.

    Parameters
    ----------
    replay_statistics : numpy.ndarray
        (P, K): at each of P probes, each of K null classifiers' statistic scored as the observed
        classifier's is (at the test's fixed evaluation points).
    null_statistics : numpy.ndarray
        (P, K): the same classifiers' statistics as null rivals (at fresh evaluation points).
    alpha : float
        Level of each probe's test.

    Returns
    -------
    numpy.ndarray
        (K,): for classifier k, the share of probes whose p-value against the other K − 1
        classifiers' null statistics, ``mean(T_k < T_j)``, is at least ``alpha``.

    Raises
    ------
    ValueError
        Arrays of different shapes, not 2-D, or with fewer than two classifiers.

    Examples
    --------
    Two probes, three classifiers; classifier 0 beats both rivals at the first probe only:

    >>> replay = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.3]])
    >>> rivals = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    >>> exact_posterior_fractions(replay, rivals, alpha=0.05).tolist()
    [0.5, 1.0, 1.0]
    """
    replay = np.asarray(replay_statistics, dtype=float)
    rivals = np.asarray(null_statistics, dtype=float)
    if replay.ndim != 2 or replay.shape != rivals.shape or replay.shape[1] < 2:
        raise ValueError(
            "need (probes, classifiers) arrays of one shape with at least two classifiers, got "
            f"{replay.shape} and {rivals.shape}"
        )
    k = replay.shape[1]
    fractions = np.empty(k)
    for j in range(k):
        others = np.delete(rivals, j, axis=1)
        p_values = (replay[:, [j]] < others).mean(axis=1)
        fractions[j] = float(np.mean(p_values >= alpha))
    return fractions


@torch.no_grad()
def embedded_features(model, images: torch.Tensor) -> torch.Tensor:
    """float32 (N, F) features of (N, C, H, W) cutouts, on the CPU, what the flow conditions on."""
    from ..inference import embed_in_parts

    device = next(model.parameters()).device
    parts = [
        embed_in_parts(model, images[i : i + 1024].to(device)).cpu()
        for i in range(0, len(images), 1024)
    ]
    return torch.cat(parts)


def local_c2st(
    model,
    theta: np.ndarray,
    images: torch.Tensor | None,
    probe: np.ndarray,
    visibility: np.ndarray,
    *,
    features: torch.Tensor | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    num_null: int = 20,
    num_eval: int = 2000,
    num_ensemble: int = 1,
    pp_probes: int = 4,
) -> dict:
    """L-C2ST of the model's flow at probe observations.

    Parameters
    ----------
    model : ClusterModel
        The trained model (its ``flow`` must map θ to base space with ``transform``).
    theta : numpy.ndarray
        True parameters of held-out clusters, shape (N, D), prior units.
    images : torch.Tensor or None
        Their cutouts, (N, C, H, W) e⁻/s; ``None`` when ``features`` are given.
    probe : numpy.ndarray
        bool (N,): the probe observations; the others train the classifiers.
    visibility : numpy.ndarray
        True visibility, (N,), recorded for each probe.
    features : torch.Tensor, optional
        The embedding network's features of the cutouts, (N, F), instead of ``images`` (so a
        caller that embeds a test set chunk by chunk need not keep its cutouts).
    seed : int
        Seed of the posterior draws, the base samples and the classifiers.
    alpha : float
        Level of each probe's test.
    num_null : int
        Classifiers trained under the null that each probe's p-value compares with (its
        resolution is 1 / num_null); one more is trained for the exact-posterior replay.
    num_eval : int
        Base-distribution points at which a probe is evaluated.
    num_ensemble : int
        Classifiers (seeds ``seed``, ``seed + 1``, ...) whose predicted probabilities are averaged,
        for the observed data and for every null trial alike, so the test keeps its level. All
        probes are judged by the one trained classifier, so its chance fit moves all their
        verdicts together; an ensemble damps that, at ``num_ensemble`` times the training cost.
    pp_probes : int
        Probes whose predicted probabilities are kept for PP-plots (spread over the probes).

    Returns
    -------
    dict
        ``n_calibration``, ``n_probes``, ``alpha``, ``num_null``, ``num_ensemble``,
        ``fraction_not_rejected``,
        ``goal``, ``goal_met``, ``probes`` (per probe: ``index``, ``visibility``, ``statistic``,
        ``p_value``, ``rejected``), ``exact_posterior`` (what an exact posterior would score on
        these probes, from the ``num_null + 1`` null classifiers each replayed as the observed
        one: ``replicates``, their ``fractions``, ``mean``, ``probability_goal_met`` and
        ``share_at_or_below``, the share of them at or below this model's fraction; see the
        module docstring) and ``pp`` (for a few probes: ``visibility``, ``probs`` (num_eval,),
        ``probs_null`` (num_null, num_eval)).
    """
    from sbi.diagnostics.lc2st import LC2ST_NF

    probe = np.asarray(probe, dtype=bool)
    cal = ~probe
    if cal.sum() < MIN_CALIBRATION or probe.sum() < 1:
        raise ValueError(
            f"L-C2ST needs ≥ {MIN_CALIBRATION} calibration objects and a probe, got "
            f"{int(cal.sum())} and {int(probe.sum())}"
        )
    if not is_whole_number(num_ensemble):
        raise ValueError(f"num_ensemble must be an integer ≥ 1, got {num_ensemble!r}")
    # scikit-learn takes 32-bit seeds, and ensemble members add their index to it
    clf_seed = min(int(seed) % 2**32, 2**32 - num_ensemble)
    if features is None:
        if images is None:
            raise ValueError("local_c2st needs the cutouts (images) or their features")
        features = embedded_features(model, images)
    features = torch.as_tensor(features, dtype=torch.float32)
    dim = int(theta.shape[1])
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        drawn = model.sample_from_features(features[cal].to(device), 1, generator)[
            0
        ].cpu()  # one posterior draw per calibration object

    @torch.no_grad()
    def to_base(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model.flow(x.to(device).float()).transform(th.to(device).float()).cpu()

    base = torch.distributions.MultivariateNormal(torch.zeros(dim), torch.eye(dim))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # LC2ST_NF draws its evaluation points from the global stream
        test = LC2ST_NF(
            prior_samples=torch.as_tensor(theta[cal], dtype=torch.float32),
            xs=features[cal],
            posterior_samples=drawn,
            flow_inverse_transform=to_base,
            flow_base_dist=base,
            num_eval=num_eval,
            num_trials_null=num_null + 1,  # the last one only for the exact-posterior replay
            num_ensemble=num_ensemble,
            seed=clf_seed,
            # random_state here, not only in train_on_observed_data: the classifiers trained
            # under the null are built from these arguments too, and without it they would
            # draw their weights and validation splits from numpy's global generator
            classifier_kwargs={
                "hidden_layer_sizes": (64, 64),
                "max_iter": 300,
                "random_state": clf_seed,
            },
        )
        test.train_under_null_hypothesis(verbosity=0)
        test.train_on_observed_data(verbosity=0)
        # the statistics at the probes draw from the global stream as well
        probes, replays, rivals = [], [], []
        idx = np.flatnonzero(probe)
        keep_pp = set(np.round(np.linspace(0, len(idx) - 1, min(pp_probes, len(idx)))).astype(int))
        pp = []
        for k, i in enumerate(idx):
            x_o = features[i]
            statistic = float(test.get_statistic_on_observed_data(x_o=x_o))
            null = test.get_statistics_under_null_hypothesis(x_o=x_o)
            rivals.append(np.asarray(null.scores, dtype=float))
            # each null classifier scored as the observed one is: at the fixed evaluation points
            replays.append(
                [
                    float(test.get_scores(x_o=x_o, trained_clfs=c).scores.mean())
                    for c in test.trained_clfs_null.values()
                ]
            )
            p_value = float(np.mean(statistic < rivals[-1][:num_null]))  # as sbi's p_value
            probes.append(
                {
                    "index": int(i),
                    "visibility": float(visibility[i]),
                    "statistic": statistic,
                    "p_value": p_value,
                    "rejected": bool(p_value < alpha),
                }
            )
            if k in keep_pp:
                probs = test.get_scores(x_o=x_o, trained_clfs=test.trained_clfs).probabilities
                probs_null = np.asarray(null.probabilities, dtype=float)[:num_null]
                pp.append(
                    {
                        "visibility": float(visibility[i]),
                        "probs": np.asarray(probs, dtype=float).reshape(-1),
                        "probs_null": probs_null.reshape(num_null, -1),
                    }
                )
    fraction = float(np.mean([not p["rejected"] for p in probes]))
    replayed = exact_posterior_fractions(np.array(replays), np.array(rivals), alpha)
    return {
        "n_calibration": int(cal.sum()),
        "n_probes": len(probes),
        "alpha": alpha,
        "num_null": num_null,
        "num_ensemble": num_ensemble,
        "fraction_not_rejected": fraction,
        "goal": LOCAL_GOAL,
        "goal_met": bool(fraction >= LOCAL_GOAL),
        "probes": probes,
        "exact_posterior": {
            "replicates": len(replayed),
            "fractions": replayed.tolist(),
            "mean": float(replayed.mean()),
            "probability_goal_met": float(np.mean(replayed >= LOCAL_GOAL)),
            "share_at_or_below": float(np.mean(replayed <= fraction)),
        },
        "pp": pp,
    }
