"""Ensembles of trained models against the calibration goals, beside each member alone.

An ensemble of K models answers with

- P(cluster) = σ(mean over members of the view-averaged classifier logit), and
- the posterior q(θ | x) = (1/K) Σ_k q_k(θ | x), an equal-weight mixture of the members' flows:
  its draws take ⌈S/K⌉ or ⌊S/K⌋ of each member's draws, and its density (for the joint HPD
  coverage) is ``logsumexp_k log q_k − log K``.

With ``--views-of MODEL`` the members are instead one model's answers for the 8 symmetric views of
each cutout (identity, rotations, mirror images): the posterior becomes the equal mixture of the
flow conditioned on each view, which costs nothing at training time.

Every member and the ensemble are judged by :func:`sbicluster.diagnostics.evaluate` on the same
held-out simulations (the seed and stream of ``sbicluster diagnose``), so the rows of the report are
like for like. The report is ``benchmarks/results/<name>.{md,json}``.

Usage::

    python -m benchmarks.ensemble --models sbicluster/models/default runs/a/model runs/b/model
    python -m benchmarks.ensemble --views-of sbicluster/models/default --name view_mixture
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch

from benchmarks.records import environment, write_results

__all__ = ["main", "member_log_prob", "mixture_draws", "mixture_log_prob"]

NAME = "ensemble"


def mixture_draws(member_draws: list[np.ndarray]) -> np.ndarray:
    """Draws of the equal-weight mixture of K posteriors from S draws of each.

    Parameters
    ----------
    member_draws : list of numpy.ndarray
        K arrays of shape (N, S, D), independent draws of each member's posterior.

    Returns
    -------
    numpy.ndarray
        (N, S, D): the first ⌈S/K⌉ or ⌊S/K⌋ draws of each member in turn (draws of one posterior
        are exchangeable, so the first ones are as good as a random subset).
    """
    k = len(member_draws)
    s = member_draws[0].shape[1]
    counts = [len(part) for part in np.array_split(np.arange(s), k)]
    return np.concatenate([d[:, :c] for d, c in zip(member_draws, counts, strict=True)], axis=1)


def mixture_log_prob(member_log_probs: list[np.ndarray]) -> np.ndarray:
    """log of the equal-weight mixture density, ``logsumexp_k log q_k − log K``.

    Parameters
    ----------
    member_log_probs : list of numpy.ndarray
        K arrays of the same shape, each member's log density at the same points.

    Returns
    -------
    numpy.ndarray
        Mixture log density, same shape.
    """
    stacked = np.stack(member_log_probs)
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).mean(axis=0))


def _member_draws(model, images, *, view, num_samples, seed):
    """S posterior draws (N, S, D) of one model given symmetric view ``view`` of each cutout.

    View 0 is the cutout as given, and its draws are those of ``sbicluster diagnose``.
    """
    from sbicluster.diagnostics.run import POSTERIOR_DRAW_STREAM, held_out_seed
    from sbicluster.inference import predict, symmetric_view

    shown = symmetric_view(images, view)
    gen = torch.Generator().manual_seed(held_out_seed(seed, POSTERIOR_DRAW_STREAM))
    return predict(
        model, shown, num_samples=num_samples, generator=gen, views=1, progress=False
    ).samples


def member_log_prob(model, view):
    """log q(θ | x) of one ensemble member: a model given symmetric view ``view`` of each cutout.

    Parameters
    ----------
    model : ClusterModel
        A trained model.
    view : int
        Index of the symmetric view (:func:`sbicluster.inference.symmetric_view`); 0 is the
        cutout as given.

    Returns
    -------
    callable
        ``log_prob(θ (S, B, D), images (B, C, H, W)) → (S, B)``, nats in θ units.
    """
    from sbicluster.diagnostics.run import model_log_prob
    from sbicluster.inference import symmetric_view

    log_q = model_log_prob(model)
    if view == 0:
        return log_q
    return lambda th, x: log_q(th, symmetric_view(x, view))


def _summary(metrics: dict) -> dict:
    """The goal-relevant numbers of one :func:`evaluate` result."""
    cov = metrics["coverage"]
    marginal = {name: c["max_abs_deviation"] for name, c in cov["marginal"].items()}
    worst = max(marginal, key=marginal.get)
    sbc = metrics["sbc"]["per_parameter"]
    sbc_min = min(sbc, key=lambda p: sbc[p]["ks_pvalue"])
    overall = metrics["accuracy"]["overall"]
    return {
        "auc_detectable": metrics["classification"]["auc_detectable"],
        "joint_coverage_max_abs_deviation": cov["joint"]["max_abs_deviation"],
        "joint_coverage_verdict": cov["joint"]["verdict"],
        "worst_marginal": worst,
        "worst_marginal_max_abs_deviation": marginal[worst],
        "worst_marginal_verdict": cov["marginal"][worst]["verdict"],
        "sbc_min_ks_pvalue": sbc[sbc_min]["ks_pvalue"],
        "sbc_min_parameter": sbc_min,
        "robust_sigma": {p: overall[p]["robust_sigma"] for p in metrics["parameters"]},
        "joint_coverage_by_visibility": [
            {k: b[k] for k in ("range", "n", "verdict", "max_abs_deviation")}
            for b in cov.get("joint_by_visibility", [])
        ],
        "goals": metrics["goals"],
    }


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results dictionary written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    members = parser.add_mutually_exclusive_group(required=True)
    members.add_argument("--models", nargs="+", help="model directories (K >= 2)")
    members.add_argument(
        "--views-of", help="one model directory whose 8 symmetric views are the members"
    )
    parser.add_argument(
        "--n", type=int, default=2000, help="held-out objects (clusters + backgrounds)"
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="posterior draws per object")
    parser.add_argument("--seed", type=int, default=12345, help="test-set seed")
    parser.add_argument("--views", type=int, default=8, help="symmetric views per classifier call")
    parser.add_argument("--name", default=NAME, help="results name (files results/<name>.*)")
    args = parser.parse_args(argv)
    if args.models is not None and len(args.models) < 2:
        parser.error("an ensemble needs at least two --models")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sbicluster.artifact import load_model
    from sbicluster.diagnostics import evaluate
    from sbicluster.diagnostics.run import log_prob_of_draws, simulate_held_out
    from sbicluster.inference import SYMMETRY_VIEWS, classifier_logits
    from simulators.registry import simulator_from_card

    start = time.perf_counter()
    if args.views_of is not None:
        model = load_model(args.views_of, device="cpu")
        member_list = [(f"view {k}", model, k) for k in range(max(SYMMETRY_VIEWS))]
    else:
        member_list = [(path, load_model(path, device="cpu"), 0) for path in args.models]
    models = [model for _, model, _ in member_list]
    simulator = simulator_from_card(models[0].card["simulator"], device="cpu")
    batch = simulate_held_out(simulator, args.n, args.seed, progress=sys.stderr.isatty())
    label = batch.label.numpy().astype(bool)
    theta, vis_all = batch.theta.numpy()[label], batch.visibility.numpy()
    cluster_images = batch.images[label]
    prior = models[0].prior

    def judge(logit, draws, lp_true, lp_draws):
        metrics = evaluate(
            theta,
            draws,
            names=prior.names,
            visibility=vis_all[label],
            log_prob_true=lp_true,
            log_prob_samples=lp_draws,
            p_cluster=1.0 / (1.0 + np.exp(-logit)),
            is_cluster=label,
            visibility_all=vis_all,
            seed=args.seed,
        )
        return _summary(metrics)

    outputs = []
    rows = {}
    logits_of = {}  # one classifier pass per distinct model
    for name, model, view in member_list:
        logging.info("member %s", name)
        if id(model) not in logits_of:
            logits_of[id(model)] = classifier_logits(model, batch.images, views=args.views)
        logit = logits_of[id(model)]
        draws = _member_draws(
            model, batch.images, view=view, num_samples=args.num_samples, seed=args.seed
        )[label]
        log_q = member_log_prob(model, view)
        lp_true, lp_draws = log_prob_of_draws(log_q, draws, theta, cluster_images)
        rows[name] = judge(logit, draws, lp_true, lp_draws)
        outputs.append((log_q, logit, draws))

    mixed = mixture_draws([d for _, _, d in outputs])
    member_lp = [log_prob_of_draws(log_q, mixed, theta, cluster_images) for log_q, _, _ in outputs]
    lp_true = mixture_log_prob([t for t, _ in member_lp])
    lp_draws = mixture_log_prob([d for _, d in member_lp])
    mean_logit = np.mean([logit for _, logit, _ in outputs], axis=0)
    rows["ensemble"] = judge(mean_logit, mixed, lp_true, lp_draws)
    wall = time.perf_counter() - start

    env = environment("cpu")
    results = {
        "environment": env,
        "models": args.models if args.models is not None else [args.views_of],
        "members": "symmetric views" if args.views_of is not None else "models",
        "n": args.n,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "views": args.views,
        "wall_seconds": wall,
        "rows": rows,
    }
    write_results(args.name, results, _markdown(results))
    return results


def _markdown(results: dict) -> str:
    env = results["environment"]
    params = next(iter(results["rows"].values()))["robust_sigma"].keys()
    of_views = results.get("members") == "symmetric views"
    title = (
        f"# Posterior as the mixture over the 8 symmetric views of `{results['models'][0]}`"
        if of_views
        else "# Ensemble of trained models vs each member"
    )
    lines = [
        f"<!-- written by `{env['command']}` on {env['date_utc']} -->",
        "",
        title,
        "",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores), device {env['device']}; torch "
        f"{env['versions'].get('torch')}, sbi {env['versions'].get('sbi')}; git {env['git_commit']}. "
        f"Held-out set: {results['n']} objects, seed {results['seed']} (the calibration "
        f"benchmark's seed); {results['num_samples']} draws per object; P(cluster) from "
        f"{results['views']} symmetric views per member. Wall time {results['wall_seconds']:.0f} s.",
        "",
        (
            "Each member is the model's posterior given one symmetric view of the cutout (view 0 "
            "is the cutout as given, as in `sbicluster diagnose`); every member shares the "
            "view-averaged P(cluster). The ensemble's posterior is the equal-weight mixture of "
            "the views' posteriors (draws split evenly, density = mean of their densities). Goals"
            if of_views
            else "The ensemble's P(cluster) is σ(mean of the members' logits); its posterior is "
            "the equal-weight mixture of the members' flows (draws split evenly between members, "
            "density = mean of the members' densities). Goals"
        )
        + ": AUC ≥ 0.99 at visibility ≥ 5; coverage "
        "|empirical − nominal| ≤ 0.03 at every level, joint and per marginal; SBC not rejected at "
        "p = 0.01.",
        "",
        "| model | AUC (vis ≥ 5) | joint coverage max dev | worst marginal coverage max dev | SBC min KS p | "
        + " | ".join(f"σ {p}" for p in params)
        + " | goals met |",
        "|---|---|---|---|---|" + "---|" * len(params) + "---|",
    ]
    for name, row in results["rows"].items():
        met = [goal for goal, ok in row["goals"].items() if ok]
        lines.append(
            f"| `{name}` | {row['auc_detectable']:.4f} | "
            f"{row['joint_coverage_max_abs_deviation']:.3f} {row['joint_coverage_verdict']} | "
            f"{row['worst_marginal']} {row['worst_marginal_max_abs_deviation']:.3f} "
            f"{row['worst_marginal_verdict']} | "
            f"{row['sbc_min_ks_pvalue']:.3g} ({row['sbc_min_parameter']}) | "
            + " | ".join(f"{row['robust_sigma'][p]:.3f}" for p in params)
            + f" | {', '.join(met) or 'none'} |"
        )
    by_vis = {n: r.get("joint_coverage_by_visibility") for n, r in results["rows"].items()}
    if any(by_vis.values()):
        lines += [
            "",
            "Joint HPD coverage by visibility (max |empirical − nominal|, verdict by the 99 % "
            "binomial bands; n clusters in brackets):",
            "",
            "| model | "
            + " | ".join(_range_label(b["range"]) for b in next(v for v in by_vis.values() if v))
            + " |",
            "|---|" + "---|" * len(next(v for v in by_vis.values() if v)),
        ]
        for name, bins in by_vis.items():
            cells = [f"{b['max_abs_deviation']:.3f} {b['verdict']} ({b['n']})" for b in bins or []]
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _range_label(bounds: list) -> str:
    low, high = bounds
    return f"visibility ≥ {low:g}" if high is None else f"visibility {low:g}–{high:g}"


if __name__ == "__main__":
    main()
