"""Baselines on the same simulations and budget: the paper's binned head, integrated-light NPE.

Two comparisons, measured in one run on one pool of training simulations and one held-out test set:

(A) **Output design.** The reference paper (Bialopetravičius & Narbutis 2020, A&A 633, A148)
    predicts one softmax over a 20 × 10 × 14 (age × A_V × mass) grid plus a 14-bin size head
    (:class:`sbicluster.baselines.BinnedPosterior`, bins turned into densities). It is trained on
    the *same* ResNet embedding architecture as our flow model (same preset, same fixed asinh
    softening, same seeded initial weights), the same simulations in the same order (both read one
    HDF5 pool through :class:`sbicluster.training.DatasetBatches`, seeded identically), the same
    number of steps, batch size, learning rate and weight decay.
(B) **Pixels vs integrated light.** Aperture photometry of the same pool's cluster rows
    (:func:`sbicluster.baselines.photometry.aperture_magnitudes`, radius 8 px ≈ 0.32″ ≈ 7 pc at
    M83, sky from the median of a 20–30 px annulus) feeds an sbi neural spline flow NPE
    (:func:`~sbicluster.baselines.photometry.train_npe`); the gap to the image flow is the
    information the pixels add.

On the test set (cluster samples drawn from the prior with a different seed) every method gives
S posterior draws per cutout and log q of the truth and of its draws; the report has the mean
negative log posterior density of the truth (nats, θ units), bias and robust σ of posterior
medians, the 16–84 % half-width, expected coverage of joint and marginal HPD regions at levels
0.05…0.95, and the inference time per cutout at S draws. Accuracy and coverage are computed by
:func:`sbicluster.diagnostics.evaluate`, the function that judges the shipped model in
``sbicluster diagnose`` (here with ties of the joint HPD credibility split at random, see
:func:`sbicluster.diagnostics.coverage.hpd_credibility_ties`); this module only tabulates them.

Usage::

    python -m benchmarks.baselines                  # defaults: ≈ 11–14 min on 2 idle cores
    python -m benchmarks.baselines --steps 20 --batch-size 32 --pool 1024 --test 64 --samples 200

Writes ``benchmarks/results/baselines.{json,md,png}`` (or into ``--out-dir``).

Defaults (``cpu`` embedding preset, 1600 steps of batch 64 on a 16,384-cutout pool, 1000 test
clusters, S = 1000) were sized from smoke runs: per step ≈ 1.0 s (flow, all 64 rows through the
embedding) and ≈ 0.5 s (binned, cluster rows only) on one contended core, i.e. roughly 0.4 s and
0.2 s on two idle cores; simulating the pool ≈ 1 min, the NPE ≤ 2 min, evaluation ≈ 1–2 min.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.records import RESULTS_DIR, environment, write_results

__all__ = [
    "APERTURE_RADIUS_PX",
    "SKY_ANNULUS_PX",
    "MethodOutput",
    "PoolStream",
    "aperture_pixel_count",
    "summarise",
    "main",
]

NAME = "baselines"
PRESET = "m83-wfc3"
APERTURE_RADIUS_PX = 8.0
"""Aperture radius (px): 0.32″ at 0.0396″/px, ≈ 7 pc at M83 — encloses most of the light of
clusters with r_h ≲ 5 pc."""
SKY_ANNULUS_PX = (20.0, 30.0)
"""Inner and outer radius (px) of the sky annulus (inside the 64 × 64 cutout)."""
LR, WEIGHT_DECAY = 1e-3, 1e-4
METHODS = {
    "flow": "image flow (ours)",
    "binned": "binned softmax (paper design)",
    "npe_phot": "integrated-light NPE",
}

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data
class PoolStream:
    """The flow trainer's view of an HDF5 pool, offered as a simulator to :func:`train_binned`.

    :func:`sbicluster.training.train` reads a ``dataset`` through
    ``DatasetBatches(path, torch.Generator().manual_seed(seed), val_size)`` and takes one
    ``next(batch_size)`` per step. This class builds the same source with the same seed and
    answers each ``simulate(n, generator)`` with ``next(n)``, so the binned baseline sees the
    identical batches in the identical order (the generator argument is ignored).

    Parameters
    ----------
    path : str or Path
        HDF5 file written by :func:`sbicluster.training.write_dataset`.
    seed : int
        The flow's ``TrainingConfig.seed``.
    val_size : int
        The flow's ``TrainingConfig.val_size`` (the pool's last rows, never trained on).
    """

    device = "cpu"

    def __init__(self, path: str | Path, seed: int, val_size: int) -> None:
        from sbicluster.training import DatasetBatches

        self.source = DatasetBatches(str(path), torch.Generator().manual_seed(seed), val_size)

    def simulate(self, n: int, generator: torch.Generator | None = None):  # noqa: ARG002
        """The next ``n`` training rows of the shuffled pool (a SimulationBatch)."""
        return self.source.next(n)

    def validation(self):
        """The held-out tail of the pool (a SimulationBatch)."""
        return self.source.validation()

    def close(self) -> None:
        self.source.close()


def _simulate_clusters(simulator, n: int, seed: int, chunk: int = 256):
    """``n`` cluster cutouts (label 1) with θ from the prior: theta (N, 4), images (N, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    thetas, images = [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        b = simulator.simulate(m, gen, label=torch.ones(m, dtype=torch.long))
        thetas.append(b.theta)
        images.append(b.images)
    return torch.cat(thetas), torch.cat(images)


def aperture_pixel_count(shape: tuple[int, int], radius: float) -> int:
    """Pixels of a centred circular aperture of ``radius`` px on an (H, W) grid.

    The same pixel set as :func:`sbicluster.baselines.photometry.aperture_magnitudes`
    (pixel centres at distance ≤ radius from the cutout centre).
    """
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    return int((np.hypot(xx, yy) <= radius).sum())


def _photometry(images: torch.Tensor, softening: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Aperture asinh magnitudes (N, C) of cutouts (N, C, H, W) in e⁻/s, in chunks."""
    from sbicluster.baselines.photometry import aperture_magnitudes

    return torch.cat(
        [
            aperture_magnitudes(
                images[i : i + chunk],
                APERTURE_RADIUS_PX,
                annulus=SKY_ANNULUS_PX,
                softening=softening,
            )
            for i in range(0, images.shape[0], chunk)
        ]
    )


def _pool_photometry(path: Path, n_train: int, softening: torch.Tensor, chunk: int = 1024):
    """θ (M, 4) and aperture magnitudes (M, C) of the cluster rows among the pool's first n_train."""
    import h5py

    thetas, mags = [], []
    with h5py.File(path, "r") as f:
        for start in range(0, n_train, chunk):
            sl = slice(start, min(n_train, start + chunk))
            keep = torch.as_tensor(f["label"][sl]) == 1
            if not bool(keep.any()):
                continue
            images = torch.as_tensor(f["images"][sl])[keep].float()
            thetas.append(torch.as_tensor(f["theta"][sl])[keep].float())
            mags.append(_photometry(images, softening))
    return torch.cat(thetas), torch.cat(mags)


# ---------------------------------------------------------------------------- training
def _embedding(preset: str, n_bands: int, softening: list[float]):
    """The flow model's ResNet embedding for ``preset`` (same config and input normalisation)."""
    from sbicluster.embedding import EmbeddingConfig, ResNetEmbedding
    from sbicluster.model import default_architecture

    arch = default_architecture(preset, n_bands, softening)
    return ResNetEmbedding(n_bands, softening, EmbeddingConfig.from_dict(arch["embedding"]))


def _flow_summary(flow: dict) -> str:
    """``"8 transforms, 10 bins, 2 × 128 hidden"`` for a flow architecture dictionary."""
    return (
        f"{flow['num_transforms']} transforms, {flow['bins']} bins, "
        f"{flow['hidden_layers']} × {flow['hidden_features']} hidden"
    )


def _train_flow(simulator, args, pool: Path, val_size: int, softening, run_dir: Path):
    from sbicluster.training import TrainingConfig, train

    cfg = TrainingConfig(
        embedding=args.embedding,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_steps=min(100, max(1, args.steps // 10)),
        val_size=val_size,
        val_every=args.steps,
        patience=0,
        checkpoint_every=args.steps,
        seed=args.seed,
        device="cpu",
        softening=list(softening),
        dataset=str(pool),
    )
    t0 = time.perf_counter()
    model = train(simulator, cfg, run_dir, progress=True)
    return model.eval(), time.perf_counter() - t0, cfg.to_dict()


def _train_binned(simulator, args, pool: Path, val_size: int, softening):
    from sbicluster.baselines.binned import BinnedPosterior, BinnedTrainingConfig, train_binned

    # same seeded initialisation as train(): the embedding is built first, so its initial
    # weights equal the flow model's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        emb = _embedding(args.embedding, len(simulator.bands), list(softening))
        model = BinnedPosterior(emb, emb.features, simulator.prior, hidden=args.binned_hidden)
    cfg = BinnedTrainingConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        seed=args.seed,
        device="cpu",
    )
    stream = PoolStream(pool, args.seed, val_size)
    t0 = time.perf_counter()
    try:
        train_binned(stream, model, cfg, progress=True)
    finally:
        stream.close()
    return model.eval(), time.perf_counter() - t0, vars(cfg)


def _train_npe(simulator, args, pool: Path, n_train: int, ap_softening: torch.Tensor):
    from sbicluster.baselines.photometry import train_npe

    t0 = time.perf_counter()
    theta, mags = _pool_photometry(pool, n_train, ap_softening)
    t_phot = time.perf_counter() - t0
    t0 = time.perf_counter()
    posterior = train_npe(
        theta,
        mags,
        simulator.prior,
        density_estimator="nsf",
        max_num_epochs=args.npe_epochs,
        batch_size=256,
        seed=args.seed,
    )
    return posterior, time.perf_counter() - t0, {"photometry_s": t_phot, "n_train": len(theta)}


# ---------------------------------------------------------------------------- evaluation
@dataclass
class MethodOutput:
    """Posterior draws and densities of one method on the test set.

    Attributes
    ----------
    draws : numpy.ndarray
        (N, S, 4) posterior draws, θ units.
    log_prob_true : numpy.ndarray
        (N,) log q(θ*|x), nats in θ units (dex, mag).
    log_prob_draws : numpy.ndarray
        (N, S) log q of each draw under its own posterior.
    seconds_per_cutout : float
        Wall time to produce the S draws of one cutout (s), from the cutout (or its photometry).
    """

    draws: np.ndarray
    log_prob_true: np.ndarray
    log_prob_draws: np.ndarray
    seconds_per_cutout: float


@torch.no_grad()
def _evaluate_flow(model, theta, images, s: int, seed: int, chunk: int = 64) -> MethodOutput:
    from sbicluster.inference import predict

    t0 = time.perf_counter()
    # one view: the posterior draws come from the cutout as given, and the binned head's time
    # below has one embedding pass too
    pred = predict(
        model,
        images,
        num_samples=s,
        generator=torch.Generator().manual_seed(seed),
        views=1,
        progress=False,
    )
    dt = (time.perf_counter() - t0) / len(images)
    lp_true, lp_draws = [], []
    for i in range(0, len(images), chunk):
        feats = model.embed(images[i : i + chunk]).float()
        draws = torch.as_tensor(pred.samples[i : i + chunk]).transpose(0, 1)  # (S, b, 4)
        lp_true.append(model.flow_log_prob(theta[i : i + chunk], feats))
        lp_draws.append(model.flow_log_prob(draws, feats).T)
    return MethodOutput(pred.samples, torch.cat(lp_true).numpy(), torch.cat(lp_draws).numpy(), dt)


@torch.no_grad()
def _evaluate_binned(model, theta, images, s: int, seed: int, chunk: int = 128) -> MethodOutput:
    gen = torch.Generator().manual_seed(seed)
    draws, lp_true, lp_draws, elapsed = [], [], [], 0.0
    for i in range(0, len(images), chunk):
        t0 = time.perf_counter()
        grid, size = model.logits(images[i : i + chunk])
        d = model.sample_from_logits(grid, size, s, gen)  # (b, S, 4)
        elapsed += time.perf_counter() - t0
        draws.append(d)
        lp_true.append(model.log_prob_from_logits(grid, size, theta[i : i + chunk]))
        lp_draws.append(model.log_prob_from_logits(grid, size, d.transpose(0, 1)).T)
    return MethodOutput(
        torch.cat(draws).numpy(),
        torch.cat(lp_true).numpy(),
        torch.cat(lp_draws).numpy(),
        elapsed / len(images),
    )


@torch.no_grad()
def _evaluate_npe(
    posterior,
    prior,
    theta,
    images,
    ap_softening,
    s: int,
    seed: int,
    chunk: int = 200,
    leakage_draws: int = 256,
) -> MethodOutput:
    """sbi NPE on aperture photometry; densities renormalised inside the prior box.

    sbi's flow can put mass outside the prior; draws are rejection-sampled into it, and log q is
    corrected by the in-box fraction a of ``leakage_draws`` raw draws per object (standard error
    of log a ≈ √((1 − a)/(a · leakage_draws)), 0.02 nats for a = 0.9 and 256 draws).
    """
    draws, lp_true, lp_draws, elapsed = [], [], [], 0.0
    with torch.random.fork_rng(devices=[]):  # sbi draws from torch's global generator
        torch.manual_seed(seed)
        for i in range(0, len(images), chunk):
            t0 = time.perf_counter()
            x = _photometry(images[i : i + chunk], ap_softening)
            d = posterior.sample_batched((s,), x=x, show_progress_bars=False)  # (S, b, 4)
            elapsed += time.perf_counter() - t0
            raw = posterior.posterior_estimator.sample(torch.Size([leakage_draws]), condition=x)
            inside = prior.contains(raw.reshape(-1, 4)).reshape(raw.shape[:2]).float().mean(0)
            log_norm = torch.log(inside.clamp(min=1.0 / leakage_draws))
            lp_d = posterior.log_prob_batched(d, x, norm_posterior=False) - log_norm
            lp_t = posterior.log_prob_batched(theta[i : i + chunk][None], x, norm_posterior=False)
            draws.append(d.transpose(0, 1))
            lp_draws.append(lp_d.T)
            lp_true.append(lp_t[0] - log_norm)
    return MethodOutput(
        torch.cat(draws).numpy(),
        torch.cat(lp_true).numpy(),
        torch.cat(lp_draws).numpy(),
        elapsed / len(images),
    )


def summarise(out: MethodOutput, theta: np.ndarray, names, seed: int = 0) -> dict:
    """Metrics of one method on the test set, as :func:`sbicluster.diagnostics.evaluate` computes
    them for ``sbicluster diagnose``.

    Parameters
    ----------
    out : MethodOutput
        Draws and densities.
    theta : numpy.ndarray
        (N, 4) true parameters, θ units.
    names : sequence of str
        Parameter names.
    seed : int
        Seed of the tie-breaking uniforms of the joint coverage (and of evaluate's TARP
        reference points, which this summary does not report).

    Returns
    -------
    dict
        ``nlp`` (:func:`~sbicluster.diagnostics.accuracy.negative_log_density`: mean, standard
        error and median of −log q(θ*|x), nats in θ units), ``accuracy`` (evaluate's
        ``accuracy.overall``: bias, robust σ and RMSE of the posterior medians), ``width``
        (:func:`~sbicluster.diagnostics.accuracy.width_summary`: median and mean over objects of
        (q84 − q16)/2 per parameter, θ units), ``coverage`` (evaluate's joint HPD coverage with
        ties split at random — the binned head's density is piecewise constant — and its marginal
        coverages, as :class:`CoverageResult` dicts) and ``seconds_per_cutout``.
    """
    from sbicluster.diagnostics import evaluate
    from sbicluster.diagnostics.accuracy import negative_log_density, width_summary

    metrics = evaluate(
        theta,
        out.draws,
        names=names,
        log_prob_true=out.log_prob_true,
        log_prob_samples=out.log_prob_draws,
        seed=seed,
        tie_rng=np.random.default_rng(seed),
    )
    return {
        "nlp": negative_log_density(out.log_prob_true),
        "accuracy": metrics["accuracy"]["overall"],
        "width": width_summary(out.draws, names),
        "coverage": {"joint": metrics["coverage"]["joint"], **metrics["coverage"]["marginal"]},
        "seconds_per_cutout": float(out.seconds_per_cutout),
    }


# ---------------------------------------------------------------------------- report
def _fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}"


def _losses(summary: dict, ours: str, other: str, names) -> list[str]:
    """Metrics on which method ``ours`` is worse than ``other`` (for the honest sentence)."""
    a, b = summary[ours], summary[other]
    worse = []
    if a["nlp"]["mean"] > b["nlp"]["mean"]:
        worse.append("mean NLP")
    for n in names:
        if abs(a["accuracy"][n]["bias"]) > abs(b["accuracy"][n]["bias"]):
            worse.append(f"|bias| of {n}")
        if a["accuracy"][n]["robust_sigma"] > b["accuracy"][n]["robust_sigma"]:
            worse.append(f"robust σ of {n}")
    for key in ("joint", *names):
        if a["coverage"][key]["max_abs_deviation"] > b["coverage"][key]["max_abs_deviation"]:
            worse.append(f"coverage error ({key})")
    if a["seconds_per_cutout"] > b["seconds_per_cutout"]:
        worse.append("inference time")
    return worse


def _table(summary: dict, methods: list[str], names, units) -> list[str]:
    head = "| metric | " + " | ".join(METHODS[m] for m in methods) + " |"
    lines = [head, "|---|" + "---|" * len(methods)]

    def row(label, fn, digits=3):
        lines.append(
            f"| {label} | " + " | ".join(_fmt(fn(summary[m]), digits) for m in methods) + " |"
        )

    row("mean −log q(θ*\\|x) (nats, θ units)", lambda s: s["nlp"]["mean"], 2)
    row("median −log q(θ*\\|x)", lambda s: s["nlp"]["median"], 2)
    for n, u in zip(names, units, strict=True):
        row(f"{n}: bias of median ({u})", lambda s, n=n: s["accuracy"][n]["bias"])
        row(f"{n}: robust σ of median ({u})", lambda s, n=n: s["accuracy"][n]["robust_sigma"])
        row(f"{n}: width (q84−q16)/2, median ({u})", lambda s, n=n: s["width"][n]["median"])
        row(
            f"{n}: max \\|coverage − nominal\\|",
            lambda s, n=n: s["coverage"][n]["max_abs_deviation"],
        )
    row(
        "joint HPD: max \\|coverage − nominal\\|",
        lambda s: s["coverage"]["joint"]["max_abs_deviation"],
    )
    lines.append(
        "| coverage verdict (joint; "
        + ", ".join(names)
        + ") | "
        + " | ".join(
            "; ".join(summary[m]["coverage"][k]["verdict"] for k in ("joint", *names))
            for m in methods
        )
        + " |"
    )
    row("inference time per cutout (ms)", lambda s: 1e3 * s["seconds_per_cutout"], 2)
    return lines


def _markdown(res: dict, names, units, figure: str) -> str:
    env, b, s = res["environment"], res["budget"], res["summary"]
    n_test, band = res["test"]["n"], res["coverage_band_halfwidth_at_0.5"]
    lines = [
        "# Baselines: the paper's binned head and integrated-light NPE vs the image flow",
        "",
        f"<!-- written by `{env['command']}` on {env['date_utc']}, git {env['git_commit']} -->",
        "",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, torch threads {env['torch_threads']}), "
        f"device {env['device']}; python {env['python']}, torch {env['versions'].get('torch')}, "
        f"sbi {env['versions'].get('sbi')}, zuko {env['versions'].get('zuko')}.",
        "",
        "## Budget (identical for the two image models)",
        "",
        f"- Simulator `{PRESET}`, {b['pool']} pre-simulated cutouts (seed {res['seed']}, "
        f"{b['pool_cluster_fraction']:.0%} clusters, {b['pool_wall_s']:.0f} s); the last "
        f"{b['val_size']} are held out (the flow's validation set and the source of the asinh "
        f"softening), the first {b['n_train']} are trained on.",
        f"- Both image models: embedding preset `{b['embedding']}` (same ResNet, same softening "
        f"{', '.join(f'{v:.4g}' for v in b['softening_e_per_s'])} e⁻/s, same initial weights), "
        f"{b['steps']} steps of batch {b['batch_size']} read in the same order from the pool "
        f"(≈ {b['epochs']:.1f} epochs; both through the trainer's `DatasetBatches` with the same "
        f"seed), AdamW lr {LR:g}, weight decay {WEIGHT_DECAY:g}.",
        f"  - flow: NSF posterior ({_flow_summary(b['flow_architecture'])}) + classifier + "
        f"visibility heads (background rows feed the heads), warm-up {b['flow_config']['warmup_steps']} steps + cosine decay, gradient clip "
        f"{b['flow_config']['grad_clip']:g}, final weights (no early stopping); "
        f"**{b['flow_wall_s']:.0f} s** ({b['flow_wall_s'] / b['steps']:.2f} s/step).",
        f"  - binned: the paper's 20 × 10 × 14 grid softmax + 14-bin size softmax (hidden "
        f"{b['binned_hidden']}), cluster rows only, cosine decay; **{b['binned_wall_s']:.0f} s** "
        f"({b['binned_wall_s'] / b['steps']:.2f} s/step).",
        f"- Integrated-light NPE: sbi `nsf` on the {b['npe']['n_train']} cluster rows of the same "
        f"training part, 3 aperture asinh magnitudes (radius {APERTURE_RADIUS_PX:g} px = "
        f"{APERTURE_RADIUS_PX * res['pixel_scale_arcsec']:.2f}″, sky = median of a "
        f"{SKY_ANNULUS_PX[0]:g}–{SKY_ANNULUS_PX[1]:g} px annulus, softening = pixel noise × "
        f"√{b['aperture_pixels']}), ≤ {b['npe_epochs']} epochs with sbi's early stopping; "
        f"photometry {b['npe']['photometry_s']:.1f} s, training **{b['npe_wall_s']:.0f} s**.",
        "",
        f"Test set: {n_test} clusters drawn from the prior (seed {res['test']['seed']}), "
        f"{res['samples']} draws each. Coverage at levels 0.05…0.95 (joint HPD from log q of the "
        f"truth and of the draws, ties of the piecewise-constant binned density split at random; "
        f"marginals from 1-D HPD intervals); with {n_test} objects the 99 % binomial band at "
        f"level 0.5 is ± {band:.3f}, so smaller differences in coverage error are noise.",
        f"Other phases (s): pool {b['pool_wall_s']:.0f}, "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in res["phase_wall_s"].items())
        + f"; whole run {res['total_wall_s']:.0f} s.",
        "",
        "## (A) Output design: flow vs the paper's binned softmax (same embedding and data)",
        "",
        *_table(s, ["flow", "binned"], names, units),
        "",
        _honest(res, "binned", "the binned softmax head"),
        "",
        "## (B) Pixels vs integrated light: image flow vs aperture-photometry NPE",
        "",
        *_table(s, ["flow", "npe_phot"], names, units),
        "",
        "Widths of the integrated-light posterior over those of the image flow (median over test "
        "objects; > 1 means the pixels add information): "
        + ", ".join(
            f"{n} {s['npe_phot']['width'][n]['median'] / s['flow']['width'][n]['median']:.2f}×"
            for n in names
        )
        + ".",
        "",
        _honest(res, "npe_phot", "the integrated-light NPE"),
        "",
        f"![coverage and widths]({figure})",
        "",
        "Times are wall-clock on a possibly shared machine; inference time covers the S draws "
        "from the cutout (flow: `predict`, embedding + heads + sampling; binned: embedding + "
        "multinomial draws; NPE: aperture photometry + sbi `sample_batched` with rejection into "
        "the prior box), not the log-density evaluations used for coverage.",
    ]
    return "\n".join(lines)


def _honest(res: dict, other: str, label: str) -> str:
    worse = res["flow_worse_than"][other]
    if not worse:
        return f"On this run the flow is at least as good as {label} on every metric above."
    return (
        f"**Where the flow is not better than {label}:** "
        + "; ".join(worse)
        + ". (Differences within the noise quoted above are not significant.)"
    )


def _figure(summary: dict, names, units, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["joint", *names]
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.5))
    colours = {"flow": "C0", "binned": "C1", "npe_phot": "C2"}
    for ax, key in zip(axes[0], keys, strict=True):
        ref = summary["flow"]["coverage"][key]
        lv = np.asarray(ref["levels"])
        ax.fill_between(
            lv,
            np.asarray(ref["band_low"]) - lv,
            np.asarray(ref["band_high"]) - lv,
            color="0.85",
            label="99 % band",
        )
        for m, c in colours.items():
            cov = summary[m]["coverage"][key]
            ax.plot(lv, np.asarray(cov["empirical"]) - lv, "o-", ms=3, color=c, label=METHODS[m])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"coverage: {key}")
        ax.set_xlabel("nominal credibility")
    axes[0, 0].set_ylabel("empirical − nominal")
    axes[0, 0].legend(fontsize=7)
    x = np.arange(len(colours))
    for ax, n, u in zip(axes[1, :4], names, units, strict=True):
        vals = [summary[m]["width"][n]["median"] for m in colours]
        sig = [summary[m]["accuracy"][n]["robust_sigma"] for m in colours]
        ax.bar(x - 0.2, vals, 0.4, color=list(colours.values()), label="posterior (q84−q16)/2")
        ax.bar(
            x + 0.2,
            sig,
            0.4,
            color=list(colours.values()),
            alpha=0.45,
            hatch="//",
            label="robust σ of medians",
        )
        ax.set_xticks(x, ["flow", "binned", "NPE phot"])
        ax.set_title(f"{n} ({u})")
    axes[1, 0].legend(fontsize=7)
    ax = axes[1, 4]
    ax.bar(
        x,
        [summary[m]["nlp"]["mean"] for m in colours],
        yerr=[summary[m]["nlp"]["stderr"] for m in colours],
        color=list(colours.values()),
    )
    ax.set_xticks(x, ["flow", "binned", "NPE phot"])
    ax.set_title("mean −log q(θ*|x) (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(out_dir: Path | None, results: dict, markdown: str) -> tuple[Path, Path]:
    if out_dir is None:
        return write_results(NAME, results, markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{NAME}.json", out_dir / f"{NAME}.md"
    json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


# ---------------------------------------------------------------------------- main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1600, help="optimiser steps of each image model")
    p.add_argument("--batch-size", type=int, default=64, help="simulations per step")
    p.add_argument(
        "--embedding",
        default="cpu",
        choices=["small", "cpu", "paper"],
        help="embedding / model preset shared by both image models",
    )
    p.add_argument(
        "--pool", type=int, default=16384, help="training simulations (incl. validation)"
    )
    p.add_argument("--test", type=int, default=1000, help="held-out test clusters")
    p.add_argument("--samples", type=int, default=1000, help="posterior draws per test cutout")
    p.add_argument("--seed", type=int, default=0, help="pool / training seed; test seed derived")
    p.add_argument("--binned-hidden", type=int, default=256, help="hidden width of binned heads")
    p.add_argument("--npe-epochs", type=int, default=200, help="epoch cap of the photometry NPE")
    p.add_argument(
        "--out-dir", type=Path, default=None, help=f"where results go (default {RESULTS_DIR})"
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the pool and trained models here (default: a removed temp dir)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results written to ``baselines.json``."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="baselines-") as tmp:
            return _run(args, Path(tmp))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    return _run(args, args.work_dir)


def _run(args: argparse.Namespace, work: Path) -> dict:
    from sbicluster.training import estimate_softening, write_dataset
    from simulators.cluster import ClusterSimulator

    t_start = time.perf_counter()
    simulator = ClusterSimulator(PRESET)
    prior = simulator.prior
    names, units = list(prior.names), list(prior.units)
    val_size = min(1024, args.pool // 8)
    n_train = args.pool - val_size
    test_seed = args.seed + 1_000_003

    logger.info("simulating the training pool: %d cutouts", args.pool)
    t0 = time.perf_counter()
    pool = write_dataset(
        simulator,
        args.pool,
        work / "pool.h5",
        torch.Generator().manual_seed(args.seed),
        progress=True,
    )
    t_pool = time.perf_counter() - t0
    stream = PoolStream(pool, args.seed, val_size)
    softening = estimate_softening(stream.validation().images)
    cluster_fraction = float(stream.source.label_fraction())
    stream.close()
    n_ap = aperture_pixel_count(simulator.observation_shape[1:], APERTURE_RADIUS_PX)
    ap_softening = torch.tensor(softening) * math.sqrt(n_ap)

    logger.info("training the flow: %d steps of %d", args.steps, args.batch_size)
    flow, t_flow, flow_cfg = _train_flow(simulator, args, pool, val_size, softening, work / "flow")
    logger.info("flow trained in %.0f s; training the binned head", t_flow)
    binned, t_binned, binned_cfg = _train_binned(simulator, args, pool, val_size, softening)
    logger.info("binned head trained in %.0f s; training the photometry NPE", t_binned)
    npe, t_npe, npe_info = _train_npe(simulator, args, pool, n_train, ap_softening)
    logger.info("NPE trained in %.0f s; simulating %d test clusters", t_npe, args.test)

    t0 = time.perf_counter()
    theta, images = _simulate_clusters(simulator, args.test, test_seed)
    phases = {"test_simulation": time.perf_counter() - t0}
    evaluators = {
        "flow": lambda: _evaluate_flow(flow, theta, images, args.samples, test_seed),
        "binned": lambda: _evaluate_binned(binned, theta, images, args.samples, test_seed),
        "npe_phot": lambda: _evaluate_npe(
            npe, prior, theta, images, ap_softening, args.samples, test_seed
        ),
    }
    outputs = {}
    for m, evaluate in evaluators.items():
        logger.info("evaluating the %s", METHODS[m])
        t0 = time.perf_counter()
        outputs[m] = evaluate()
        phases[f"evaluate_{m}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    th = theta.numpy()
    summary = {m: summarise(o, th, names, seed=test_seed) for m, o in outputs.items()}
    phases["metrics"] = time.perf_counter() - t0

    lo, hi = (
        summary["flow"]["coverage"]["joint"]["band_low"],
        summary["flow"]["coverage"]["joint"]["band_high"],
    )
    mid = int(np.argmin(np.abs(np.asarray(summary["flow"]["coverage"]["joint"]["levels"]) - 0.5)))
    results = {
        "environment": environment("cpu"),
        "seed": args.seed,
        "preset": PRESET,
        "pixel_scale_arcsec": float(simulator.instrument.pixel_scale),
        "parameters": {"names": names, "units": units},
        "budget": {
            "pool": args.pool,
            "pool_wall_s": t_pool,
            "pool_cluster_fraction": cluster_fraction,
            "val_size": val_size,
            "n_train": n_train,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "epochs": args.steps * args.batch_size / n_train,
            "embedding": args.embedding,
            "softening_e_per_s": softening,
            "flow_config": flow_cfg,
            "flow_architecture": flow.architecture["flow"],
            "flow_wall_s": t_flow,
            "binned_config": binned_cfg,
            "binned_hidden": args.binned_hidden,
            "binned_wall_s": t_binned,
            "npe_epochs": args.npe_epochs,
            "npe_wall_s": t_npe,
            "npe": npe_info,
            "aperture_radius_px": APERTURE_RADIUS_PX,
            "sky_annulus_px": list(SKY_ANNULUS_PX),
            "aperture_pixels": n_ap,
            "aperture_softening_e_per_s": ap_softening.tolist(),
        },
        "test": {"n": args.test, "seed": test_seed},
        "phase_wall_s": phases,
        "samples": args.samples,
        "coverage_band_halfwidth_at_0.5": 0.5 * (hi[mid] - lo[mid]),
        "summary": summary,
        "flow_worse_than": {m: _losses(summary, "flow", m, names) for m in ("binned", "npe_phot")},
    }
    out_dir = args.out_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_path = out_dir / f"{NAME}.png"
    _figure(summary, names, units, fig_path)
    results["total_wall_s"] = time.perf_counter() - t_start
    paths = _write(args.out_dir, results, _markdown(results, names, units, fig_path.name))
    logger.info("wrote %s, %s and %s in %.0f s", *paths, fig_path, results["total_wall_s"])
    return results


if __name__ == "__main__":
    main()
