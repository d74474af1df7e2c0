"""How much the local calibration test's verdict moves with the test's own randomness.

``sbicluster diagnose`` reports L-C2ST (:mod:`sbicluster.diagnostics.local`) as the fraction of
probe clusters at which calibration is not rejected. All probes are judged by one trained
classifier, so their verdicts are not independent, and the fraction can move between runs for
reasons other than the posterior. This benchmark holds the model and the test set fixed and
reruns the test with several seeds (the seed draws the posterior samples, the base-space points
and the classifiers' initial weights and validation splits), for one or more models on the same
simulated clusters, so that a difference between models can be set against the test's own spread.

Usage::

    python -m benchmarks.lc2st_repeatability --models MODEL [MODEL ...] [--n 16000] [--seeds 5]
    python -m benchmarks.lc2st_repeatability --quick --results-dir /tmp/check

Writes ``results/lc2st_repeatability.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from benchmarks.records import environment, write_results
from sbicluster.artifact import load_model
from sbicluster.diagnostics.local import LOCAL_GOAL, embedded_features, local_c2st, probe_indices
from simulators.registry import simulator_from_card

__all__ = ["simulate_clusters", "repeat_test", "main"]

NAME = "lc2st_repeatability"
log = logging.getLogger(__name__)


def simulate_clusters(simulator_card: dict, n: int, seed: int, chunk: int = 512):
    """``n`` clusters from the simulator of a model card.

    Returns
    -------
    tuple
        θ (n, D) numpy in prior units, true visibility (n,) numpy, cutouts (n, C, H, W) float32
        tensor in e⁻/s.
    """
    simulator = simulator_from_card(simulator_card)
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    thetas, visibility, images = [], [], []
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        sim = simulator.simulate(b, generator, label=torch.ones(b, dtype=torch.long))
        thetas.append(sim.theta.cpu().numpy())
        visibility.append(sim.visibility.cpu().numpy())
        images.append(sim.images.cpu())
    return np.concatenate(thetas), np.concatenate(visibility), torch.cat(images)


def repeat_test(model, theta, visibility, features, probe, seeds) -> list[dict]:
    """L-C2ST of ``model`` on one test set, once per seed: fraction not rejected and seconds."""
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        result = local_c2st(model, theta, None, probe, visibility, features=features, seed=seed)
        runs.append(
            {
                "seed": int(seed),
                "fraction_not_rejected": result["fraction_not_rejected"],
                "rejected_probes": [p["index"] for p in result["probes"] if p["rejected"]],
                "exact_posterior_fractions": result["exact_posterior"]["fractions"],
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info("seed %d: not rejected at %.0f%%", seed, 100 * result["fraction_not_rejected"])
    return runs


def _markdown(res: dict) -> str:
    env = res["environment"]
    rows = []
    for name, model in res["models"].items():
        fractions = [r["fraction_not_rejected"] for r in model["runs"]]
        exact = np.concatenate([r["exact_posterior_fractions"] for r in model["runs"]])
        rows.append(
            f"| `{name}` | "
            + ", ".join(f"{100 * f:.0f}%" for f in fractions)
            + f" | {100 * np.mean(fractions):.1f}% | {100 * min(fractions):.0f}–"
            f"{100 * max(fractions):.0f}% | {sum(f >= LOCAL_GOAL for f in fractions)} of "
            f"{len(fractions)} | {100 * exact.mean():.1f}%, {100 * exact.min():.0f}–"
            f"{100 * exact.max():.0f}%, {np.mean(exact >= LOCAL_GOAL):.0%} of {len(exact)} |"
        )
    lines = [
        "# L-C2ST repeatability: one model, one test set, the test's own seeds",
        "",
        f"Command: `{env['command']}` — {env['date_utc']}, git {env['git_commit']}",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, torch threads {env['torch_threads']})",
        "",
        f"{res['n']:,} simulated clusters (seed {res['data_seed']}), {res['n_probes']} probes spread "
        "over visibility, the others training the classifiers, as `sbicluster diagnose` does; the "
        "test rerun with seeds " + ", ".join(str(s) for s in res["seeds"]) + ". Each seed draws "
        "new posterior samples, base-space points and classifier initialisations; the data and "
        "the probes stay the same.",
        "",
        "| model | not rejected, per seed | mean | range | runs meeting the 90 % goal | "
        "exact posterior on the same probes: mean, range, share meeting the goal |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "An exact posterior is not rejected at 95 % of probes on average. A spread across seeds "
        "as wide as a difference between two models means that difference is the test's noise, "
        "not the models'. The last column replays each run's null classifiers, each in turn as "
        "the observed one (`sbicluster.diagnostics.local`): the fractions an exact posterior "
        "could have scored on these probes, pooled over the seeds.",
    ]
    if res["quick"]:
        lines += ["", "A `--quick` check run: too small for a figure worth quoting."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=[None], help="model folders (default: the shipped default)"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="names of the models in the report (default: paths)",
    )
    parser.add_argument("--n", type=int, default=16000, help="simulated clusters")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=5, help="test seeds 0, 1, ...")
    parser.add_argument("--data-seed", type=int, default=31337)
    parser.add_argument("--quick", action="store_true", help="a small check, not a figure")
    parser.add_argument(
        "--results-dir", default=None, help="where to write (default: benchmarks/results)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    n, n_probes, seeds = (
        (300, 5, [0, 1]) if args.quick else (args.n, args.probes, range(args.seeds))
    )
    labels = args.labels or [str(m or "default") for m in args.models]
    if len(labels) != len(args.models):
        raise SystemExit("--labels needs one name per model")
    models = {label: load_model(m) for label, m in zip(labels, args.models, strict=True)}
    simulator_card = next(iter(models.values())).card["simulator"]
    for name, model in models.items():
        if model.card["simulator"] != simulator_card:
            raise SystemExit(f"{name}: another simulator than the first model's")
    log.info("simulating %d clusters ...", n)
    theta, visibility, images = simulate_clusters(simulator_card, n, args.data_seed)
    probe = np.zeros(n, bool)
    probe[probe_indices(visibility, n_probes)] = True
    res = {
        "environment": environment("cpu"),
        "n": n,
        "n_probes": int(probe.sum()),
        "data_seed": args.data_seed,
        "seeds": list(seeds),
        "quick": args.quick,
        "models": {},
    }
    for name, model in models.items():
        log.info("model %s ...", name)
        features = embedded_features(model, images)
        res["models"][name] = {
            "runs": repeat_test(model, theta, visibility, features, probe, seeds)
        }
    write_results(NAME, res, _markdown(res), args.results_dir)
    return res


if __name__ == "__main__":
    main()
