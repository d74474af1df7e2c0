"""Train the deterministic-photometry twin of the shipped ``legus-uvis`` catalogue model.

Same preset, prior, architecture (``catalogue`` embedding), batch (512), optimiser, time budget
(20 min), pool size (250,000 rows, pool seed 0) and training seed (0) as
``sbicluster train --preset legus-uvis --pool 250000 --time-budget 20 --seed 0``; the only
difference is the simulator's ``stochastic_imf=False``: every cluster has the IMF-expected
(fully sampled) light, as IMF-averaged SED fits assume. Run from the repository root::

    python -m benchmarks.train_legus_deterministic --out RUN [--pool 250000] [--time-budget 20]

The model is written to ``RUN/model`` (keep RUN outside the repository; the 250,000-row pool is
35 MB). The run used by ``benchmarks/legus_deterministic.py`` is committed as
``benchmarks/models/legus-uvis-deterministic`` (1.3 MB, with its card and training log).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="run folder (outside the repository)")
    ap.add_argument(
        "--pool", type=int, default=250_000, help="pre-simulated rows (default: 250000)"
    )
    ap.add_argument("--time-budget", type=float, default=20.0, help="minutes (default: 20)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    ap.add_argument("--pool-seed", type=int, default=0, help="pool seed (default: 0)")
    ap.add_argument("--stochastic", action="store_true", help="train the stochastic model instead")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from sbicluster.training import default_config, train, write_dataset
    from simulators.catalogue import CatalogueSimulator

    simulator = CatalogueSimulator("legus-uvis", stochastic_imf=args.stochastic)
    pool = args.out / "pool.h5"
    config = default_config(
        "cpu",
        embedding="catalogue",
        batch_size=512,
        seed=args.seed,
        max_time_s=60.0 * args.time_budget,
        dataset=str(pool),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if not pool.is_file():
        write_dataset(simulator, args.pool, pool, torch.Generator().manual_seed(args.pool_seed))
    model = train(simulator, config, args.out, overwrite=True)
    t = model.card["training"]
    print(
        f"stopped ({t['stop_reason']}) after {t['steps_done']} steps; model in {args.out / 'model'}"
    )


if __name__ == "__main__":
    main()
