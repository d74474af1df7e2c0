"""Inference speed: :func:`sbicluster.inference.predict` against sbi's stock ``sample_batched``.

``predict`` runs twice: with one view (the same work as sbi's sampler: one embedding pass and S
draws per cutout, the like-for-like comparison) and with its default 8 symmetric views (seven
more embedding passes for P(cluster) and visibility), whose rate the goal applies to.

Both run the same model (the shipped default if present, otherwise a freshly initialised model of
the ``cpu`` preset on the default instrument's cutout shape, 3 × 64 × 64: speed does not depend
on the weights) on the same cutouts with S posterior draws each, in the same process, so the
ratio is meaningful even on a noisy shared machine. It also records the peak resident memory of a
large-N run with few draws, to show that working memory does not grow with N, and the peak
resident memory of the whole ``sbicluster infer`` command at the default S = 1000 on N = 10,000
mock cutouts from the simulator (``--infer-memory-n``; the draws stream to disk, so it should not
grow with N). That run goes through a separate Python process, whose peak is read with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``.

Usage::

    python -m benchmarks.inference --n 1024        # CPU, N = 1024 (4 chunks), S = 1000
    python -m benchmarks.inference --device cuda --n 8192
    python -m benchmarks.inference --infer-memory-n 0   # skip the infer memory run

Goal of the memory run: peak RSS < 2.5 GB for 10,000 cutouts at S = 1000.

Goals: ≥ 50 cutouts/s at S = 1000 on the 2-core CPU; ≥ 2,000 cutouts/s on one H100.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.records import environment, results_name, write_results
from sbicluster.devices import resolve_device

__all__ = ["main"]

NAME = "inference"


def _model(device: str):
    from sbicluster.artifact import DEFAULT_MODEL_DIR, load_model
    from sbicluster.model import ClusterModel, default_architecture
    from simulators.priors import DEFAULT_PRIOR

    if (DEFAULT_MODEL_DIR / "card.json").is_file():
        return load_model(None, device=device), "shipped default"
    bands = ("WFC3_UVIS_F336W", "WFC3_UVIS_F438W", "WFC3_UVIS_F814W")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ClusterModel(
            DEFAULT_PRIOR, bands, (3, 64, 64), default_architecture("cpu", 3, [0.01] * 3)
        )
    return model.to(device).eval(), "untrained 'cpu' preset (3x64x64)"


def _images(n: int, shape, generator: torch.Generator) -> torch.Tensor:
    """Sky + Gaussian noise + one Gaussian blob per cutout, e-/s (content does not affect speed)."""
    c, h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / 8.0)
    amp = torch.rand(n, c, 1, 1, generator=generator) * 0.5
    return (0.02 + amp * blob + 0.01 * torch.randn(n, c, h, w, generator=generator)).float()


def _rate(fn, n: int, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


_PEAK_OF_CHILD = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({
    "returncode": run.returncode,
    "stderr": run.stderr[-2000:],
    "seconds": time.perf_counter() - t0,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def _peak_rss_of(args: list[str]) -> dict:
    """Run ``args`` in a child of a fresh Python; its peak RSS (MiB), seconds and exit code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd()), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_CHILD, *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout)


def infer_memory(n: int, *, num_samples: int = 1000, views: int = 8, device: str = "cpu") -> dict:
    """Peak RSS of ``sbicluster infer`` (shipped model) on ``n`` simulated mock cutouts.

    The cutouts come from ``sbicluster simulate`` (the default preset) in a temporary folder;
    ``infer`` then runs with ``num_samples`` draws in its own process.
    """
    cmd = [sys.executable, "-m", "sbicluster.cli"]
    with tempfile.TemporaryDirectory(prefix="sbicluster-bench-") as tmp:
        mock = Path(tmp) / "mock"
        sim = _peak_rss_of([*cmd, "simulate", "--n", str(n), "--seed", "4", "--out", str(mock)])
        if sim["returncode"]:
            raise RuntimeError(f"simulate failed: {sim['stderr']}")
        args = ["--samples", str(num_samples), "--views", str(views), "--device", device]
        run = _peak_rss_of(
            [*cmd, "infer", str(mock / "cutouts.fits"), "--out", str(Path(tmp) / "out"), *args]
        )
        if run["returncode"]:
            raise RuntimeError(f"infer failed: {run['stderr']}")
        size = sum(p.stat().st_size for p in (Path(tmp) / "out").iterdir()) / 2**20
    draws_mb = n * num_samples * 4 * 4 / 2**20
    return {
        "n": n,
        "num_samples": num_samples,
        "views": views,
        "seconds": run["seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "draws_float32_mb": draws_mb,
        "output_mb": size,
        "goal_peak_rss_mb": 2500 * 1e6 / 2**20,
        "goal_met": run["peak_rss_mb"] * 2**20 < 2.5e9,
    }


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results written to ``results/inference.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=256, help="cutouts for the speed runs")
    parser.add_argument(
        "--n-sbi", type=int, default=None, help="cutouts for sbi's sample_batched (default n)"
    )
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--results-dir", default=None, help="where to write (default: benchmarks/results)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating timed runs of each sampler"
    )
    parser.add_argument(
        "--memory-n", type=int, default=20_000, help="cutouts of the memory run (S = 10)"
    )
    parser.add_argument(
        "--infer-memory-n",
        type=int,
        default=10_000,
        help="mock cutouts of the `sbicluster infer` memory run at S = --num-samples (0: skip)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sbicluster.inference import predict

    device, s = str(resolve_device(args.device)), args.num_samples
    model, model_name = _model(device)
    gen = torch.Generator().manual_seed(0)
    x = _images(args.n, model.image_shape, gen)
    n_sbi = args.n_sbi or args.n
    x_dev = x[:n_sbi].to(device)
    posterior = model.posterior()

    def ours(views: int = 1):
        predict(
            model,
            x,
            num_samples=s,
            generator=torch.Generator(device).manual_seed(1),
            batch_size=args.batch_size,
            views=views,
            progress=False,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def stock():
        with torch.no_grad():
            posterior.sample_batched((s,), x=x_dev, show_progress_bars=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    ours()  # warm-up
    # alternate the two samplers so that a change of load on a shared machine hits both alike
    rate_ours = rate_sbi = rate_default = 0.0
    for _ in range(args.repeats):
        rate_ours = max(rate_ours, _rate(ours, args.n, 1))
        rate_sbi = max(rate_sbi, _rate(stock, n_sbi, 1))
        rate_default = max(rate_default, _rate(lambda: ours(8), args.n, 1))

    # bounded memory: peak RSS of a large-N run with few draws, against the size of its output
    xm = _images(args.memory_n, model.image_shape, torch.Generator().manual_seed(2))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    pred = predict(
        model, xm, num_samples=10, generator=torch.Generator(device).manual_seed(3), progress=False
    )
    t_mem = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_mb = (pred.samples.nbytes + pred.p_cluster.nbytes + pred.visibility.nbytes) / 2**20
    in_mb = xm.numel() * 4 / 2**20
    low, high = model.prior.low().numpy(), model.prior.high().numpy()
    inside = bool(np.all((pred.samples >= low) & (pred.samples <= high)))

    del pred
    infer_run = (
        infer_memory(args.infer_memory_n, num_samples=s, device=device)
        if args.infer_memory_n
        else None
    )

    goal = 2000.0 if device.startswith("cuda") else 50.0
    results = {
        "environment": environment(device),
        "model": model_name,
        "architecture": model.architecture,
        "image_shape": list(model.image_shape),
        "num_samples": s,
        "n_cutouts": args.n,
        "n_cutouts_sbi": n_sbi,
        "batch_size": args.batch_size,
        "predict_cutouts_per_s": rate_ours,
        "predict_8_views_cutouts_per_s": rate_default,
        "sbi_sample_batched_cutouts_per_s": rate_sbi,
        "speedup": rate_ours / rate_sbi,
        "goal_cutouts_per_s": goal,
        "goal_met": rate_default >= goal,
        "memory_run": {
            "n": args.memory_n,
            "num_samples": 10,
            "seconds": t_mem,
            "peak_rss_before_mb": rss0,
            "peak_rss_after_mb": rss1,
            "input_mb": in_mb,
            "output_mb": out_mb,
            "all_draws_inside_prior": inside,
        },
        "infer_memory_run": infer_run,
    }
    env = results["environment"]
    md = f"""# Inference speed

Command: `{env["command"]}` — {env["date_utc"]}, git {env["git_commit"]}
Machine: {env["cpu"]} ({env["cpu_cores"]} cores, torch threads {env["torch_threads"]}), device `{device}`
{("GPU: " + env["gpu"]) if "gpu" in env else ""}
Versions: {", ".join(f"{k} {v}" for k, v in env["versions"].items())}

Model: {model_name}; flow `{model.architecture["flow"]["type"]}` ({model.architecture["flow"]["num_transforms"]}
layers, hidden {model.architecture["flow"]["hidden_features"]}); cutouts {tuple(model.image_shape)}; S = {s} draws.

| sampler | cutouts | cutouts/s (best of {args.repeats}, alternating) |
|---|---|---|
| `sbicluster.inference.predict`, 1 view | {args.n} | {rate_ours:.1f} |
| sbi `DirectPosterior.sample_batched` | {n_sbi} | {rate_sbi:.1f} |
| `sbicluster.inference.predict`, 8 symmetric views (the default) | {args.n} | {rate_default:.1f} |

Speed-up over sbi's stock sampler (same model, same process, same work: one view):
**{rate_ours / rate_sbi:.2f}×**. The default 8 views (P(cluster) and visibility averaged over the
rotations and mirror images of each cutout) cost {rate_ours / rate_default:.2f}× the time of one.
Goal ≥ {goal:.0f} cutouts/s at S = 1000 on this device, default path:
**{"met" if rate_default >= goal else "NOT met"}**.

Memory: predict on N = {args.memory_n} cutouts (S = 10) took {t_mem:.1f} s; peak RSS
{rss0:.0f} → {rss1:.0f} MiB for {in_mb:.0f} MiB of input and {out_mb:.0f} MiB of output (chunks of
{args.batch_size} cutouts; working memory does not grow with N). All draws inside the prior box:
{inside}.
"""
    if infer_run is not None:
        md += f"""
Memory of the whole command: `sbicluster infer` on N = {infer_run["n"]} mock cutouts (from
`sbicluster simulate`) with S = {infer_run["num_samples"]} draws and {infer_run["views"]} views,
in its own process: peak RSS **{infer_run["peak_rss_mb"]:.0f} MiB** in {infer_run["seconds"]:.0f} s, i.e.
{infer_run["n"] / infer_run["seconds"]:.1f} cutouts/s for the whole command (start-up, reading, pixel
checks, inference and writing) ({infer_run["draws_float32_mb"]:.0f} MiB of float32 draws, streamed to
{infer_run["output_mb"]:.0f} MiB of output files). Goal < 2.5 GB:
**{"met" if infer_run["goal_met"] else "NOT met"}**.
"""
    write_results(results_name(NAME, device), results, md, args.results_dir)
    return results


if __name__ == "__main__":
    main()
