"""Training throughput: samples/s of the training step for each embedding, with a same-run baseline.

For each embedding (default ``cpu`` and ``paper``) the benchmark builds a fresh model on the
default instrument's cutouts and times :func:`sbicluster.training.train_step` (the step ``sbicluster
train`` takes: embedding, flow NLL, classifier and visibility heads, AdamW with gradient clipping)
on batches drawn from a bank of simulations held on the device, so the rate is that of training
itself, as from a pre-simulated pool whose reading keeps up. On CUDA it times each embedding with
bfloat16 autocast (``amp``, the training default there) and without it, in the same process, as
the baseline; on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX) it does the same with
CPU autocast (``sbicluster train --cpu-bf16``) against float32 (the CPU default). It also times online training (each batch simulated, then one step) for the first
embedding, the rate of a run without a pool. With ``--variants`` it also times, for the first
embedding at the faster precision, two changes that leave the architecture as it is: the
embedding in channels-last memory format, and the embedding compiled with ``torch.compile``
(its compilation in the untimed warm-up).

Usage::

    python -m benchmarks.training_speed                          # CPU, cpu and paper embeddings
    python -m benchmarks.training_speed --device cuda --batch-size 512
    python -m benchmarks.training_speed --quick --results-dir /tmp/check   # a seconds-long check
    python -m benchmarks.training_speed --embeddings cpu --variants       # + channels-last, compile

Writes ``results/training_speed.{json,md}`` (``training_speed_cuda`` on a GPU).

Goal on one H100: ≥ 4,000 training samples/s with the ``paper`` embedding.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import torch

from benchmarks.records import environment, results_name, write_results
from sbicluster.devices import cpu_has_bf16, resolve_device
from sbicluster.model import ClusterModel, default_architecture
from sbicluster.training import TrainingConfig, estimate_softening, train_step
from simulators.base import simulate_in_chunks
from simulators.registry import simulator_for_preset

__all__ = ["main"]

NAME = "training_speed"
GPU_GOAL_SAMPLES_PER_S = 4000.0
log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


VARIANTS = ("channels-last", "compiled embedding")
"""Changes timed by ``--variants`` beside the plain step (same architecture and precision)."""


def _variant_model(variant: str, model: ClusterModel, next_batch):
    """``model`` and its batch source changed as ``variant`` says (in place for the model)."""
    if variant == "channels-last":
        model.embedding.to(memory_format=torch.channels_last)

        def channels_last_batch():
            batch = next_batch()
            batch.images = batch.images.contiguous(memory_format=torch.channels_last)
            return batch

        return model, channels_last_batch
    if variant == "compiled embedding":
        model.embedding.compile()
        return model, next_batch
    raise ValueError(f"unknown variant {variant!r}")


def _model(embedding: str, simulator, softening: list[float], device: torch.device, seed: int):
    arch = default_architecture(embedding, len(simulator.bands), softening)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClusterModel(simulator.prior, simulator.bands, simulator.observation_shape, arch)
    return model.to(device).train()


def time_steps(
    model: ClusterModel,
    next_batch,
    config: TrainingConfig,
    *,
    amp: bool,
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict:
    """Samples/s of ``steps`` training steps after ``warmup`` untimed ones.

    Parameters
    ----------
    model : ClusterModel
        The model to train (its weights change).
    next_batch : callable
        ``next_batch()`` → the next :class:`~simulators.batch.SimulationBatch` on ``device``.
    config : TrainingConfig
        Batch size, learning rate, loss weights, gradient clip.
    amp : bool
        bfloat16 autocast of the embedding (CUDA only).
    warmup, steps : int
        Untimed and timed steps.
    device : torch.device
        Where the model runs.

    Returns
    -------
    dict
        ``samples_per_s``, ``seconds``, ``steps``, ``batch_size``, ``amp`` and the last step's
        loss ``total`` (finite when the step works).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    parts = {}
    for _ in range(warmup):
        parts = train_step(model, opt, next_batch(), config, config.lr, amp)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        parts = train_step(model, opt, next_batch(), config, config.lr, amp)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "samples_per_s": steps * config.batch_size / seconds,
        "seconds": seconds,
        "steps": steps,
        "batch_size": config.batch_size,
        "amp": amp,
        "total_loss": float(parts.get("total", float("nan"))),
    }


def _markdown(res: dict, args) -> str:
    env = res["environment"]
    rows = []
    for emb, runs in res["bank"].items():
        for run in runs.values():
            rows.append(
                f"| `{emb}` | bank on device | {'bfloat16 autocast' if run['amp'] else 'float32'} "
                f"| {run['batch_size']} | {run['steps']} | **{run['samples_per_s']:,.0f}** |"
            )
    for name, run in res.get("variants", {}).items():
        rows.append(
            f"| `{res['variants_embedding']}` | bank on device | "
            f"{'bfloat16 autocast' if run['amp'] else 'float32'}, {name} | {run['batch_size']} "
            f"| {run['steps']} | **{run['samples_per_s']:,.0f}** |"
        )
    online = res["online"]
    if online:
        rows.append(
            f"| `{online['embedding']}` | simulated per batch | "
            f"{'bfloat16 autocast' if online['amp'] else 'float32'} | {online['batch_size']} | "
            f"{online['steps']} | **{online['samples_per_s']:,.0f}** |"
        )
    lines = [
        f"# Training throughput ({res['device']})",
        "",
        f"Command: `{env['command']}` — {env['date_utc']}, git {env['git_commit']}",
        f"Machine: {env['cpu']} ({env['cpu_cores']} cores, torch threads {env['torch_threads']}), "
        f"device `{res['device']}`" + (f", GPU {env['gpu']}" if "gpu" in env else ""),
        f"Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}",
        "",
        f"Preset `{res['preset']}`, cutouts {tuple(res['image_shape'])}; a bank of "
        f"{res['bank_size']} simulations on the device; {args.warmup} untimed warm-up steps "
        "before each timed run; every embedding starts from a fresh model.",
        "",
        "| embedding | data | precision | batch | timed steps | training samples/s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Peak memory: {res['peak_memory_mb']:,.0f} MiB "
        + ("of GPU memory allocated." if res["device"].startswith("cuda") else "RSS."),
    ]
    if "paper" in res["bank"] and res["device"].startswith("cuda"):
        best = max(r["samples_per_s"] for r in res["bank"]["paper"].values())
        met = best >= GPU_GOAL_SAMPLES_PER_S
        lines += [
            "",
            f"Goal ≥ {GPU_GOAL_SAMPLES_PER_S:,.0f} samples/s with the `paper` embedding on one "
            f"H100: {best:,.0f} → **{'met' if met else 'NOT met'}**.",
        ]
    if not res["device"].startswith("cuda"):
        for emb, runs in res["bank"].items():
            if "amp" in runs:
                gain = runs["amp"]["samples_per_s"] / runs["float32"]["samples_per_s"]
                lines += [
                    "",
                    f"`{emb}`: bfloat16 autocast on this CPU runs **{gain:.2f}×** the float32 "
                    "rate, same architecture, same run (goal ≥ 2×).",
                ]
    if res["quick"]:
        lines += ["", "A `--quick` check run: too few steps for a rate worth quoting."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the results it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="m83-wfc3")
    parser.add_argument("--embeddings", default="cpu,paper", help="comma-separated presets")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 (CPU), 512 (GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 / 100)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bank", type=int, default=None, help="simulations held on the device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="a few small steps: a check, not a rate"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time channels-last and a compiled embedding (first embedding)",
    )
    parser.add_argument(
        "--results-dir", default=None, help="where to write (default: benchmarks/results)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (16 if args.quick else 512 if cuda else 128)
    steps = args.steps or (2 if args.quick else 100 if cuda else 20)
    warmup = 1 if args.quick else args.warmup
    args.warmup = warmup
    bank_size = args.bank or max(2 * batch, 64 if args.quick else 2048 if cuda else 512)
    embeddings = [e.strip() for e in args.embeddings.split(",") if e.strip()]

    simulator = simulator_for_preset(args.preset, device=device)
    log.info("simulating a bank of %d cutouts on %s ...", bank_size, device)
    bank = simulate_in_chunks(
        simulator, bank_size, torch.Generator(device=device).manual_seed(args.seed)
    ).to(device)
    softening = estimate_softening(bank.images.cpu())
    config = TrainingConfig(batch_size=batch)
    picks = torch.Generator(device=device).manual_seed(args.seed + 1)

    def from_bank():
        idx = torch.randint(bank_size, (batch,), generator=picks, device=device)
        return bank[idx]

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    res = {
        "environment": environment(str(device)),
        "device": str(device),
        "preset": args.preset,
        "image_shape": list(simulator.observation_shape),
        "bank_size": bank_size,
        "quick": args.quick,
        "bank": {},
        "online": None,
    }
    for emb in embeddings:
        res["bank"][emb] = {}
        for amp in (False, True) if (cuda or cpu_has_bf16()) else (False,):
            log.info("embedding %s, amp %s: %d steps of %d ...", emb, amp, steps, batch)
            model = _model(emb, simulator, softening, device, args.seed)
            run = time_steps(
                model, from_bank, config, amp=amp, warmup=warmup, steps=steps, device=device
            )
            res["bank"][emb]["amp" if amp else "float32"] = run
    if args.variants:
        emb, amp = embeddings[0], cuda or cpu_has_bf16()
        res["variants_embedding"], res["variants"] = emb, {}
        for variant in VARIANTS:
            log.info("embedding %s, %s: %d steps of %d ...", emb, variant, steps, batch)
            model, next_batch = _variant_model(
                variant, _model(emb, simulator, softening, device, args.seed), from_bank
            )
            res["variants"][variant] = time_steps(
                model, next_batch, config, amp=amp, warmup=warmup, steps=steps, device=device
            )
    online_gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    emb = embeddings[0]
    log.info("embedding %s, simulated per batch ...", emb)
    res["online"] = {
        "embedding": emb,
        **time_steps(
            _model(emb, simulator, softening, device, args.seed),
            lambda: simulator.simulate(batch, online_gen),
            config,
            amp=cuda,
            warmup=warmup,
            steps=max(1, steps // 2),
            device=device,
        ),
    }
    res["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    write_results(results_name(NAME, str(device)), res, _markdown(res, args), args.results_dir)
    return res


if __name__ == "__main__":
    main()
