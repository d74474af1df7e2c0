"""The ``sbicluster`` command line: simulate, simulate-pool, train, infer, corner, diagnose, demo,
population.

Each subcommand is a thin layer over the Python API; this module owns argument parsing, the
mapping of errors to one-line messages and exit codes, and logging set-up. It holds no science
of its own.

Exit codes: 0 success; 2 bad input or an output that exists without ``--overwrite`` (one line
``sbicluster: error: ...`` on stderr, nothing written); 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when
interrupted: ``train`` first writes a checkpoint and says how to resume.

``train`` also runs as several data-parallel processes under ``torchrun -m sbicluster train``
(:mod:`sbicluster.training.distributed`); rank 0 alone reports.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

log = logging.getLogger("sbicluster")


def _bands(text: str | None) -> list[str] | None:
    return None if text is None else [b.strip() for b in text.split(",") if b.strip()]


def _progress() -> bool:
    """Progress bars only on an interactive terminal (quiet in pipes, logs and CI)."""
    return sys.stderr.isatty()


def _add_views_argument(parser: argparse.ArgumentParser) -> None:
    from .inference import SYMMETRY_VIEWS

    parser.add_argument(
        "--views",
        type=int,
        default=8,
        choices=SYMMETRY_VIEWS,
        help="rotations/mirror images of each cutout over which P(cluster) and visibility are "
        "averaged (default: 8)",
    )


MARGINALISE_HELP = (
    "draw [Fe/H] (-0.75..+0.5), R_V (2.0..5.0) and the IMF (Kroupa/Chabrier) per cluster, so that "
    "posteriors include these physics choices and report [Fe/H] and R_V too (image presets only)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sbicluster`` command."""
    parser = argparse.ArgumentParser(
        prog="sbicluster",
        description="Calibrated posteriors of star-cluster age, mass, size and extinction from multi-band cutouts.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write mock cutouts (FITS) and their truth table")
    p.add_argument(
        "--preset",
        default="m83-wfc3",
        help="instrument preset, or 'toy' for the linear-Gaussian toy (default: m83-wfc3)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="simulate with the simulator recorded in this model's card instead",
    )
    p.add_argument("--n", type=int, default=100, help="number of cutouts (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--cluster-fraction",
        type=float,
        default=0.5,
        help="fraction of cluster cutouts (default: 0.5)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output folder: cutouts.fits and truth.ecsv"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing files")

    p = sub.add_parser(
        "simulate-pool",
        help="simulate a sharded training pool as Dask tasks (local processes or a scheduler)",
    )
    p.add_argument(
        "--preset", default="m83-wfc3", help="instrument preset, or 'toy' (default: m83-wfc3)"
    )
    p.add_argument("--n", type=int, required=True, help="samples in the pool")
    p.add_argument(
        "--shard-size", type=int, default=10_000, help="samples per shard file (default: 10000)"
    )
    p.add_argument("--seed", type=int, default=0, help="the pool's seed (default: 0)")
    p.add_argument("--out", required=True, type=Path, help="pool folder: pool.json and shard-*.h5")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="processes of a local Dask cluster (default: 1)")
    where.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (tcp://host:8786) whose workers see --out",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a different pool already in --out"
    )
    p.add_argument("--marginalise-physics", action="store_true", help=MARGINALISE_HELP)

    p = sub.add_parser(
        "infer",
        help="posterior samples, P(cluster) and visibility for FITS cutouts, or posteriors for "
        "the rows of a photometric catalogue (with a catalogue model such as legus-uvis)",
    )
    p.add_argument(
        "input",
        type=Path,
        nargs="+",
        help="FITS file or folder of cutouts; with --catalog, one large image per band; with a "
        "catalogue model, one catalogue (LEGUS .tab, ECSV or FITS table)",
    )
    p.add_argument(
        "--catalog",
        type=Path,
        help="table of positions (x/y px or ra/dec deg) to cut from large images",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="model directory or built-in name (default, legus-uvis, marginal; default: the "
        "shipped default model)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--samples", type=int, default=1000, help="posterior draws per cutout (default: 1000)"
    )
    p.add_argument(
        "--bands",
        help="comma-separated band of each image HDU/file, overriding FITS FILTER keywords; for "
        "a LEGUS catalogue, the bands of its five magnitude columns (default: from the file name)",
    )
    p.add_argument(
        "--distance-modulus",
        type=float,
        help="m - M of the galaxy (mag); required with a catalogue model",
    )
    p.add_argument(
        "--columns",
        help="column map of a catalogue: id=..,ra=..,dec=..,BAND=MAG:ERR,.. (1-based numbers "
        "for whitespace tables, names for ECSV/FITS; default: LEGUS layout detection)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument(
        "--batch-size", type=int, default=256, help="cutouts per network pass (default: 256)"
    )
    _add_views_argument(p)
    p.add_argument("--save-samples", action="store_true", help="also write samples.npz")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--workers",
        type=int,
        help="split the cutouts over this many local Dask worker processes (same results as "
        "one process)",
    )
    p.add_argument("--scheduler", help="instead of --workers: address of a running Dask scheduler")
    p.add_argument(
        "--chunk-size",
        type=int,
        help="cutouts per Dask task, a multiple of --batch-size (default: 16 batches)",
    )

    p = sub.add_parser("corner", help="corner plots (PNG and PDF) from an infer output folder")
    p.add_argument("outdir", type=Path, help="folder written by `sbicluster infer`")
    p.add_argument("--id", nargs="*", dest="ids", help="cutout ids (default: the first --max)")
    p.add_argument(
        "--max", type=int, default=10, help="most plots when no --id is given (default: 10)"
    )
    p.add_argument(
        "--truth", type=Path, help="truth.ecsv from `sbicluster simulate`, to mark true values"
    )

    p = sub.add_parser("train", help="train a model on simulations generated on the fly")
    p.add_argument(
        "--preset",
        help="instrument preset, a catalogue preset (legus-uvis, legus-acs-uvis), or 'toy' for "
        "the seconds-fast linear-Gaussian toy (default: m83-wfc3; with --pool-dir, the pool's "
        "simulator)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run folder: log.csv, checkpoint/, model/"
    )
    p.add_argument(
        "--embedding",
        help="size of the network: small, cpu or paper (default: cpu on CPU, paper on CUDA); "
        "catalogue for catalogue presets (their default)",
    )
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--batch-size", type=int, help="simulations per step")
    p.add_argument("--time-budget", type=float, help="stop after this many minutes")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (same options; a run that stopped on "
        "its time budget gets a fresh one)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds a previous run, replacing it",
    )
    p.add_argument(
        "--pool",
        type=int,
        help="pre-simulate this many cutouts into OUT/pool.h5 and train on shuffled epochs of "
        "them instead of fresh simulations (the last validation-size rows validate)",
    )
    p.add_argument(
        "--pool-seed", type=int, default=0, help="seed of the pre-simulated pool (default: 0)"
    )
    p.add_argument(
        "--pool-dir",
        type=Path,
        help="train on shuffled epochs of a pool from `sbicluster simulate-pool` (its simulator, "
        "not --preset; the last validation-size rows validate)",
    )
    p.add_argument(
        "--local-batchnorm",
        action="store_true",
        help="under torchrun: each process normalises with its own share of the batch (faster on "
        "CPUs; the default, global-batch statistics, follows the one-process run)",
    )
    p.add_argument("--marginalise-physics", action="store_true", help=MARGINALISE_HELP)
    p.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="bfloat16 autocast of the embedding on a CPU with native bfloat16 (AVX512-BF16 or "
        "AMX); benchmarks/results/training_speed.md measures the gain (default: float32)",
    )
    p.add_argument(
        "--augment-views",
        type=int,
        help="show each training cutout in a random one of the first N rotations and mirror "
        "images of the square (1, 2, 4 or 8; the simulator is unchanged by them, so the "
        "posterior learned is the same; default: 1, the cutouts as simulated)",
    )
    p.add_argument(
        "--classifier-weight",
        type=float,
        help="weight of the classifier's cross entropy in the loss (default: 1; the flow's "
        "negative log density has weight 1)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write the logged losses as TensorBoard events to OUT/tensorboard",
    )
    p.add_argument(
        "--init-from",
        help="start from this trained model's network (a model/ folder written by `sbicluster "
        "train`, before any recalibration) instead of a new one, with a fresh optimizer and "
        "schedule: trains an existing model further; same bands, prior and --embedding",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="peak learning rate of the schedule (default: 0.001 on CPU, 0.0005 on CUDA; a warm "
        "start usually wants less)",
    )
    p.add_argument(
        "--balance-weight",
        type=float,
        help="weight λ of the balanced-NPE penalty that makes posteriors conservative (default: "
        "0, plain NPE; Delaunoy et al. 2023 use 100)",
    )

    p = sub.add_parser(
        "diagnose", help="coverage, SBC, TARP, accuracy and ROC on held-out simulations"
    )
    p.add_argument(
        "--model", type=Path, help="model directory (default: the shipped default model)"
    )
    p.add_argument("--n", type=int, default=2000, help="held-out simulations (default: 2000)")
    p.add_argument(
        "--samples", type=int, default=1000, help="posterior draws per simulation (default: 1000)"
    )
    p.add_argument("--seed", type=int, default=12345, help="test-set seed (default: 12345)")
    _add_views_argument(p)
    p.add_argument(
        "--lc2st-probes",
        type=int,
        default=50,
        help="held-out clusters, spread over visibility, at which the local test L-C2ST runs "
        "(0 skips it; default: 50)",
    )
    p.add_argument(
        "--lc2st-ensemble",
        type=int,
        default=1,
        help="classifiers averaged in L-C2ST, for the data and each null trial alike: steadier "
        "verdicts at that many times the test's cost (default: 1)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")

    p = sub.add_parser(
        "population",
        help="hyper-parameters of the cluster population (mass function, ages, A_V) with NUTS",
    )
    p.add_argument("results", type=Path, help="folder written by `sbicluster infer`")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="least P(cluster) of a catalogue member (default: 0.5)",
    )
    p.add_argument(
        "--visibility-cut",
        type=float,
        default=0.0,
        help="least visibility (S/N measure) of a catalogue member (default: 0, no cut)",
    )
    p.add_argument(
        "--mass-function",
        choices=("powerlaw", "schechter"),
        default="powerlaw",
        help="dN/dM ∝ M^β, or × exp(−M/M_c) (default: powerlaw)",
    )
    p.add_argument(
        "--selection",
        default="auto",
        help="auto (shipped function for these cuts, else estimated by simulation), none "
        "(ignore selection) or a selection.json (default: auto)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="model folder used to estimate a selection function (default: the shipped model)",
    )
    p.add_argument(
        "--selection-sims",
        type=int,
        default=4000,
        help="simulated clusters when a selection function is estimated (default: 4000)",
    )
    p.add_argument("--samples", type=int, default=500, help="NUTS draws per chain (default: 500)")
    p.add_argument("--warmup", type=int, default=300, help="NUTS warm-up steps (default: 300)")
    p.add_argument("--chains", type=int, default=2, help="NUTS chains (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")

    p = sub.add_parser(
        "recalibrate",
        help="fit a per-cutout temperature on a trained model's posterior (new model folder)",
    )
    p.add_argument(
        "--model", type=Path, help="model directory (default: the shipped default model)"
    )
    p.add_argument("--out", required=True, type=Path, help="folder of the recalibrated model")
    p.add_argument(
        "--n",
        type=int,
        default=40_000,
        help="clusters simulated for the fit, a quarter of them validating it (default: 40000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the simulations and the fit; its stream differs from training's and "
        "diagnose's for the same number (default: 0)",
    )
    p.add_argument(
        "--per-dimension",
        action="store_true",
        help="one temperature per base dimension instead of one shared by all",
    )
    p.add_argument(
        "--location",
        action="store_true",
        help="also fit a shift of each base coordinate, for posteriors whose centres are biased",
    )
    p.add_argument(
        "--coverage-factor",
        type=int,
        default=0,
        metavar="N",
        help="also fit a factor on the temperature by predicted visibility (bins 0-20, 20-100, "
        "100+) to the HPD coverage of N further fresh clusters, 100 draws each; 10000 is a "
        "good choice (0: no factor; default: 0)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")

    p = sub.add_parser("demo", help="the whole workflow on a mock field with the shipped model")
    p.add_argument(
        "--model", type=Path, help="model directory (default: the shipped default model)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)"
    )
    p.add_argument("--n", type=int, default=200, help="mock cutouts (default: 200)")
    p.add_argument(
        "--samples", type=int, default=1000, help="posterior draws per cutout (default: 1000)"
    )
    p.add_argument("--seed", type=int, default=2020, help="random seed (default: 2020)")
    p.add_argument("--quick", action="store_true", help="a small, fast run (40 cutouts, 300 draws)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's results")
    return parser


def _simulate(args) -> None:
    from .demo import simulate_to_fits
    from .files import check_writable_dir

    check_writable_dir(args.out)  # before loading a model or building a simulator
    simulator = None
    if args.model is not None:
        from simulators.registry import simulator_from_card

        from .artifact import load_model

        simulator = simulator_from_card(load_model(args.model).card.get("simulator"))
    paths = simulate_to_fits(
        args.out,
        preset=args.preset,
        n=args.n,
        seed=args.seed,
        simulator=simulator,
        cluster_fraction=args.cluster_fraction,
        overwrite=args.overwrite,
        progress=_progress(),
    )
    print(f"{args.n} mock cutouts → {paths[0]}; truth → {paths[1]}")


def _model_card(model) -> dict | None:
    """The card of a model folder or built-in name, or ``None`` if it cannot be read (loading the
    model then reports why)."""
    import json

    from .artifact import resolve_model_dir

    try:
        return json.loads((resolve_model_dir(model) / "card.json").read_text())
    except (OSError, ValueError):
        return None


def _infer_catalog(args) -> None:
    from .catalog_infer import infer_catalog
    from .errors import InputError

    if args.catalog is not None:
        raise InputError(
            "--catalog cuts cutouts from images; a catalogue model reads the photometry table "
            "itself: give the catalogue file as the input"
        )
    if len(args.input) != 1:
        raise InputError("a catalogue model reads one catalogue file; give one input")
    if args.workers is not None or args.scheduler is not None or args.chunk_size is not None:
        raise InputError(
            "--workers, --scheduler and --chunk-size split cutout inference over Dask workers; "
            "a catalogue model runs in one process: drop them"
        )
    result = infer_catalog(
        args.input[0],
        model=args.model,
        distance_modulus=args.distance_modulus,
        bands=None if args.bands is None else tuple(_bands(args.bands)),
        columns=args.columns,
        num_samples=args.samples,
        device=args.device,
        seed=args.seed,
        batch_size=args.batch_size,
        out=args.out,
        overwrite=args.overwrite,
        save_samples=args.save_samples,
        progress=_progress(),
        keep_samples=False,
    )
    flagged = int((result.summary["flag"] != 0).sum())
    print(
        f"{len(result.summary)} catalogue rows ({flagged} flagged) → {args.out}/summary.ecsv, "
        f"{args.out}/posterior.nc"
    )


def _infer(args) -> None:
    from .api import infer
    from .catalog_infer import is_catalogue_card

    card = _model_card(args.model)
    if card is not None and is_catalogue_card(card):
        _infer_catalog(args)
        return
    if args.distance_modulus is not None or args.columns is not None:
        from .errors import InputError

        raise InputError(
            "--distance-modulus and --columns are for catalogue models (e.g. --model legus-uvis); "
            "this model reads FITS cutouts"
        )
    inputs = args.input
    if args.catalog is None and len(inputs) != 1:
        from .errors import InputError

        raise InputError("give one FITS file or folder, or one image per band with --catalog")
    result = infer(
        inputs[0] if args.catalog is None else inputs,
        model=args.model,
        catalog=args.catalog,
        bands=_bands(args.bands),
        num_samples=args.samples,
        device=args.device,
        seed=args.seed,
        batch_size=args.batch_size,
        views=args.views,
        out=args.out,
        overwrite=args.overwrite,
        save_samples=args.save_samples,
        progress=_progress(),
        keep_samples=False,  # draws stream to disk; memory does not grow with N × S
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
    )
    print(f"{len(result.summary)} cutouts → {args.out}/summary.ecsv, {args.out}/posterior.nc")


def _corner(args) -> None:
    from .demo import corner_plots

    paths = corner_plots(args.outdir, ids=args.ids, max_plots=args.max, truth=args.truth)
    n = len({p.with_suffix("") for p in paths})
    formats = "/".join(sorted({p.suffix[1:].upper() for p in paths}))
    print(f"{n} cutout{'' if n == 1 else 's'} plotted ({formats}) in {args.outdir / 'corner'}")


def _train(args) -> None:
    import torch

    from simulators.registry import simulator_for_preset

    from .devices import resolve_device
    from .errors import InputError
    from .training import (
        TrainingConfig,
        check_augmentation,
        check_run_dir,
        default_config,
        load_warm_start,
        train,
        write_dataset,
    )
    from .training.distributed import launched_world_size, select_rank_device

    weight_options = {"classifier": args.classifier_weight, "balance": args.balance_weight}
    for term, weight in weight_options.items():
        if weight is not None and not (math.isfinite(weight) and weight >= 0):
            raise InputError(f"--{term}-weight {weight}: must be a finite number ≥ 0")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise InputError(f"--lr {args.lr}: must be a finite number > 0")
    physics = _physics_options(args)
    select_rank_device()
    device = resolve_device(args.device)
    processes = launched_world_size()
    if processes > 1 and args.pool is not None:
        raise InputError(
            f"--pool would be simulated by each of the {processes} processes: simulate it once "
            "with `sbicluster simulate-pool` and train on it with --pool-dir"
        )
    if args.pool_dir is not None and (
        args.pool is not None or args.preset is not None or args.marginalise_physics
    ):
        raise InputError(
            "--pool-dir trains on that pool with its own simulator: drop --pool, --preset and "
            "--marginalise-physics"
        )
    pool_index = None
    if args.pool_dir is not None:
        from .pool import pool_shard_paths, read_index

        pool_shard_paths(args.pool_dir)  # a complete pool, before any work
        pool_index = read_index(args.pool_dir)
    pool = None if args.pool is None else args.out / "pool.h5"
    dataset = args.pool_dir if args.pool_dir is not None else pool
    overrides = {
        "embedding": args.embedding,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "max_time_s": None if args.time_budget is None else 60.0 * args.time_budget,
        "dataset": None if dataset is None else str(dataset),
        "tensorboard": args.tensorboard or None,
        "cpu_amp": args.cpu_bf16 or None,
        "augment_views": args.augment_views,
        "global_batchnorm": False if args.local_batchnorm else None,
        "init_from": args.init_from,
        "lr": args.lr,
    }
    from simulators.registry import is_catalogue_preset

    if is_catalogue_preset(args.preset):
        # catalogue rows: the MLP embedding, and larger batches (a row costs far less than a cutout)
        overrides["embedding"] = args.embedding or "catalogue"
        overrides["batch_size"] = args.batch_size or 512
    chosen_weights = {k: w for k, w in weight_options.items() if w is not None}
    if chosen_weights:
        overrides["loss_weights"] = {**TrainingConfig().loss_weights, **chosen_weights}
    config = default_config(str(device), **{k: v for k, v in overrides.items() if v is not None})
    if pool_index is not None and pool_index["n"] <= config.val_size:
        raise InputError(
            f"--pool-dir {args.pool_dir}: the pool's {pool_index['n']} samples must exceed "
            f"val_size={config.val_size} (its last rows validate)"
        )
    check_run_dir(args.out, config=config, resume=args.resume, overwrite=args.overwrite)
    if pool_index is not None:
        from simulators.registry import simulator_from_card

        simulator = simulator_from_card(pool_index["simulator_card"], device=device)
    else:
        simulator = simulator_for_preset(args.preset or "m83-wfc3", device=device, **physics)
    check_augmentation(config, simulator)
    if config.init_from and not args.resume:
        load_warm_start(config, simulator)  # before simulating a pool: refuse early
    if pool is not None and not (args.resume and pool.is_file()):
        if args.pool <= config.val_size:
            raise InputError(
                f"--pool {args.pool}: the pool needs more than val_size={config.val_size} "
                "simulations (its last rows validate)"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator(device=simulator.device)
        write_dataset(
            simulator, args.pool, pool, generator.manual_seed(args.pool_seed), progress=_progress()
        )
    model = train(
        simulator,
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=_progress(),
    )
    training = model.card["training"]
    if os.environ.get("RANK", "0") != "0":  # one report for a run of several processes
        return
    print(
        f"training stopped ({training['stop_reason']}) after {training['steps_done']} steps; "
        f"model written to {args.out / 'model'}; training log in {args.out / 'log.csv'}"
    )


def _physics_options(args) -> dict:
    """Simulator options of ``--marginalise-physics`` (image presets only)."""
    if not args.marginalise_physics:
        return {}
    from simulators.registry import TOY_PRESET, is_catalogue_preset

    from .errors import InputError

    if args.preset == TOY_PRESET or is_catalogue_preset(args.preset):
        raise InputError(
            f"--marginalise-physics needs an image preset (m83-wfc3, m31-phat, a TOML), "
            f"not {args.preset!r}"
        )
    return {"physics_nuisance": True}


def _simulate_pool(args) -> None:
    from simulators.registry import simulator_for_preset

    from .pool import simulate_pool

    simulator = simulator_for_preset(args.preset, **_physics_options(args))
    status = simulate_pool(
        simulator,
        args.n,
        args.shard_size,
        args.out,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        progress=_progress(),
    )
    print(
        f"pool of {sum(status.sizes)} samples in {len(status.sizes)} shards → {args.out}; "
        f"train on it with `sbicluster train --pool-dir {args.out} --out RUN`"
    )


def _diagnose(args) -> None:
    from simulators.registry import simulator_from_card

    from .artifact import load_model
    from .devices import resolve_device
    from .diagnostics import run_diagnostics
    from .diagnostics.run import check_report_dir
    from .errors import InputError

    if args.lc2st_probes < 0:
        raise InputError(f"--lc2st-probes {args.lc2st_probes}: must be ≥ 0 (0 skips the test)")
    if args.lc2st_ensemble < 1:
        raise InputError(f"--lc2st-ensemble {args.lc2st_ensemble}: must be ≥ 1")
    check_report_dir(args.out, args.overwrite)
    device = resolve_device(args.device)
    model = load_model(args.model, device=str(device))
    simulator = simulator_from_card(model.card.get("simulator"), device=device)
    run_diagnostics(
        model,
        simulator,
        n=args.n,
        num_samples=args.samples,
        seed=args.seed,
        views=args.views,
        out_dir=args.out,
        overwrite=args.overwrite,
        progress=_progress(),
        lc2st_probes=args.lc2st_probes,
        lc2st_ensemble=args.lc2st_ensemble,
    )
    print(f"diagnostics report: {args.out / 'report.md'}")


def _recalibrate(args) -> None:
    from simulators.registry import simulator_from_card

    from .artifact import load_model, resolve_model_dir, save_model
    from .coverage_factor import CoverageFactorConfig
    from .devices import resolve_device
    from .diagnostics.report import range_label
    from .errors import InputError, OutputExistsError
    from .files import check_writable_dir
    from .recalibration import RecalibrationConfig, recalibrate

    config = RecalibrationConfig(
        n_simulations=args.n,
        seed=args.seed,
        per_dimension=args.per_dimension,
        location=args.location,
        coverage_factor=(
            CoverageFactorConfig(n_simulations=args.coverage_factor)
            if args.coverage_factor
            else None
        ),
    )
    out = check_writable_dir(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(
            f"--out {out} exists; pass --overwrite to replace it or choose another --out"
        )
    if out.exists() and out.resolve() == resolve_model_dir(args.model).resolve():
        raise InputError(f"--out {out} is the --model folder; write the new model elsewhere")
    device = resolve_device(args.device)
    model = load_model(args.model, device=str(device))
    simulator = simulator_from_card(model.card.get("simulator"), device=device)
    new = recalibrate(model, simulator, config, progress=_progress(), log=log.info)
    save_model(new, out, overwrite=args.overwrite)
    record = new.card["recalibration"]
    taus = ", ".join(
        f"{range_label(row['visibility'])}: {row['tau_median']:.2f}"
        for row in record["temperature_by_visibility"]
    )
    factors = "".join(
        f"; coverage factor {range_label(row['predicted_visibility'])}: {row['factor']:g}"
        for row in record.get("coverage_factor", {}).get("bins", [])
    )
    print(
        f"recalibrated model → {out}; validation NLL {record['validation_nll_before']:.4f} → "
        f"{record['validation_nll_after']:.4f} nats per cluster; median τ by visibility {taus}"
        + factors
    )


def _demo(args) -> None:
    from .demo import run_demo

    n, samples = (40, 300) if args.quick else (args.n, args.samples)
    report = run_demo(
        args.out,
        model=args.model,
        n=n,
        num_samples=samples,
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=_progress(),
    )
    print(report)


def _population(args) -> None:
    from .population.fit import NutsConfig
    from .population.report import run_population

    metrics = run_population(
        args.results,
        args.out,
        threshold=args.threshold,
        visibility_cut=args.visibility_cut,
        mass_function=args.mass_function,
        selection=args.selection,
        model=args.model,
        selection_sims=args.selection_sims,
        nuts=NutsConfig(
            num_samples=args.samples, warmup=args.warmup, chains=args.chains, seed=args.seed
        ),
        overwrite=args.overwrite,
        progress=_progress(),
    )
    hyper = ", ".join(f"{k} = {v['mean']:.2f} ± {v['sd']:.2f}" for k, v in metrics["hyper"].items())
    print(f"{metrics['catalogue']['selected']} clusters: {hyper}; report: {args.out / 'report.md'}")


_COMMANDS = {
    "simulate": _simulate,
    "simulate-pool": _simulate_pool,
    "infer": _infer,
    "corner": _corner,
    "train": _train,
    "diagnose": _diagnose,
    "recalibrate": _recalibrate,
    "demo": _demo,
    "population": _population,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sbicluster`` command line; returns the process exit code.

    0 on success; 2 after a user-facing error (one line ``sbicluster: error: ...`` on stderr);
    130 after SIGINT (Ctrl-C) and 143 after SIGTERM that ``train`` caught and checkpointed, or
    130 after Ctrl-C elsewhere.
    """
    from simulators.errors import SimulatorError

    from .errors import SbiclusterError, TrainingInterrupted

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        _COMMANDS[args.command](args)
    except TrainingInterrupted as err:
        print(
            f"sbicluster: training interrupted by {err.signal} at step {err.step}; checkpoint "
            f"written to {err.checkpoint}; continue with the same command plus --resume",
            file=sys.stderr,
        )
        return err.exit_code
    except (SbiclusterError, SimulatorError) as err:
        print(f"sbicluster: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbicluster: interrupted; finished outputs are intact", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
