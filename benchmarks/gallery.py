"""PNG gallery of simulated cutouts: RGB composites across age, mass, size and A_V, and backgrounds.

Run ``python -m benchmarks.gallery [--preset m83-wfc3] [--seed 1]``. Writes
``benchmarks/results/gallery.png`` (noisy cutouts on the synthetic field, as the network sees them)
and ``benchmarks/results/gallery_noiseless.png`` (the same clusters without noise and background),
so that a person can check by eye that young clusters are blue and resolved into stars, old ones
red and smooth, that extinction reddens and dims, and what background-only samples look like
(plain field, chance grouping, single bright star).

Colour: red = reddest band, green = middle, blue = bluest band of the preset. Each band is divided
by the count rate of a zeroth-magnitude (Vega) star in it, so that a Vega-coloured source is
white; all panels share one asinh stretch, so brightness and colour compare across panels.
This script must not be imported by library code.
"""

from __future__ import annotations

import argparse
import logging
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.records import RESULTS_DIR  # noqa: E402
from simulators.cluster import ClusterSimulator  # noqa: E402

__all__ = ["main", "rgb", "aperture_colour", "make_gallery", "SWEEPS"]

log = logging.getLogger(__name__)

BASE = {"log_age": 7.5, "log_mass": 4.7, "log_rh": math.log10(3.0), "av": 0.3}
SWEEPS = {
    "age": (
        "log_age",
        [6.7, 7.2, 7.8, 8.5, 9.2, 10.0],
        lambda v: f"{10 ** (v - 6):.0f} Myr" if v < 9 else f"{10 ** (v - 9):.1f} Gyr",
    ),
    "mass": ("log_mass", [3.5, 4.0, 4.5, 5.0, 5.5], lambda v: f"M = 10^{v:.1f}"),
    "size": (
        "log_rh",
        [math.log10(0.6), 0.0, math.log10(2.5), math.log10(5), 1.0],
        lambda v: f"r_h = {10**v:.1f} pc",
    ),
    "A_V": ("av", [0.0, 0.75, 1.5, 2.25, 3.0], lambda v: f"A_V = {v:.2f}"),
}
_INDEX = {"log_age": 0, "log_mass": 1, "log_rh": 2, "av": 3}


def rgb(
    images: np.ndarray, zero_mag_rate: np.ndarray, stretch: float, q: float = 8.0
) -> np.ndarray:
    """Asinh RGB composite.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) e⁻/s per pixel, band order blue → red (C ≥ 3; the bluest, a middle and the
        reddest band are used).
    zero_mag_rate : numpy.ndarray
        (C,) e⁻/s of a zeroth-magnitude star in each band (colour normalisation).
    stretch : float
        Normalised intensity that maps to full scale (shared by all panels).
    q : float
        Asinh softening (higher: more of the faint light visible).

    Returns
    -------
    numpy.ndarray
        (N, H, W, 3) floats in [0, 1].
    """
    c = images.shape[1]
    pick = [c - 1, c // 2, 0]  # R, G, B
    x = images[:, pick] / zero_mag_rate[pick, None, None]
    x = np.clip(x, 0, None)
    return np.clip(np.arcsinh(q * x / stretch) / np.arcsinh(q), 0, 1).transpose(0, 2, 3, 1)


def aperture_colour(
    images: np.ndarray, zero_mag_rate: np.ndarray, r_h_px: np.ndarray
) -> np.ndarray:
    """Vega colour (bluest − reddest band, mag) of the light within 3 r_h (at least 3 px) of the cutout centre.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) e⁻/s per pixel.
    zero_mag_rate : numpy.ndarray
        (C,) e⁻/s of a zeroth-magnitude star per band.
    r_h_px : numpy.ndarray
        (N,) half-light radii in pixels.

    Returns
    -------
    numpy.ndarray
        (N,) colours in mag (NaN where the aperture flux is not positive).
    """
    h = images.shape[-1]
    yy, xx = np.mgrid[:h, :h] - (h - 1) / 2
    r = np.hypot(yy, xx)
    ap = r[None] <= np.maximum(3 * r_h_px, 3.0)[:, None, None]
    f = (images * ap[:, None]).sum((2, 3)) / zero_mag_rate
    with np.errstate(invalid="ignore", divide="ignore"):
        return -2.5 * np.log10(f[:, 0] / f[:, -1])


def _theta_rows() -> list[tuple[str, list[str], torch.Tensor]]:
    rows = []
    for name, (key, values, fmt) in SWEEPS.items():
        th = torch.tensor(
            [[BASE["log_age"], BASE["log_mass"], BASE["log_rh"], BASE["av"]]] * len(values)
        )
        th[:, _INDEX[key]] = torch.tensor(values)
        rows.append((name, [fmt(v) for v in values], th))
    return rows


def make_gallery(preset: str = "m83-wfc3", seed: int = 1, noisy: bool = True) -> plt.Figure:
    """Build the gallery figure (see the module docstring)."""
    opts = {} if noisy else {"background": "none", "noise": False}
    sim = ClusterSimulator(preset, offset_range=0.0, **opts)
    rows = _theta_rows()
    zero = np.asarray(sim.instrument.flux_scale()) * 10 ** (0.4 * sim.instrument.distance_modulus)
    panels, titles = [], []
    for i, (_name, labels, th) in enumerate(rows):
        b = sim.simulate(
            len(th), torch.Generator().manual_seed(seed + i), theta=th, label=torch.ones(len(th))
        )
        panels.append(b.images.cpu().numpy())
        col = aperture_colour(
            b.images.cpu().numpy(), zero, 10 ** th[:, 2].numpy() / sim.instrument.pc_per_pixel
        )
        titles.append(
            [
                f"{lab}\nS/N {v:.0f}, col {c:+.2f}"
                for lab, v, c in zip(labels, b.visibility.tolist(), col, strict=True)
            ]
        )
    n_bg = 6
    if noisy:
        sim_bg_hard = ClusterSimulator(preset, hard_negative_fraction=1.0)
        hard = sim_bg_hard.simulate(
            n_bg, torch.Generator().manual_seed(seed + 11), label=torch.zeros(n_bg)
        )
        kinds = {0: "field only", 1: "chance grouping", 2: "single bright star"}
        plain_sim = ClusterSimulator(preset, hard_negative_fraction=0.0)
        plain = plain_sim.simulate(
            2, torch.Generator().manual_seed(seed + 10), label=torch.zeros(2)
        )
        bg = torch.cat([plain.images, hard.images[: n_bg - 2]]).cpu().numpy()
        bg_kind = [0, 0, *hard.nuisances["hard_negative"][: n_bg - 2].tolist()]
        panels.append(bg)
        titles.append([f"background\n{kinds[int(k)]}" for k in bg_kind])
    # one stretch for all panels: the 99.5th percentile of the normalised reddest band of the base-like row
    ref = panels[1][:, -1] / zero[-1]
    stretch = float(np.percentile(ref, 99.5))
    ncol = max(len(p) for p in panels)
    fig, axes = plt.subplots(
        len(panels), ncol, figsize=(1.9 * ncol, 2.35 * len(panels)), squeeze=False
    )
    row_names = [*SWEEPS, "background"][: len(panels)]
    for r, (imgs, tt) in enumerate(zip(panels, titles, strict=True)):
        comp = rgb(imgs, zero, stretch)
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(comp):
                ax.imshow(comp[c], origin="lower", interpolation="nearest")
                ax.set_title(tt[c], fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(row_names[r], fontsize=9)
    base = (
        f"base: age {10 ** (BASE['log_age'] - 6):.0f} Myr, M = 10^{BASE['log_mass']} M☉, "
        f"r_h = {10 ** BASE['log_rh']:.1f} pc, A_V = {BASE['av']}"
    )
    kind = "noisy, synthetic field" if noisy else "noiseless, no background"
    fig.suptitle(
        f"{sim.instrument.name} ({', '.join(b.split('_')[-1] for b in sim.bands)}; "
        f"{sim.instrument.image_size}² px at {sim.instrument.pixel_scale}″/px) — {kind}\n{base}; "
        "R/G/B = reddest/middle/bluest band, Vega-normalised, common asinh stretch; "
        f"col = {sim.bands[0].split('_')[-1]} − {sim.bands[-1].split('_')[-1]} (Vega mag) within 3 r_h",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="m83-wfc3")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.preset == "m83-wfc3" else f"_{args.preset}"
    for noisy, stem in ((True, "gallery"), (False, "gallery_noiseless")):
        fig = make_gallery(args.preset, args.seed, noisy)
        path = RESULTS_DIR / f"{stem}{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
