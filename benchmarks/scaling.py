"""Scaling out on one machine: simulation, training and inference in 1 and 2 processes, each
against the single-process path in the same run, and training memory as the pool grows.

Four measurements:

1. **Simulation** of ``--n-simulate`` cutouts of the preset: the single-process pool writer
   (:func:`sbicluster.training.write_dataset`, what ``sbicluster train --pool`` runs, all torch
   threads) against :func:`sbicluster.pool.simulate_pool` with 1 and 2 Dask workers (one torch
   thread each). Wall time includes starting the local cluster.
2. **Training** samples/s of :func:`sbicluster.training.train_step` on batches read from that pool
   (embedding ``--embedding``, global batch ``--batch-size``): one process with all torch threads
   (the baseline), one process with one thread, and ``torchrun`` with 2 DDP processes of one thread
   each on the same global batch.
3. **Inference** cutouts/s of ``predict(..., seed)`` with the shipped default model (S draws,
   8 views): one process against :func:`sbicluster.parallel_inference.predict_on_workers` with 1
   and 2 Dask workers, whose results are checked identical to the one-thread single process.
4. **Training memory** (peak RSS of ``sbicluster train --pool-dir`` for ``--memory-steps`` steps)
   on each pool of ``--memory-pools``: the reader holds 24 bytes a sample and reads images batch
   by batch, so RSS should not grow with the pool.

Usage::

    python -m benchmarks.scaling                       # the committed results (minutes)
    python -m benchmarks.scaling --quick --results-dir /tmp/check   # a check, not a rate
    python -m benchmarks.scaling --memory-pools POOL_1e5,POOL_4e5   # with training memory

``--replicate SRC --copies K --out DST`` makes a pool of K × SRC's rows by hard-linking SRC's
shards K times (no new disk space): the reader's memory depends on the number of rows, not on
their content, so repeated rows measure it faithfully.

Writes ``results/scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.records import environment, write_results

__all__ = ["main", "replicate_pool"]

NAME = "scaling"

FLOAT16_DECISION = (
    "Pools stay float32. Training memory does not grow with the pool (above), so compact "
    "storage would only save disk (a 4×10⁵-cutout pool of the default preset is 20 GB), and "
    "float16 is not lossless here: in the brightest cluster cores its rounding reaches a "
    "sizeable fraction of the photon noise (the largest extra variance above)."
)
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# 1. simulation


def _simulation(preset: str, n: int, shard_size: int, work: Path, seed: int) -> dict:
    from sbicluster.pool import simulate_pool
    from sbicluster.training import write_dataset
    from simulators.registry import simulator_for_preset

    simulator = simulator_for_preset(preset)
    out = {}
    t0 = time.perf_counter()
    write_dataset(
        simulator, n, work / "single.h5", torch.Generator().manual_seed(seed), progress=False
    )
    seconds = time.perf_counter() - t0
    out["single process"] = {
        "seconds": seconds,
        "cutouts_per_s": n / seconds,
        "torch_threads": torch.get_num_threads(),
    }
    for workers in (1, 2):
        folder = work / f"pool-{workers}"
        t0 = time.perf_counter()
        simulate_pool(simulator, n, shard_size, folder, seed=seed, workers=workers, progress=False)
        seconds = time.perf_counter() - t0
        out[f"{workers} Dask worker{'s' if workers > 1 else ''}"] = {
            "seconds": seconds,
            "cutouts_per_s": n / seconds,
            "torch_threads": 1,
        }
    same = np.array_equal(_pool_images(work / "pool-1"), _pool_images(work / "pool-2"))
    return {"n": n, "shard_size": shard_size, "runs": out, "pools_identical": bool(same)}


def _pool_images(folder: Path, n: int | None = None) -> np.ndarray:
    """The first ``n`` (default: all) images of a pool folder, float32 e⁻/s."""
    import h5py

    from sbicluster.pool import pool_shard_paths

    parts, held = [], 0
    for path in pool_shard_paths(folder):
        if n is not None and held >= n:
            break
        with h5py.File(path, "r") as f:
            rows = f["images"].shape[0] if n is None else min(n - held, f["images"].shape[0])
            parts.append(f["images"][:rows])
            held += rows
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# 2. training


def _training_rate(
    pool: Path,
    embedding: str,
    batch: int,
    steps: int,
    warmup: int,
    val_size: int,
    seed: int,
    global_batchnorm: bool = True,
) -> dict:
    """Samples/s of ``steps`` timed steps in this process (one process of a DDP run when launched
    by ``torchrun``); every process returns the rate of the global batch."""
    from sbicluster.model import ClusterModel, default_architecture
    from sbicluster.pool import read_index
    from sbicluster.training import DatasetBatches, TrainingConfig, train_step
    from sbicluster.training.distributed import join_process_group
    from sbicluster.training.loop import DataParallel
    from simulators.registry import simulator_from_card

    group = join_process_group(torch.device("cpu"))
    try:
        simulator = simulator_from_card(read_index(pool)["simulator_card"], device="cpu")
        data = DatasetBatches(
            str(pool),
            torch.Generator().manual_seed(seed),
            val_size,
            rank=group.rank,
            world_size=group.world_size,
        )
        arch = default_architecture(embedding, len(simulator.bands), [1.0] * len(simulator.bands))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ClusterModel(
                simulator.prior, simulator.bands, simulator.observation_shape, arch
            )
        parallel = (
            DataParallel(model, group, global_batchnorm=global_batchnorm)
            if group.parallel
            else None
        )
        config = TrainingConfig(batch_size=batch, embedding=embedding)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
        for _ in range(warmup):
            train_step(model, opt, data.next(batch), config, config.lr, False, parallel=parallel)
        group.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            parts = train_step(
                model, opt, data.next(batch), config, config.lr, False, parallel=parallel
            )
        group.barrier()
        seconds = time.perf_counter() - t0
        data.close()
        return {
            "samples_per_s": steps * batch / seconds,
            "seconds": seconds,
            "steps": steps,
            "batch_size": batch,
            "processes": group.world_size,
            "torch_threads": torch.get_num_threads(),
            "total_loss": parts["total"],
        }
    finally:
        group.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _training(
    pool: Path,
    embedding: str,
    batch: int,
    steps: int,
    warmup: int,
    val_size: int,
    seed: int,
    work: Path,
) -> dict:
    threads = torch.get_num_threads()
    common = (pool, embedding, batch, steps, warmup, val_size, seed)
    runs = {f"1 process, {threads} threads (baseline)": _training_rate(*common)}
    torch.set_num_threads(1)
    try:
        runs["1 process, 1 thread"] = _training_rate(*common)
    finally:
        torch.set_num_threads(threads)
    for local_bn in (False, True):
        label = "2 DDP processes (torchrun, gloo), 1 thread each" + (
            ", per-process batch norm" if local_bn else ", global-batch batch norm"
        )
        runs[label] = _torchrun_rate(common, work, local_bn)
    return {"embedding": embedding, "global_batch": batch, "runs": runs}


def _torchrun_rate(common: tuple, work: Path, local_batchnorm: bool) -> dict:
    """The rate of 2 DDP processes launched by ``torchrun`` on ``common``'s workload."""
    pool, embedding, batch, steps, warmup, val_size, seed = common
    out = work / "ddp.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "benchmarks.scaling",
        "--ddp-worker",
        "--pool",
        str(pool),
        "--embedding",
        embedding,
        "--batch-size",
        str(batch),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--val-size",
        str(val_size),
        "--seed",
        str(seed),
        "--worker-out",
        str(out),
        *(["--local-batchnorm"] if local_batchnorm else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# 3. inference


def _inference(pool: Path, n: int, samples: int, views: int, batch: int, seed: int) -> dict:
    from sbicluster.artifact import load_model
    from sbicluster.inference import predict
    from sbicluster.parallel_inference import predict_on_workers

    images = _pool_images(pool, n)
    model = load_model(None, device="cpu")
    options = {
        "num_samples": samples,
        "seed": seed,
        "batch_size": batch,
        "views": views,
        "progress": False,
    }
    runs, results = {}, {}
    threads = torch.get_num_threads()
    for label, thread_count in (
        (f"1 process, {threads} threads (baseline)", threads),
        ("1 process, 1 thread", 1),
    ):
        torch.set_num_threads(thread_count)
        try:
            t0 = time.perf_counter()
            results[label] = predict(model, images, **options)
            seconds = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
        runs[label] = {"seconds": seconds, "cutouts_per_s": n / seconds}
    for workers in (1, 2):
        label = f"{workers} Dask worker{'s' if workers > 1 else ''}"
        t0 = time.perf_counter()
        results[label] = predict_on_workers(
            model,
            images,
            workers=workers,
            chunk_size=max(batch, n // 8 // batch * batch),
            **options,
        )
        seconds = time.perf_counter() - t0
        runs[label] = {"seconds": seconds, "cutouts_per_s": n / seconds}
    reference = results["1 process, 1 thread"]
    identical = {
        label: bool(
            np.array_equal(res.samples, reference.samples)
            and np.array_equal(res.p_cluster, reference.p_cluster)
        )
        for label, res in results.items()
    }
    return {
        "n": n,
        "num_samples": samples,
        "views": views,
        "batch_size": batch,
        "runs": runs,
        "identical_to_one_thread": identical,
    }


# ---------------------------------------------------------------------------------------------
# 4. training memory against pool size


def replicate_pool(source: Path, copies: int, out: Path) -> Path:
    """A pool of ``copies`` × ``source``'s rows whose shards are hard links to ``source``'s.

    Parameters
    ----------
    source : Path
        A complete pool folder.
    copies : int
        How many times its shards are repeated.
    out : Path
        The new pool folder (must not exist).

    Returns
    -------
    Path
        ``out``.
    """
    from sbicluster.pool import INDEX_NAME, pool_shard_paths, read_index, shard_name

    index = read_index(source)
    shards = pool_shard_paths(source)
    out.mkdir(parents=True)
    for k in range(copies):
        for i, path in enumerate(shards):
            os.link(path, out / shard_name(k * len(shards) + i))
    sizes = list(index["shard_sizes"]) * copies
    index = {
        **index,
        "n": sum(sizes),
        "shard_sizes": sizes,
        "replicated_from": str(source.resolve()),
        "copies": copies,
    }
    (out / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n")
    return out


def _train_peak_rss(pool: Path, steps: int, embedding: str, batch: int, work: Path) -> dict:
    """Peak RSS (MiB) of a fresh ``sbicluster train --pool-dir`` process, and its rows.

    The peak is the child's ``VmHWM`` (``/proc/self/status``), which belongs to the program the
    child runs; ``ru_maxrss`` would not do: Linux carries it across ``exec`` from the forked
    copy of this process, so it would report this process's own size."""
    from sbicluster.pool import read_index

    run_dir = work / f"train-{pool.name}"
    code = (
        "import sys\n"
        "from sbicluster.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('PEAK_RSS_KB', int(hwm.split()[1]))\n"
        "sys.exit(rc)\n"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "train",
        "--pool-dir",
        str(pool),
        "--out",
        str(run_dir),
        "--steps",
        str(steps),
        "--embedding",
        embedding,
        "--batch-size",
        str(batch),
        "--device",
        "cpu",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"train failed on {pool}:\n{done.stderr[-3000:]}")
    kb = int(done.stdout.split("PEAK_RSS_KB")[1].split()[0])
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "pool": str(pool),
        "rows": int(read_index(pool)["n"]),
        "peak_rss_mb": kb / 1024,
        "seconds": seconds,
        "steps": steps,
    }


def float16_check(pool: Path, n: int) -> dict:
    """What storing a pool's images as float16 would lose, on its first ``n`` cutouts.

    Per pixel, the float16 rounding error (standard deviation ULP/√12 of a uniform rounding) is
    compared with a lower bound of the pixel's own noise, σ = √((x + sky)·t + n_exp·rn²) / t in
    e⁻/s (the cutout's own photons, the sky, read noise; the galaxy light, which only adds noise,
    is left out), with the exposure time t, exposures n_exp and read noise rn of the pool's
    preset. Values above float16's largest number (65,504) would overflow.

    Returns
    -------
    dict
        ``max_pixel`` (e⁻/s), ``overflowing_pixels``, ``rounding_over_noise`` quantiles (50 %,
        99.99 %, max), ``max_extra_variance`` (the largest fractional increase of a pixel's
        variance), ``max_flux_change`` (largest relative change of a cutout's total flux).
    """
    from sbicluster.pool import read_index

    setups = read_index(pool)["simulator_card"]["preset"]["band_setups"]
    x = _pool_images(pool, n)
    half = x.astype(np.float16)
    step = np.abs(np.nextafter(half, np.float16(np.inf)).astype(np.float64) - half)
    rounding_sd = step / np.sqrt(12.0)
    sigma = np.empty_like(x)
    for b, band in enumerate(setups):
        t, n_exp, rn = band["exposure_time"], band["n_exposures"], band["read_noise"]
        sigma[:, b] = np.sqrt(np.clip(x[:, b] + band["sky"], 0, None) * t + n_exp * rn**2) / t
    ratio = rounding_sd / sigma
    total = x.reshape(len(x), x.shape[1], -1).sum(-1)
    total_half = half.astype(np.float64).reshape(len(x), x.shape[1], -1).sum(-1)
    return {
        "n": int(len(x)),
        "max_pixel": float(x.max()),
        "overflowing_pixels": int((np.abs(x) > 65504).sum()),
        "rounding_over_noise": {q: float(np.quantile(ratio, float(q))) for q in ("0.5", "0.9999")}
        | {"max": float(ratio.max())},
        "max_extra_variance": float((ratio**2).max()),
        "max_flux_change": float(np.max(np.abs(total_half - total) / np.abs(total))),
    }


# ---------------------------------------------------------------------------------------------
# report


def _rate_table(runs: dict, unit: str, key: str) -> list[str]:
    base = next(iter(runs.values()))[key]
    lines = [f"| run | {unit} | × baseline |", "|---|---|---|"]
    for label, run in runs.items():
        lines.append(f"| {label} | **{run[key]:,.0f}** | {run[key] / base:.2f} |")
    return lines


def _markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# Scaling out on one machine",
        "",
        f"Command: `{env['command']}` — {env['date_utc']}, git {env['git_commit']}",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores), no GPU; "
        f"versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}",
        "",
        "Every comparison is within this run, against the single-process path. Two processes "
        "on two cores can at best double a one-thread process; the baseline already uses both "
        "cores through torch's threads, so the gain over it is what running processes instead "
        "of threads buys.",
    ]
    sim = res.get("simulation")
    if sim:
        lines += [
            "",
            f"## Simulation ({sim['n']:,} cutouts, shards of {sim['shard_size']:,})",
            "",
            *_rate_table(sim["runs"], "cutouts/s", "cutouts_per_s"),
            "",
            "The pools simulated with 1 and 2 workers are "
            + ("**bit-identical**." if sim["pools_identical"] else "**NOT identical**."),
        ]
    train = res.get("training")
    if train:
        lines += [
            "",
            f"## Training (`{train['embedding']}` embedding, global batch "
            f"{train['global_batch']}, batches read from the pool)",
            "",
            *_rate_table(train["runs"], "training samples/s", "samples_per_s"),
        ]
    inf = res.get("inference")
    if inf:
        same = inf["identical_to_one_thread"]
        lines += [
            "",
            f"## Inference ({inf['n']:,} cutouts, S = {inf['num_samples']}, "
            f"{inf['views']} views, default model)",
            "",
            *_rate_table(inf["runs"], "cutouts/s", "cutouts_per_s"),
            "",
            "Draws and P(cluster) identical to the one-thread single process: "
            + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in same.items())
            + ".",
        ]
    mem = res.get("memory")
    if mem:
        lines += [
            "",
            "## Training memory against pool size",
            "",
            f"Measured by `{mem.get('environment', env)['command']}` — "
            f"{mem.get('environment', env)['date_utc']}, git "
            f"{mem.get('environment', env)['git_commit']}; peak RSS is the training process's "
            "own `VmHWM`.",
            "",
            "| pool rows | peak RSS of `sbicluster train --pool-dir` | steps |",
            "|---|---|---|",
        ]
        for row in mem["runs"]:
            lines.append(
                f"| {row['rows']:,} | **{row['peak_rss_mb']:,.0f} MiB** | {row['steps']} |"
            )
        lines += ["", mem["note"]]
    f16 = res.get("float16")
    if f16:
        q = f16["rounding_over_noise"]
        lines += [
            "",
            f"## Storing images as float16? ({f16['n']:,} cutouts of the pool)",
            "",
            f"Largest pixel {f16['max_pixel']:,.1f} e⁻/s (float16 overflows above 65,504: "
            f"{f16['overflowing_pixels']} pixels would). Float16 rounding against each "
            f"pixel's own noise (a lower bound of it): median {q['0.5']:.2g}, 99.99th "
            f"percentile {q['0.9999']:.2g}, largest {q['max']:.2g} σ, i.e. up to "
            f"{100 * f16['max_extra_variance']:.1f} % more variance in the brightest pixels; "
            f"total fluxes change by at most {f16['max_flux_change']:.1e} (relative).",
            "",
            res["float16_decision"],
        ]
    if res["quick"]:
        lines += ["", "A `--quick` check run: too little work for rates worth quoting."]
    lines += ["", f"Peak RSS of this benchmark process: {res['peak_rss_mb']:,.0f} MiB."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point; returns the results it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="m83-wfc3")
    parser.add_argument("--n-simulate", type=int, default=None, help="default 16384")
    parser.add_argument("--embedding", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--n-infer", type=int, default=None, help="default 2048")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--memory-pools", default="", help="comma-separated pool folders")
    parser.add_argument("--memory-steps", type=int, default=30)
    parser.add_argument("--float16-pool", default=None, help="pool to test float16 storage on")
    parser.add_argument(
        "--update-memory",
        action="store_true",
        help="measure training memory (and float16) only, keeping the other results",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="comma-separated: simulation,training,inference")
    parser.add_argument("--quick", action="store_true", help="a check, not a rate")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--local-batchnorm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replicate", default=None, help="pool folder to repeat (see above)")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--out", default=None, help="with --replicate: the new pool folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    batch = args.batch_size or (16 if args.quick else 128)
    steps = args.steps or (2 if args.quick else 20)

    if args.replicate:
        replicate_pool(Path(args.replicate), args.copies, Path(args.out))
        return None
    if args.ddp_worker:
        rate = _training_rate(
            Path(args.pool),
            args.embedding,
            batch,
            steps,
            args.warmup,
            args.val_size,
            args.seed,
            global_batchnorm=not args.local_batchnorm,
        )
        if os.environ.get("RANK", "0") == "0":
            Path(args.worker_out).write_text(json.dumps(rate))
        return None

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    n_sim = args.n_simulate or (64 if args.quick else 16384)
    n_infer = args.n_infer or (16 if args.quick else 2048)
    val_size = min(args.val_size, n_sim // 4)
    res = {"environment": environment("cpu"), "quick": args.quick}
    if args.update_memory:  # re-measure memory only; keep the other sections as they were
        from benchmarks.records import RESULTS_DIR

        folder = Path(args.results_dir) if args.results_dir else RESULTS_DIR
        res = json.loads((folder / f"{NAME}.json").read_text())
        skip = {"simulation", "training", "inference"}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        work = Path(tmp)
        if "simulation" not in skip or "training" not in skip or "inference" not in skip:
            log.info("simulation: %d cutouts ...", n_sim)
            res["simulation"] = _simulation(args.preset, n_sim, max(8, n_sim // 4), work, args.seed)
            if "simulation" in skip:
                res.pop("simulation")
        pool = work / "pool-2"
        if "training" not in skip:
            log.info("training: %s embedding, batch %d ...", args.embedding, batch)
            res["training"] = _training(
                pool,
                args.embedding,
                batch,
                steps,
                1 if args.quick else args.warmup,
                val_size,
                args.seed,
                work,
            )
        if "inference" not in skip:
            log.info("inference: %d cutouts ...", n_infer)
            samples = 50 if args.quick else args.samples
            res["inference"] = _inference(
                pool, min(n_infer, n_sim), samples, args.views, 8 if args.quick else 256, args.seed
            )
        pools = [Path(p) for p in args.memory_pools.split(",") if p.strip()]
        if pools:
            runs = []
            for p in pools:
                log.info("training memory on %s ...", p)
                runs.append(_train_peak_rss(p, args.memory_steps, args.embedding, 64, work))
            res["memory"] = {
                "environment": environment("cpu"),
                "runs": runs,
                "note": (
                    "Each run is a fresh process training the `"
                    f"{args.embedding}` embedding, batch 64, for {args.memory_steps} steps, "
                    "then validating on the pool's last 1,024 rows. Pools larger than the "
                    "simulated one repeat its shards as hard links (`--replicate`): the "
                    "reader's memory depends on the number of rows, not on their content."
                ),
            }
        if args.float16_pool:
            log.info("float16 check on %s ...", args.float16_pool)
            res["float16"] = float16_check(Path(args.float16_pool), 2000 if args.quick else 5000)
            res["float16_decision"] = FLOAT16_DECISION
    if not args.update_memory:
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_results(NAME, res, _markdown(res), args.results_dir)
    return res


if __name__ == "__main__":
    main()
