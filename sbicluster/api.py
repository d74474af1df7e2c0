"""The Python entry point: :func:`infer` turns FITS cutouts into posterior samples and tables.

This module mirrors ``sbicluster infer``: it reads and validates the input
(:mod:`sbicluster.io`), runs the model (:func:`sbicluster.inference.predict`) and, when asked,
writes the outputs (:mod:`sbicluster.outputs`). It owns no numerics of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from .devices import resolve_device
from .errors import InputError
from .io import Cutouts, read_catalog_cutouts, read_cutouts
from .outputs import (
    check_outputs,
    inference_data,
    summary_table,
    write_inference_data,
    write_samples,
    write_table,
)

__all__ = [
    "infer",
    "InferenceResult",
    "model_pixel_scale",
    "model_zero_points",
    "OUTPUT_FILES",
]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("summary.ecsv", "posterior.nc")
"""Files written to the output folder by every run (``samples.npz`` is optional)."""


def model_pixel_scale(card: dict) -> float | None:
    """The model's pixel scale in arcsec/px, read from its card (None if the card has none)."""
    preset = card.get("simulator", {}).get("preset", {})
    for key in ("pixel_scale", "pixel_scale_arcsec"):
        if key in preset:
            return float(preset[key])
    return None


def model_zero_points(card: dict) -> dict[str, float]:
    """The model's Vega magnitude giving 1 e⁻/s per band (mag), from its card ({} if unknown)."""
    setups = card.get("simulator", {}).get("preset", {}).get("band_setups", [])
    return {b["name"]: float(b["zero_point"]) for b in setups if "name" in b and "zero_point" in b}


@dataclass
class InferenceResult:
    """Posterior results for a set of cutouts.

    Attributes
    ----------
    summary : astropy.table.Table
        One row per cutout (see :func:`sbicluster.outputs.summary_table`).
    samples : numpy.ndarray
        (N, S, 4) posterior draws in the prior's units.
    cutouts : Cutouts
        The validated input cutouts (images in e⁻/s, ids, positions, flags).
    card : dict
        The model card.
    """

    summary: Table
    samples: np.ndarray
    cutouts: Cutouts
    card: dict

    def to_inference_data(self):
        """The draws as :class:`arviz.InferenceData` (dims cutout × draw, units as attributes)."""
        from simulators.priors import ClusterPrior

        return inference_data(
            self.samples,
            ClusterPrior.from_dict(self.card["prior"]),
            ids=self.cutouts.ids,
            card=self.card,
        )

    def write(
        self, out_dir: str | Path, *, overwrite: bool = False, save_samples: bool = False
    ) -> list[Path]:
        """Write ``summary.ecsv``, ``posterior.nc`` (and ``samples.npz``) atomically into ``out_dir``.

        Raises
        ------
        OutputExistsError
            If an output exists and ``overwrite`` is false; nothing is written then.
        """
        out_dir = Path(out_dir)
        names = list(OUTPUT_FILES) + (["samples.npz"] if save_samples else [])
        check_outputs([out_dir / n for n in names], overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [
            write_table(self.summary, out_dir / "summary.ecsv"),
            write_inference_data(self.to_inference_data(), out_dir / "posterior.nc"),
        ]
        if save_samples:
            names = [p["name"] for p in self.card["prior"]["parameters"]]
            paths.append(
                write_samples(out_dir / "samples.npz", self.samples, self.cutouts.ids, names)
            )
        return paths


def infer(
    source: str | Path | Sequence[str | Path],
    *,
    model=None,
    catalog: str | Path | None = None,
    bands: Sequence[str] | None = None,
    num_samples: int = 1000,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    views: int = 8,
    out: str | Path | None = None,
    overwrite: bool = False,
    save_samples: bool = False,
    progress: bool = True,
) -> InferenceResult:
    """Posterior samples, P(cluster) and visibility for every cutout in ``source``.

    Parameters
    ----------
    source : str, Path or sequence of them
        A FITS file of cutouts or a folder of them (see :mod:`sbicluster.io`); with ``catalog``,
        one large image per band.
    model : ClusterModel, str or Path, optional
        A loaded model or a model directory; the shipped default model when omitted.
    catalog : str or Path, optional
        Table of positions (``x``/``y`` px or ``ra``/``dec`` deg) to cut from the images.
    bands : sequence of str, optional
        Band of each image HDU (or image file), overriding the FITS ``FILTER`` keywords.
    num_samples : int
        Posterior draws per cutout, ≥ 2.
    device : str
        ``auto`` (CUDA if available), ``cpu``, ``cuda``...
    seed : int
        Seed of the posterior sampling; the same seed gives the same draws.
    batch_size : int
        Cutouts per network pass (bounds memory).
    views : int
        Symmetric views (1, 2, 4 or 8 rotations and mirror images of each cutout) over which
        P(cluster) and the visibility are averaged; see :func:`sbicluster.inference.predict`.
    out : str or Path, optional
        Folder to write ``summary.ecsv`` and ``posterior.nc`` into.
    overwrite : bool
        Replace existing outputs in ``out``.
    save_samples : bool
        Also write ``samples.npz``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    InferenceResult

    Raises
    ------
    InputError, ModelError, OutputExistsError
        With a message naming the file and the problem.

    Examples
    --------
    >>> import sbicluster
    >>> result = sbicluster.infer("cutouts.fits", num_samples=500)  # doctest: +SKIP
    >>> result.summary["id", "p_cluster", "log_age_median"]  # doctest: +SKIP
    """
    from simulators.priors import ClusterPrior

    from .artifact import load_model
    from .inference import check_batch_size, check_views, predict
    from .validation import blank_out_of_range, check_pixel_range

    if num_samples < 2:
        raise InputError(
            f"num_samples must be an integer >= 2 (the summary's percentiles and 94% HDI need two "
            f"draws per cutout), got {num_samples!r}; use e.g. --samples 1000"
        )
    check_batch_size(batch_size)
    check_views(views)
    if out is not None:
        names = list(OUTPUT_FILES) + (["samples.npz"] if save_samples else [])
        check_outputs([Path(out) / n for n in names], overwrite)  # fail before any work
    dev = resolve_device(device)
    if model is None or isinstance(model, str | Path):
        model = load_model(model, device=str(dev))
    card = model.card
    model_bands = tuple(model.bands)
    image_size = int(model.image_shape[-1])
    scale = model_pixel_scale(card)
    zps = model_zero_points(card)
    if catalog is not None:
        images = [source] if isinstance(source, str | Path) else list(source)
        cutouts = read_catalog_cutouts(
            images,
            catalog,
            model_bands,
            image_size=image_size,
            pixel_scale=scale,
            bands=bands,
            zero_points=zps,
        )
    else:
        if not isinstance(source, str | Path):
            raise InputError(
                "several input paths need --catalog; give one FITS file or a folder of them"
            )
        cutouts = read_cutouts(
            source,
            model_bands,
            image_size=image_size,
            pixel_scale=scale,
            bands=bands,
            zero_points=zps,
        )
    check_pixel_range(cutouts, card)  # flags out-of-range cutouts; refuses all-out-of-range input
    log.info("inferring %d cutouts with %d draws each on %s", len(cutouts), num_samples, dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    pred = predict(
        model,
        cutouts.images,
        num_samples=num_samples,
        generator=generator,
        batch_size=batch_size,
        views=views,
        progress=progress,
    )
    blank_out_of_range(pred, cutouts.flags)
    prior = ClusterPrior.from_dict(card["prior"])
    summary = summary_table(
        pred.samples,
        prior,
        ids=cutouts.ids,
        p_cluster=pred.p_cluster,
        visibility=pred.visibility,
        flags=cutouts.flags,
        x=cutouts.x,
        y=cutouts.y,
        ra=cutouts.ra,
        dec=cutouts.dec,
        meta={
            "model": card.get("name", "unnamed"),
            "num_samples": num_samples,
            "symmetry_views": views,
            "seed": seed,
            "input": [str(s) for s in ([source] if isinstance(source, str | Path) else source)],
            "catalog": None if catalog is None else str(catalog),
            "bands": list(model_bands),
            "image_size": image_size,
        },
    )
    result = InferenceResult(summary, pred.samples, cutouts, card)
    if out is not None:
        result.write(out, overwrite=overwrite, save_samples=save_samples)
    return result
