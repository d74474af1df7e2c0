"""End-to-end workflows on mock data: simulate to FITS, corner plots from an output folder, the demo.

This module owns the glue that makes the whole pipeline runnable on mock data —
``sbicluster simulate``, ``sbicluster corner`` and ``sbicluster demo`` — by composing the
simulator (any :class:`simulators.base.Simulator`, from :mod:`simulators.registry`),
:func:`sbicluster.infer`, the writers and the figures. It holds no numerics and must not depend
on which simulator it drives.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from .errors import InputError, OutputExistsError
from .outputs import check_outputs, write_cutouts_fits, write_table

__all__ = ["simulate_to_fits", "truth_table", "corner_plots", "run_demo"]

log = logging.getLogger(__name__)

DEMO_OUTPUTS = (
    "summary.ecsv",
    "posterior.nc",
    "summary.png",
    "corner",
    "mock/cutouts.fits",
    "mock/truth.ecsv",
)
"""What :func:`run_demo` writes into its folder; any of them there already is an earlier run."""


def truth_table(batch, prior, ids: Sequence[str]) -> Table:
    """Ground truth of a simulated batch: θ, label, visibility and nuisances, one row per cutout."""
    table = Table()
    table["id"] = np.asarray(ids, dtype=str)
    table["label"] = batch.label.cpu().numpy().astype(np.int8)
    table["visibility"] = batch.visibility.cpu().numpy().astype(float)
    theta = batch.theta.cpu().numpy()
    for j, p in enumerate(prior.parameters):
        table[p.name] = theta[:, j]
        table[p.name].unit = p.unit if p.unit != "mag" else "mag"
        table[p.name].description = (
            p.description + " (drawn from the prior but not rendered when label = 0)"
        )
    for name, value in batch.nuisances.items():
        value = value.cpu().numpy()
        table[name] = value if value.ndim == 1 else value.reshape(len(value), -1)
    table.meta["description"] = (
        "truth of simulated cutouts (label 1 = cluster, 0 = background only)"
    )
    return table


def simulate_to_fits(
    out_dir: str | Path,
    *,
    preset: str = "m83-wfc3",
    n: int = 100,
    seed: int = 0,
    cluster_fraction: float = 0.5,
    overwrite: bool = False,
    simulator=None,
    chunk: int = 256,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Simulate ``n`` cutouts and write ``cutouts.fits`` (the layout ``infer`` reads) and ``truth.ecsv``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder.
    preset : str
        Instrument preset name, or ``"toy"`` (see :func:`simulators.registry.simulator_for_preset`;
        ignored when ``simulator`` is given).
    n : int
        Number of cutouts.
    seed : int
        Random seed.
    cluster_fraction : float
        Fraction of cutouts that hold a cluster; the rest are background only.
    overwrite : bool
        Replace existing files.
    simulator : simulators.base.Simulator, optional
        Use this simulator (e.g. rebuilt from a model card) instead of a new one.
    chunk : int
        Cutouts simulated per call (bounds memory).
    progress : bool
        Show a progress bar.

    Returns
    -------
    tuple of Path
        ``cutouts.fits`` and ``truth.ecsv``.

    Raises
    ------
    InputError
        Bad ``n`` or ``cluster_fraction``; ``out_dir`` is a file, lies under a file or cannot
        be written (checked before simulating).
    OutputExistsError
        An output exists and ``overwrite`` is false.
    """
    from simulators.base import simulate_in_chunks
    from simulators.registry import simulator_for_preset

    from .files import check_writable_dir

    if n < 1:
        raise InputError(f"--n must be a positive number of cutouts, got {n}")
    if not 0.0 <= cluster_fraction <= 1.0:
        raise InputError(f"--cluster-fraction must lie in [0, 1], got {cluster_fraction}")
    out_dir = check_writable_dir(out_dir)  # a file or read-only --out fails before any work
    fits_path, truth_path = out_dir / "cutouts.fits", out_dir / "truth.ecsv"
    check_outputs([fits_path, truth_path], overwrite)
    if simulator is None:
        simulator = simulator_for_preset(preset)
    if len(simulator.observation_shape) != 3:
        raise InputError(
            f"the {preset!r} simulator makes catalogue rows, not image cutouts; `simulate` writes "
            "FITS cutouts (simulate catalogue rows with simulators.catalogue.CatalogueSimulator)"
        )
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    label_rng = torch.Generator().manual_seed(seed + 1)
    labels = (torch.rand(n, generator=label_rng) < cluster_fraction).long()
    batch = simulate_in_chunks(
        simulator, n, generator, chunk=chunk, label=labels, progress=progress, desc="simulating"
    )
    ids = [f"cutouts:{i}" for i in range(n)]
    preset_card = simulator.card().get("preset", {})
    scale = float(
        preset_card.get(
            "pixel_scale", getattr(getattr(simulator, "instrument", None), "pixel_scale", 0.04)
        )
    )
    write_cutouts_fits(
        fits_path,
        batch.images.numpy(),
        simulator.bands,
        pixel_scale=scale,
        meta={"PRESET": str(preset_card.get("name", preset)), "SEED": seed},
    )
    write_table(truth_table(batch, simulator.prior, ids), truth_path)
    return fits_path, truth_path


def _load_outputs(outdir: Path):
    import arviz as az

    summary_path, posterior_path = outdir / "summary.ecsv", outdir / "posterior.nc"
    for p in (summary_path, posterior_path):
        if not p.exists():
            raise InputError(f"{p}: not found; run `sbicluster infer ... --out {outdir}` first")
    summary = Table.read(summary_path, format="ascii.ecsv")
    idata = az.from_netcdf(str(posterior_path))
    return summary, idata


def _read_truth(path: str | Path, names: Sequence[str]) -> dict:
    """``{id: (label, [θ])}`` from a ``truth.ecsv``; :class:`InputError` (one line) when the file is
    missing, unreadable or lacks the ``id``, ``label`` or parameter columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"--truth {path}: not found; give the truth.ecsv written by `sbicluster simulate`"
        )
    try:
        t = Table.read(path, format="ascii.ecsv")
    except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"--truth {path}: not a readable ECSV table ({reason}); give the truth.ecsv written "
            "by `sbicluster simulate`"
        ) from None
    missing = [c for c in ("id", "label", *names) if c not in t.colnames]
    if missing:
        raise InputError(
            f"--truth {path}: lacks the column(s) {', '.join(missing)}; give the truth.ecsv "
            "written by `sbicluster simulate`"
        )
    return {str(r["id"]): (int(r["label"]), [float(r[name]) for name in names]) for r in t}


def corner_plots(
    outdir: str | Path,
    *,
    ids: Sequence[str] | None = None,
    max_plots: int = 10,
    truth: str | Path | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Corner plots with an RGB thumbnail for cutouts of an ``infer`` output folder.

    Parameters
    ----------
    outdir : str or Path
        Folder holding ``summary.ecsv`` and ``posterior.nc``.
    ids : sequence of str, optional
        Cutouts to plot; by default the first ``max_plots``.
    max_plots : int
        Most plots when ``ids`` is not given.
    truth : str or Path, optional
        ``truth.ecsv`` from ``simulate``; true values are marked.
    formats : sequence of str
        File formats written.

    Returns
    -------
    list of Path
        Written files, in ``outdir/corner/`` (one per cutout and format).

    Raises
    ------
    InputError
        ``outdir`` lacks the ``infer`` outputs, an id is unknown, or ``truth`` is missing or not a
        truth table; checked before anything is plotted.
    """
    from simulators.priors import ClusterPrior

    from .corner import corner_figure, save_figure
    from .io import read_catalog_cutouts, read_cutouts

    outdir = Path(outdir)
    summary, idata = _load_outputs(outdir)
    prior = ClusterPrior.from_dict(json.loads(idata.posterior.attrs["prior"]))
    all_ids = [str(i) for i in summary["id"]]
    wanted = list(ids) if ids else all_ids[:max_plots]
    missing = [i for i in wanted if i not in all_ids]
    if missing:
        raise InputError(f"{outdir / 'summary.ecsv'}: no cutout with id {missing[0]!r}")
    truths = None if truth is None else _read_truth(truth, prior.names)
    images = None
    meta = summary.meta
    if "distance_modulus" not in meta:  # results of a photometric catalogue have no cutouts
        try:
            bands, size = meta["bands"], int(meta["image_size"])
            if meta.get("catalog"):
                cut = read_catalog_cutouts(meta["input"], meta["catalog"], bands, image_size=size)
            else:
                cut = read_cutouts(meta["input"][0], bands, image_size=size)
            images = dict(zip(cut.ids, cut.images, strict=True))
        except (KeyError, InputError) as err:
            log.warning("cutout thumbnails unavailable (%s)", err)
    draws = np.stack(
        [idata.posterior[name].values[0] for name in prior.names], axis=-1
    )  # (draw, cutout, 4)
    (outdir / "corner").mkdir(exist_ok=True)
    paths = []
    for cid in wanted:
        i = all_ids.index(cid)
        row = summary[i]
        title = (
            f"{cid}   P(cluster) = {row['p_cluster']:.3f}   visibility = {row['visibility']:.1f}"
        )
        true = None
        if truths and cid in truths:
            label, values = truths[cid]
            true = values if label == 1 else None
            title += "   (truth: cluster)" if label == 1 else "   (truth: background only)"
        fig = corner_figure(
            draws[:, i],
            prior,
            image=None if images is None else images.get(cid),
            title=title,
            truth=true,
        )
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cid)
        paths += save_figure(fig, outdir / "corner" / f"corner_{safe}", formats)
    return paths


def run_demo(
    out_dir: str | Path = "demo-output",
    *,
    model=None,
    n: int = 200,
    num_samples: int = 1000,
    seed: int = 2020,
    device: str = "auto",
    cluster_fraction: float = 0.7,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """The README's main job: a mock field through the whole workflow with the shipped model.

    Simulates ``n`` cutouts (clusters and background-only) with the simulator recorded in the
    model card, writes them as FITS, runs :func:`sbicluster.infer` on the file, and writes
    ``summary.ecsv``, ``posterior.nc``, corner plots of a few cutouts and ``summary.png``
    (recovered vs true, P(cluster) histograms).

    Parameters
    ----------
    out_dir : str or Path
        Output folder.
    model : str, Path or ClusterModel, optional
        Model directory or loaded model (default: the shipped default model).
    n : int
        Mock cutouts.
    num_samples : int
        Posterior draws per cutout.
    seed : int
        Random seed of the mock field and the draws.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    cluster_fraction : float
        Fraction of mock cutouts that hold a cluster.
    overwrite : bool
        Replace the results of an earlier demo in ``out_dir``; without it such a folder is
        refused before any work.
    progress : bool
        Show progress bars.

    Returns
    -------
    str
        A short text report (where things are, how well the mock field was recovered).

    Raises
    ------
    InputError
        ``out_dir`` is a file, lies under a file or cannot be written.
    OutputExistsError
        ``out_dir`` holds demo results and ``overwrite`` is false.
    """
    from simulators.registry import simulator_from_card

    from .api import infer
    from .artifact import load_model
    from .corner import save_figure, summary_figure
    from .devices import resolve_device
    from .files import check_writable_dir

    t0 = time.perf_counter()
    out_dir = check_writable_dir(out_dir, what="--out")
    existing = [name for name in DEMO_OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"--out {out_dir}: holds the results of an earlier run ({', '.join(existing)}); "
            "pass --overwrite to replace them or choose another --out"
        )
    dev = resolve_device(device)
    loaded = (
        load_model(model, device=str(dev))
        if model is None or isinstance(model, str | Path)
        else model
    )
    simulator = simulator_from_card(loaded.card.get("simulator"), device=dev)
    fits_path, truth_path = simulate_to_fits(
        out_dir / "mock",
        n=n,
        seed=seed,
        cluster_fraction=cluster_fraction,
        overwrite=True,
        simulator=simulator,
        progress=progress,
    )
    result = infer(
        fits_path,
        model=loaded,
        num_samples=num_samples,
        device=str(dev),
        seed=seed,
        out=out_dir,
        overwrite=True,
        progress=progress,
    )
    truth = Table.read(truth_path, format="ascii.ecsv")
    label = np.asarray(truth["label"])
    prior = simulator.prior
    theta = np.stack([np.asarray(truth[name]) for name in prior.names], axis=1)
    save_figure(
        summary_figure(
            result.samples, theta, label, np.asarray(result.summary["p_cluster"]), prior
        ),
        out_dir / "summary",
        ("png",),
    )
    clusters, backgrounds = np.flatnonzero(label == 1), np.flatnonzero(label == 0)
    show = [result.cutouts.ids[i] for i in [*clusters[:3], *backgrounds[:1]]]
    corner_plots(out_dir, ids=show, truth=truth_path, formats=("png",))
    median = np.median(result.samples, axis=1)
    err = np.abs(median[clusters] - theta[clusters])
    p = np.asarray(result.summary["p_cluster"])
    accuracy = float(np.mean((p > 0.5) == (label == 1)))
    lines = [
        f"sbicluster demo: {n} mock cutouts ({len(clusters)} clusters), {num_samples} draws each, "
        f"{time.perf_counter() - t0:.0f} s on {dev}",
        f"  classification accuracy at P(cluster) > 0.5: {accuracy:.3f}",
        "  median |posterior median - truth| for clusters: "
        + ", ".join(
            f"{name} {v:.2f}" for name, v in zip(prior.names, np.median(err, axis=0), strict=True)
        ),
        f"  outputs: {out_dir}/summary.ecsv, posterior.nc, summary.png, corner/*.png, mock/cutouts.fits, mock/truth.ecsv",
    ]
    return "\n".join(lines)
