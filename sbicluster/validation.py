"""Checks that cutouts lie within the range of pixel values a model was trained on.

This module owns the out-of-range rule (:func:`out_of_range`) and its application to a run
(:func:`check_pixel_range`, :func:`blank_out_of_range`). The rule is read from the model's card
only, so it costs no simulation and no network pass. It must not read files or run a model.

The rule
--------
With ``σ_c`` the training data's noise in band ``c`` (the card's
``architecture.normalisation.softening_e_per_s``: the median over validation cutouts of
1.4826 × MAD of the pixels, e⁻/s), a cutout is *out of range* when either

1. **mostly negative**: the band-averaged median pixel in noise units,
   ``mean_c(median(x_c) / σ_c)``, is below ``-NEGATIVE_MEDIAN_SIGMA`` (−0.5). Training cutouts
   are sky-subtracted e⁻/s plus galaxy and field light, so their median is ≥ 0 up to the median's
   own scatter (1.25 σ/√(H·W): 0.02 σ for 64×64 px, 0.16 σ for the toy's 8×8 px); the shipped
   model's training data reach no lower than +0.4 σ in any band, the toy's +1 σ. A median half
   a noise σ below zero in every band at once means a sign flip or a grossly wrong sky level, not
   a sky-noise fluctuation; or
2. **brighter than any cluster of the prior**: the total flux of some band exceeds
   ``FLUX_BOUND_FACTOR`` (100) times the brightest cluster the prior allows. That cluster has
   the prior's largest ``log_mass`` with the Vega absolute magnitude per solar mass
   ``BRIGHTEST_MAG_PER_SOLAR_MASS`` (−3 mag, brighter than any simple stellar population of the
   prior's ages in any band from the UV to the near-IR: 1–10 Myr populations with a Kroupa IMF
   reach about −2 in U and less in redder bands), at the preset's ``distance_modulus`` and the
   band's ``zero_point`` (Vega mag of 1 e⁻/s). For the shipped preset this is 2.8 × 10⁷ e⁻/s
   in F814W, 4000 times the brightest simulated cutout. A card without those entries (e.g. the
   linear-Gaussian toy) uses ``FALLBACK_PIXEL_SIGMA`` (10⁴) × σ_c per pixel instead, i.e. a
   total of 10⁴ σ_c H W.

Out-of-range cutouts are flagged :data:`sbicluster.io.FLAG_OUT_OF_RANGE` and get NaN P(cluster),
visibility and posterior draws: the network's answer on such input is an extrapolation with no
meaning, however confident. A run in which every cutout is out of range is refused before
inference with a message saying what is wrong with the pixel values.

The false-alarm rate was checked on 200 simulated cutouts of the shipped preset and 200 of the
toy (``tests/test_bad_inputs_inputs.py``): none is flagged, while the same cutouts multiplied by
−1 or by 10³⁰ all are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .io import FLAG_OUT_OF_RANGE, Cutouts

__all__ = [
    "BRIGHTEST_MAG_PER_SOLAR_MASS",
    "FALLBACK_PIXEL_SIGMA",
    "FLUX_BOUND_FACTOR",
    "NEGATIVE_MEDIAN_SIGMA",
    "PixelRange",
    "blank_draws_out_of_range",
    "blank_out_of_range",
    "out_of_range_rows",
    "check_pixel_range",
    "out_of_range",
    "pixel_range",
]

log = logging.getLogger(__name__)

NEGATIVE_MEDIAN_SIGMA = 0.5
"""A cutout whose band-averaged median pixel is below −this × the training noise is 'mostly negative'."""
VALIDATION_CHUNK = 1024
"""Cutouts whose statistics are computed at once (bounds the float64 working copy)."""

FLUX_BOUND_FACTOR = 100.0
"""Total flux per band above this many times the brightest cluster of the prior is out of range."""
BRIGHTEST_MAG_PER_SOLAR_MASS = -3.0
"""Vega absolute magnitude (mag) of one solar mass of the brightest population, any band."""
FALLBACK_PIXEL_SIGMA = 1.0e4
"""Mean pixel value, in training-noise units, above which a band is out of range when the card
gives no photometric calibration (zero points and distance modulus)."""


@dataclass(frozen=True)
class PixelRange:
    """The range of pixel values a model accepts, per band.

    Attributes
    ----------
    bands : tuple of str
        The model's bands.
    noise : numpy.ndarray
        (C,) training noise σ_c, e⁻/s per pixel.
    max_flux : numpy.ndarray
        (C,) largest accepted total flux of a cutout band, e⁻/s.
    basis : str
        How ``max_flux`` was derived (for messages).
    """

    bands: tuple[str, ...]
    noise: np.ndarray
    max_flux: np.ndarray
    basis: str


def pixel_range(card: dict) -> PixelRange:
    """The accepted pixel range of a model, from its card (see the module docstring).

    Parameters
    ----------
    card : dict
        Model card with ``bands``, ``image_shape`` and ``architecture.normalisation``.

    Returns
    -------
    PixelRange
    """
    bands = tuple(card["bands"])
    noise = np.asarray(card["architecture"]["normalisation"]["softening_e_per_s"], dtype=np.float64)
    height, width = (int(v) for v in card["image_shape"][-2:])
    preset = (card.get("simulator") or {}).get("preset") or {}
    zero_points = {b.get("name"): b.get("zero_point") for b in preset.get("band_setups", []) or []}
    log_mass = [
        p.get("high")
        for p in card.get("prior", {}).get("parameters", [])
        if p.get("name") == "log_mass"
    ]
    distance_modulus = preset.get("distance_modulus")
    if (
        distance_modulus is not None
        and log_mass
        and all(zero_points.get(b) is not None for b in bands)
    ):
        brightest = (
            float(distance_modulus) + BRIGHTEST_MAG_PER_SOLAR_MASS - 2.5 * float(log_mass[0])
        )
        zps = np.array([float(zero_points[b]) for b in bands])
        max_flux = FLUX_BOUND_FACTOR * 10 ** (0.4 * (zps - brightest))
        basis = (
            f"{FLUX_BOUND_FACTOR:g}x the brightest cluster of the prior (apparent magnitude "
            f"{brightest:.1f} in every band at the preset's zero points)"
        )
    else:
        max_flux = FALLBACK_PIXEL_SIGMA * noise * height * width
        basis = f"{FALLBACK_PIXEL_SIGMA:g}x the training noise in every pixel"
    return PixelRange(bands, noise, max_flux, basis)


def out_of_range(images: np.ndarray, card: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which cutouts lie outside the model's training range (the rule of the module docstring).

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) finite cutouts, e⁻/s per pixel, bands in the card's order.
    card : dict
        Model card.

    Returns
    -------
    negative : numpy.ndarray
        bool (N,): mostly negative (band-averaged median below −0.5 σ).
    too_bright : numpy.ndarray
        bool (N,): some band's total flux above :attr:`PixelRange.max_flux`.
    median_sigma : numpy.ndarray
        float64 (N,): the band-averaged median pixel in noise units.
    """
    limits = pixel_range(card)
    n = len(images)
    medians, total = np.empty((n, len(limits.noise))), np.empty((n, len(limits.noise)))
    for start in range(0, n, VALIDATION_CHUNK):  # float64 copies of one chunk at a time
        x = np.asarray(images[start : start + VALIDATION_CHUNK], dtype=np.float64)
        medians[start : start + len(x)] = np.median(x, axis=(2, 3))
        total[start : start + len(x)] = x.sum(axis=(2, 3))
    median_sigma = (medians / limits.noise).mean(axis=1)
    negative = median_sigma < -NEGATIVE_MEDIAN_SIGMA
    too_bright = (total > limits.max_flux).any(axis=1)
    return negative, too_bright, median_sigma


def check_pixel_range(cutouts: Cutouts, card: dict) -> Cutouts:
    """Flag out-of-range cutouts; refuse a set in which every cutout is out of range.

    Parameters
    ----------
    cutouts : Cutouts
        Validated cutouts (:mod:`sbicluster.io`); their ``flags`` gain
        :data:`~sbicluster.io.FLAG_OUT_OF_RANGE` in place where the rule fires.
    card : dict
        Model card.

    Returns
    -------
    Cutouts
        ``cutouts`` itself.

    Raises
    ------
    InputError
        Every cutout is out of range; the message says which way and how to fix it.
    """
    if len(cutouts) == 0:
        return cutouts
    negative, too_bright, median_sigma = out_of_range(cutouts.images, card)
    bad = negative | too_bright
    cutouts.flags[bad] |= FLAG_OUT_OF_RANGE
    n = len(cutouts)
    if not bad.all():
        if bad.any():
            log.warning(
                "%d of %d cutouts have pixel values far outside the model's training data "
                "(flag out_of_range; their results are NaN): %s",
                int(bad.sum()),
                n,
                ", ".join(np.asarray(cutouts.ids)[bad][:5]),
            )
        return cutouts
    limits = pixel_range(card)
    noise = ", ".join(f"{s:.3g}" for s in limits.noise)
    parts = []
    if negative.any():
        per_band = np.median(np.median(cutouts.images[negative], axis=(2, 3)), axis=0)
        parts.append(
            f"{int(negative.sum())} have mostly negative pixels (median pixel "
            f"{', '.join(f'{v:.3g}' for v in per_band)} e-/s in bands {', '.join(limits.bands)}, "
            f"{float(np.median(median_sigma[negative])):.3g} times the noise); expected "
            f"sky-subtracted e-/s with a median above -{NEGATIVE_MEDIAN_SIGMA:g} x the noise "
            f"({noise} e-/s)"
        )
    if (too_bright & ~negative).any():
        rows = too_bright & ~negative
        total = np.asarray(cutouts.images[rows], dtype=np.float64).sum(axis=(2, 3)).max(axis=0)
        parts.append(
            f"{int(rows.sum())} are brighter than any cluster the model knows (total flux up to "
            f"{', '.join(f'{v:.3g}' for v in total)} e-/s in bands {', '.join(limits.bands)}; "
            f"the limit, {limits.basis}, is {', '.join(f'{v:.3g}' for v in limits.max_flux)} e-/s)"
        )
    raise InputError(
        f"all {n} cutouts have pixel values far outside the model's training data: "
        + "; ".join(parts)
        + "; check the sign, units (BUNIT, EXPTIME, PHOTFLAM) and sky subtraction of the images"
    )


def out_of_range_rows(flags: np.ndarray) -> np.ndarray:
    """(N,) bool: the cutouts whose ``flags`` carry :data:`~sbicluster.io.FLAG_OUT_OF_RANGE`."""
    return (np.asarray(flags) & FLAG_OUT_OF_RANGE) != 0


def blank_out_of_range(prediction, flags: np.ndarray) -> None:
    """Set P(cluster), visibility and any kept draws of out-of-range cutouts to NaN, in place.

    Parameters
    ----------
    prediction : sbicluster.inference.Prediction
        Output of :func:`sbicluster.inference.predict` for the cutouts (its ``samples`` may be
        ``None`` when the draws were streamed; see :func:`blank_draws_out_of_range`).
    flags : numpy.ndarray
        (N,) flags of the cutouts (:attr:`Cutouts.flags`).
    """
    bad = out_of_range_rows(flags)
    if bad.any():
        prediction.p_cluster[bad] = np.nan
        prediction.visibility[bad] = np.nan
        if prediction.samples is not None:
            prediction.samples[bad] = np.nan


def blank_draws_out_of_range(sink, flags: np.ndarray):
    """Wrap a draw sink of :func:`sbicluster.inference.predict` so that the draws of
    out-of-range cutouts reach it as NaN.

    Parameters
    ----------
    sink : callable
        ``sink(start, draws)`` with ``draws`` (n, S, D) for cutouts ``start .. start + n``.
    flags : numpy.ndarray
        (N,) flags of all the cutouts.

    Returns
    -------
    callable
        The wrapped sink.
    """
    bad = out_of_range_rows(flags)

    def blanked(start: int, draws: np.ndarray) -> None:
        rows = bad[start : start + len(draws)]
        if rows.any():
            draws = draws.copy()
            draws[rows] = np.nan
        sink(start, draws)

    return blanked
