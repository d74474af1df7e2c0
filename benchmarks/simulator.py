"""Throughput and memory of the cluster-image simulator, against a per-star reference renderer.

Run ``python -m benchmarks.simulator [--device cpu|cuda] [--threads N] [--batch B] [--repeats R]``.
Writes ``benchmarks/results/simulator.json`` and ``.md`` (on CUDA: ``simulator_cuda.*``).
``--marginalise-physics`` measures the simulator with [Fe/H], R_V and the IMF drawn per cluster
(:mod:`simulators.nuisance`) instead, with the nominal simulator's prior-draw rate measured in the
same run as its baseline, and writes ``simulator_marginal.*``.

Measured, in one run on one machine:

* cutouts/s at prior draws (half clusters, half backgrounds: what training sees) for the preset;
* cutouts/s for clusters only at fixed age/size/A_V and log M = 3, 4, 5, 5.5 (cost grows with the
  number of individually drawn stars);
* peak memory (CPU: max RSS of the process; CUDA: max allocated);
* baseline: the star lists of a few simulated cutouts drawn by
  :func:`simulators.render.render_stars_reference` (exact effective PSF per star, a Python loop) vs
  the batched phase renderer: the speed ratio and the largest pixel difference.
"""

from __future__ import annotations

import argparse
import logging
import math
import resource
import time

import numpy as np
import torch

from benchmarks.records import environment, results_name, write_results
from sbicluster.devices import resolve_device
from simulators.background import StarList
from simulators.cluster import ClusterSimulator, SimulatorOptions
from simulators.render import render_stars_reference

log = logging.getLogger(__name__)


GOAL_CUTOUTS_PER_S = {"cpu": 500, "cuda": 20_000}
"""Throughput goals at prior draws for the default preset: 2-core CPU and one H100."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(sim: ClusterSimulator, n: int, repeats: int, seed: int, **kw) -> dict:
    dev = sim.device
    g = torch.Generator(device=dev).manual_seed(seed)
    sim.simulate(
        min(n, 32), g, **{k: (v[: min(n, 32)] if v is not None else None) for k, v in kw.items()}
    )  # warm-up
    times, cpu, stars = [], [], []
    for _ in range(repeats):
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        b = sim.simulate(n, g, **kw)
        _sync(dev)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        stars.append(float(b.nuisances["n_stars"].float().mean()))
    best, med = min(times), float(np.median(times))
    return {
        "batch": n,
        "repeats": repeats,
        "cutouts_per_s_best": n / best,
        "cutouts_per_s_median": n / med,
        "cutouts_per_cpu_s": n / min(cpu),
        "mean_drawn_cluster_stars": float(np.mean(stars)),
    }


def _reference_ratio(sim: ClusterSimulator, n: int, seed: int) -> dict:
    """Render the same star lists with the batched renderer and the per-star reference."""
    g = torch.Generator(device=sim.device).manual_seed(seed)
    theta = sim.prior.sample(n, g, device=sim.device)
    theta[:, 1] = 4.0  # moderately rich clusters
    label = torch.ones(n, dtype=torch.long, device=sim.device)
    gamma = torch.full((n,), 2.8, device=sim.device)
    centre = torch.full((n, 2), (sim.instrument.image_size - 1) / 2, device=sim.device)
    from simulators.profiles import eff_core_radius

    r_h = 10 ** theta[:, 2] / sim.instrument.pc_per_pixel
    a = eff_core_radius(r_h, gamma, sim.options.eff_truncation)
    stars, _, _, _ = sim.draw_clusters(
        sim.populations[0], 0, theta, gamma, centre, a, 10 * r_h, 2 * r_h, g
    )
    fstars, _ = sim.field.stars(torch.full((n,), 0.02, device=sim.device), g)
    allst = StarList.cat([stars, fstars])
    del label
    sim.renderer.render(
        n, allst.sample_index, allst.y, allst.x, allst.flux
    )  # warm-up (work buffer, FFT plans)
    _sync(sim.device)
    t0 = time.perf_counter()
    fast = sim.renderer.render(n, allst.sample_index, allst.y, allst.x, allst.flux)
    _sync(sim.device)
    t_fast = time.perf_counter() - t0
    si = allst.sample_index.cpu().numpy()
    y, x, f = (t.double().cpu().numpy() for t in (allst.y, allst.x, allst.flux))
    t0 = time.perf_counter()
    ref = np.stack(
        [
            render_stars_reference(
                sim.psfs,
                sim.instrument.image_size,
                y[si == i],
                x[si == i],
                f[si == i],
                radius_px=sim.renderer.radius,
            )
            for i in range(n)
        ]
    )
    t_ref = time.perf_counter() - t0
    diff = np.abs(fast.cpu().double().numpy() - ref)
    peak = ref.max(axis=(-2, -1), keepdims=True)
    return {
        "cutouts": n,
        "stars": int(len(si)),
        "phase_renderer_s": t_fast,
        "reference_s": t_ref,
        "speedup": t_ref / t_fast,
        "max_abs_diff_over_peak": float((diff / peak).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="m83-wfc3")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--results-dir", default=None, help="where to write (default: benchmarks/results)"
    )
    parser.add_argument(
        "--marginalise-physics",
        action="store_true",
        help="measure the simulator that draws [Fe/H], R_V and the IMF per cluster",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="renderer chunk size (default: the simulator's default on CPU, 1024 on CUDA)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    chunk = args.chunk or (1024 if dev.type == "cuda" else SimulatorOptions().chunk_size)
    t0 = time.perf_counter()
    sim = ClusterSimulator(
        args.preset, device=dev, chunk_size=chunk, physics_nuisance=args.marginalise_physics
    )
    build_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res = {
        "environment": environment(str(dev)),
        "preset": args.preset,
        "build_s": build_s,
        "options": {k: v for k, v in sim.card()["options"].items()},
    }
    log.info("prior draws ...")
    res["prior_draws"] = _rate(sim, args.batch, args.repeats, 0)
    if args.marginalise_physics:  # same-run baseline: the nominal physics, same chunk size
        log.info("prior draws, nominal physics (baseline) ...")
        nominal = ClusterSimulator(args.preset, device=dev, chunk_size=chunk)
        res["prior_draws_nominal_physics"] = _rate(nominal, args.batch, args.repeats, 0)
        del nominal
    # same-run baseline for the chunk size: twice the FFT chunk (same images, other cache use)
    sim.renderer.chunk_size = 2 * chunk
    log.info("prior draws, FFT chunks of %d ...", 2 * chunk)
    res["prior_draws_double_chunk"] = _rate(sim, args.batch, args.repeats, 0)
    sim.renderer.chunk_size = chunk
    res["by_log_mass"] = {}
    for lm in (3.0, 4.0, 5.0, 5.5):
        nuisances = [0.0, 3.1] if args.marginalise_physics else []  # solar, R_V = 3.1
        theta = (
            torch.tensor([[8.0, lm, math.log10(3.0), 1.0, *nuisances]], device=dev)
            .expand(args.batch, 4 + len(nuisances))
            .contiguous()
        )
        log.info("log M = %.1f ...", lm)
        res["by_log_mass"][f"{lm:.1f}"] = _rate(
            sim,
            args.batch,
            args.repeats,
            1,
            theta=theta,
            label=torch.ones(args.batch, dtype=torch.long, device=dev),
        )
    log.info("reference renderer ...")
    res["reference_baseline"] = _reference_ratio(sim, 4, 2)
    res["peak_memory_MB"] = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    res["load_average"] = [round(x, 2) for x in __import__("os").getloadavg()]
    env = res["environment"]
    pd, rb = res["prior_draws"], res["reference_baseline"]
    pd2 = res["prior_draws_double_chunk"]
    goal = GOAL_CUTOUTS_PER_S["cuda" if dev.type == "cuda" else "cpu"]
    goal_text = (
        f"≥ {goal:,} cutouts/s at prior draws "
        + ("on one H100" if dev.type == "cuda" else "on the 2-core CPU")
        + " for the default preset"
    )
    goal_met = bool(pd["cutouts_per_s_median"] >= goal)
    res["goal"] = {"cutouts_per_s": goal, "met": goal_met, "statistic": "median prior-draw rate"}
    physics = "physics-marginalised, " if args.marginalise_physics else ""
    lines = [
        f"# Simulator throughput ({args.preset}, {physics}{dev.type})",
        "",
        f"Command: `{env['command']}` — {env['date_utc']}, git {env['git_commit']}",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, torch threads {env['torch_threads']})"
        + (f", GPU {env.get('gpu')}" if "gpu" in env else "")
        + f"; torch {env['versions']['torch']}",
        "",
        f"Simulator construction: {build_s:.1f} s. Batch {args.batch}, best/median of {args.repeats}.",
        "",
        "| workload | cutouts/s wall (best) | cutouts/s wall (median) | cutouts per CPU-second | mean drawn cluster stars |",
        "|---|---|---|---|---|",
        f"| prior draws (50 % clusters), FFT chunks of {chunk} | {pd['cutouts_per_s_best']:.0f} | {pd['cutouts_per_s_median']:.0f} | {pd['cutouts_per_cpu_s']:.0f} | {pd['mean_drawn_cluster_stars']:.0f} |",
        f"| same, FFT chunks of {2 * chunk} (baseline) | {pd2['cutouts_per_s_best']:.0f} | {pd2['cutouts_per_s_median']:.0f} | {pd2['cutouts_per_cpu_s']:.0f} | {pd2['mean_drawn_cluster_stars']:.0f} |",
    ]
    if "prior_draws_nominal_physics" in res:
        pn = res["prior_draws_nominal_physics"]
        lines.append(
            f"| same, nominal physics (baseline) | {pn['cutouts_per_s_best']:.0f} | {pn['cutouts_per_s_median']:.0f} | {pn['cutouts_per_cpu_s']:.0f} | {pn['mean_drawn_cluster_stars']:.0f} |"
        )
    at_nominal = ", [Fe/H] 0, R_V 3.1" if args.marginalise_physics else ""
    for lm, r in res["by_log_mass"].items():
        lines.append(
            f"| clusters, log M = {lm} (log age 8, r_h 3 pc, A_V 1{at_nominal}) | {r['cutouts_per_s_best']:.0f} | "
            f"{r['cutouts_per_s_median']:.0f} | {r['cutouts_per_cpu_s']:.0f} | {r['mean_drawn_cluster_stars']:.0f} |"
        )
    lines += [
        "",
        f"Peak memory: {res['peak_memory_MB']:.0f} MB ({'max allocated' if dev.type == 'cuda' else 'max RSS of the process'}).",
        "",
        "## Baseline: per-star reference renderer on the same star lists",
        "",
        f"{rb['cutouts']} cutouts, {rb['stars']} stars (log M = 4 clusters + field): phase renderer {rb['phase_renderer_s'] * 1e3:.1f} ms, "
        f"reference {rb['reference_s']:.2f} s → **{rb['speedup']:.0f}× faster**; largest pixel difference "
        f"{100 * rb['max_abs_diff_over_peak']:.2f} % of the image peak.",
        "",
        f"Goal for this device: {goal_text}. Median prior-draw rate in this run: "
        f"{pd['cutouts_per_s_median']:.0f} cutouts/s → **{'met' if goal_met else 'missed'}**.",
        "",
        "Wall-clock rates drop when other jobs share the CPU (load average recorded below);",
        "cutouts per CPU-second (process time of all threads) is the contention-robust figure.",
        f"Load average at the end of the run: {res['load_average']}.",
    ]
    name = "simulator_marginal" if args.marginalise_physics else "simulator"
    write_results(results_name(name, str(dev)), res, "\n".join(lines), args.results_dir)
    return res


if __name__ == "__main__":
    main()
