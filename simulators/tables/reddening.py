"""Extinction per band for selectable ``dust_extinction`` laws, on the reconstructed SEDs (build time only).

Method
------
For every (Teff, log g, [Fe/H]) node of the shipped BC table, the A_V = 0 SED is the one
:mod:`.sedfit` reconstructs from the MIST C3K BCs (blackbody × 10^(−0.4 r(λ)), same fitter, same
settings, so it is the SED behind ``bc_hst.npz``). It is reddened by a law k(λ) = A(λ)/A_V from
``dust_extinction`` and integrated through the same photon-counting curves as the BC table (HST
total-throughput curves; Bessell UBVRI through astro-sedpy's curves, i.e. the curves the SED was
fitted to):

    A_band(A_V) = −2.5 log10[ ∫ F_λ 10^(−0.4 A_V k(λ)) λ T_b dλ / ∫ F_λ λ T_b dλ ]   (mag),

on the A_V nodes of the shipped table (0–6 mag). A_V is each law's own normalisation
(``dust_extinction``: k = 1 at its V reference wavelength, 0.541 µm for F99, 0.549 µm for G23/CCM89),
not a band-integrated V: the shipped tests measure A_Bessell_V/A_V for a solar-type star.

Validity ranges: F99 and CCM89 are defined for 1000 Å–3.33 µm, G23 for 912 Å–32 µm. Every curve used
here has its non-zero throughput inside 1980 Å–1.7 µm (F275W from 2136 Å, with its red leak to
≈ 1 µm), so no band needs the laws outside their range; the code still evaluates k at wavelengths
clipped to the range (constant continuation) and records, per law and band, the fraction of the
band's throughput weight that fell outside (all 0 for the shipped bands). Note that F275W's blue
edge sits on the red wing of the 2175 Å bump, where the laws differ most.

This module must not be imported at simulation time.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from . import sedfit

__all__ = [
    "LAWS",
    "OUT_BANDS",
    "FILE_AXES",
    "IDENTITY_CANDIDATES",
    "law_curve",
    "reddened_extinction",
    "grid_axis_identity",
    "build",
]

log = logging.getLogger(__name__)

#: (law name in ``dust_extinction.parameter_averages``, R_V values) shipped in ``extinction_laws.npz``.
LAWS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("F99", (2.0, 2.5, 3.1, 4.0, 5.0)),
    ("G23", (2.5, 3.1, 4.0)),
    ("CCM89", (3.1,)),
)
#: Output bands and their curves, in the order of ``bc_hst.npz``.
OUT_BANDS = list(sedfit.HST_BANDS) + [
    (b[0], b[1]) for b in sedfit.FIT_BANDS if b[0] in sedfit.BESSELL
]
#: A_band is rounded to this step (mag) before storing (error ≤ 5e-4 mag, far below every other error of the
#: table; with the axis order of the file it halves the compressed size: 2.2 MB instead of 8.8 MB at 1e-4).
ROUND_MAG = 1e-3
#: Axis order of ``a_band`` in the file (chosen for compression); run time transposes to (law, feh, teff, logg, av, band).
FILE_AXES = "law,av,band,feh,teff,logg"


def law_curve(name: str, rv: float, wave=sedfit.WAVE) -> tuple[np.ndarray, np.ndarray]:
    """k(λ) = A(λ)/A_V of a ``dust_extinction`` law on ``wave`` (Å), clipped to the law's validity range.

    Parameters
    ----------
    name : str
        Class name in ``dust_extinction.parameter_averages`` (e.g. ``"F99"``, ``"G23"``, ``"CCM89"``).
    rv : float
        R_V = A_V / E(B−V).
    wave : ndarray
        Wavelengths in Å.

    Returns
    -------
    k : ndarray
        A(λ)/A_V (dimensionless).
    outside : ndarray of bool
        Wavelengths outside the law's range (k there is the value at the nearest range edge).
    """
    import astropy.units as u
    from dust_extinction import parameter_averages as pa

    law = getattr(pa, name)(Rv=rv)
    x = 1e4 / np.asarray(wave, float)  # µm⁻¹
    lo, hi = law.x_range
    outside = (x < lo) | (x > hi)
    xc = np.clip(x, lo * (1 + 1e-9), hi * (1 - 1e-9))
    return np.asarray(law(xc / u.micron), float), outside


def reddened_extinction(
    sed: np.ndarray, W: np.ndarray, k: np.ndarray, av: np.ndarray
) -> np.ndarray:
    """A_band (mag) of SEDs behind a screen following k(λ), for each A_V.

    Parameters
    ----------
    sed : ndarray (n_node, n_wave)
        F_λ on the wavelength grid (any normalisation).
    W : ndarray (n_band, n_wave)
        Photon-counting quadrature weights T_b λ dλ (:func:`.sedfit.band_weights`).
    k : ndarray (n_law, n_wave)
        A(λ)/A_V of each law.
    av : ndarray (n_av,)
        A_V (mag).

    Returns
    -------
    ndarray (n_node, n_law, n_av, n_band)
        A_band in mag.
    """
    ext = 10 ** (-0.4 * av[None, :, None] * k[:, None, :])  # (law, av, wave)
    M = ext[:, :, None, :] * W[None, None, :, :]  # (law, av, band, wave)
    red = sed @ M.reshape(-1, W.shape[1]).T  # (node, law·av·band)
    base = sed @ W.T  # (node, band)
    nl, na, nb = k.shape[0], len(av), W.shape[0]
    return -2.5 * np.log10(red.reshape(-1, nl, na, nb) / base[:, None, None, :])


#: ``dust_extinction`` laws (R_V 3.1) tested as the law behind the MIST C3K grid's A_V axis: those defined over
#: the whole GALEX FUV–2MASS Ks range of the fitted bands.
IDENTITY_CANDIDATES = ("CCM89", "O94", "F99", "F04", "F19", "G23")


def grid_axis_identity(
    feh: float = 0.0, av: float = 1.0, alpha: float = 0.01, candidates=IDENTITY_CANDIDATES
) -> dict:
    """Which law the MIST C3K grid's own A_V axis is, and what the SED reconstruction makes of it in HST bands.

    For every (Teff, log g) node visited by the solar MIST isochrones: (1) MIST's own extinction
    A_b = BC_b(0) − BC_b(A_V) in the fitted bands (GALEX to 2MASS; WISE left out: < 0.06 mag per mag)
    is compared with each candidate law applied to the reconstructed A_V = 0 SED through the same
    curves; (2) the HST-band extinction of the grid axis (SED fitted separately at A_V = 0 and at
    A_V) is compared with CCM89 applied to the SED directly and with CCM89 sent through the same
    reconstruction (synthetic fitted-band BCs of the CCM89-reddened SED, refitted).

    Parameters
    ----------
    feh : float
        [Fe/H] node (dex).
    av : float
        A_V node of the grid (mag).
    alpha : float
        SED-fit smoothing (as for ``bc_hst.npz``).
    candidates : sequence of str
        ``dust_extinction.parameter_averages`` class names, each at R_V = 3.1.

    Returns
    -------
    dict
        ``{"n_nodes", "fit_bands", "law_minus_grid": {law: {"rms", band: median difference}},
        "best_law", "hst": {band: {"grid_axis", "CCM89_direct", "CCM89_reconstructed"}}}``; all
        extinctions in mag at A_V = ``av`` (medians over the nodes).
    """
    grid = sedfit.load_bc_grid([feh])
    names = grid["bands"]
    i0 = int(np.flatnonzero(grid["av"] == 0.0)[0])
    i1 = int(np.flatnonzero(np.isclose(grid["av"], av))[0])
    use = [j for j, b in enumerate(names) if not b.startswith("WISE")]
    fitter = sedfit.SEDFitter(
        [b[1] for b in sedfit.FIT_BANDS], [b[2] for b in sedfit.FIT_BANDS], alpha=alpha
    )
    hW = sedfit.band_weights([b[1] for b in sedfit.HST_BANDS])
    href = sedfit.ref_integrals([b[1] for b in sedfit.HST_BANDS], ["Vega"] * len(sedfit.HST_BANDS))
    k = np.stack([law_curve(n, 3.1)[0] for n in candidates])
    j_ccm = list(candidates).index("CCM89")
    stars = sedfit.stellar_nodes(grid)
    native, laws, axis, direct, trip = [], [], [], [], []
    for it, teff in enumerate(grid["teff"]):
        bc0, bc1 = grid["bc"][0, it, stars[it], i0], grid["bc"][0, it, stars[it], i1]
        ok = np.all(np.isfinite(bc0), 1) & np.all(np.isfinite(bc1), 1)
        if not ok.any():
            continue
        bc0, bc1 = bc0[ok], bc1[ok]
        c0, c1 = fitter.fit(teff, bc0), fitter.fit(teff, bc1)
        sed = 10 ** (-0.4 * (c0 @ fitter.phi.T)) * sedfit.bb_shape(np.array([teff]))[0][None, :]
        native.append(bc0 - bc1)
        laws.append(reddened_extinction(sed, fitter.W, k, np.array([av]))[:, :, 0, :])
        h0 = fitter.predict(teff, c0, hW, href)
        axis.append(h0 - fitter.predict(teff, c1, hW, href))
        direct.append(reddened_extinction(sed, hW, k[j_ccm : j_ccm + 1], np.array([av]))[:, 0, 0])
        a_fit = reddened_extinction(sed, fitter.W, k[j_ccm : j_ccm + 1], np.array([av]))[:, 0, 0]
        trip.append(h0 - fitter.predict(teff, fitter.fit(teff, bc0 - a_fit), hW, href))
    native, laws = np.concatenate(native), np.concatenate(laws)
    diff = laws[:, :, use] - native[:, None, use]  # (node, law, band)
    out = {
        "n_nodes": int(len(native)),
        "a_v": av,
        "fit_bands": [names[j] for j in use],
        "grid_axis": {names[j]: float(np.median(native[:, j])) for j in use},
        "law_minus_grid": {
            law: {
                "rms": float(np.sqrt(np.mean(diff[:, i] ** 2))),
                **{names[j]: float(np.median(diff[:, i, n])) for n, j in enumerate(use)},
            }
            for i, law in enumerate(candidates)
        },
    }
    out["best_law"] = min(out["law_minus_grid"], key=lambda x: out["law_minus_grid"][x]["rms"])
    axis, direct, trip = (np.concatenate(x) for x in (axis, direct, trip))
    out["hst"] = {
        b[0]: {
            "grid_axis": float(np.median(axis[:, j])),
            "CCM89_direct": float(np.median(direct[:, j])),
            "CCM89_reconstructed": float(np.median(trip[:, j])),
        }
        for j, b in enumerate(sedfit.HST_BANDS)
    }
    return out


def _stats(d: np.ndarray) -> dict:
    d = d[np.isfinite(d)]
    return {
        "median": float(np.median(d)),
        "median_abs": float(np.median(np.abs(d))),
        "max_abs": float(np.max(np.abs(d))),
    }


def build(out_dir: Path, bc_path: Path, alpha: float = 0.01) -> Path:
    """Write ``extinction_laws.npz`` and ``extinction_laws_provenance.json``; return the npz path.

    Parameters
    ----------
    out_dir : Path
        Output folder.
    bc_path : Path
        The shipped ``bc_hst.npz`` (its grid nodes and A_V axis are reused; its MIST-axis
        extinction is the comparison in the provenance).
    alpha : float
        SED-fit smoothing, as used for ``bc_hst.npz``.
    """
    import importlib.metadata as md

    from dust_extinction import parameter_averages as pa
    from tqdm import tqdm

    with np.load(bc_path, allow_pickle=False) as d:
        feh, teff, logg, av = d["feh"], d["teff"], d["logg"], d["av"]
        bands = [str(b) for b in d["bands"]]
        bc_hst, table_id = d["bc"], str(d["table_id"])
    if bands != [b[0] for b in OUT_BANDS]:
        raise RuntimeError(
            f"band order of {bc_path} {bands} differs from {[b[0] for b in OUT_BANDS]}"
        )
    grid = sedfit.load_bc_grid(list(map(float, feh)))
    if not (
        np.allclose(grid["teff"], teff)
        and np.allclose(grid["logg"], logg)
        and np.allclose(grid["av"], av)
    ):
        raise RuntimeError(
            "MIST grid nodes differ from the shipped BC table; rebuild the photometry first"
        )
    i_av0 = int(np.flatnonzero(grid["av"] == 0.0)[0])
    fitter = sedfit.SEDFitter(
        [b[1] for b in sedfit.FIT_BANDS], [b[2] for b in sedfit.FIT_BANDS], alpha=alpha
    )
    W = sedfit.band_weights([b[1] for b in OUT_BANDS])
    variants = [(name, rv) for name, rvs in LAWS for rv in rvs]
    ks, outside = zip(*(law_curve(n, rv) for n, rv in variants), strict=True)
    k = np.stack(ks)
    wsum = W.sum(1)
    frac_out = {
        f"{n}:{rv}": {b[0]: float(W[j, o].sum() / wsum[j]) for j, b in enumerate(OUT_BANDS)}
        for (n, rv), o in zip(variants, outside, strict=True)
    }
    nf, nt, ng, na, nb = len(feh), len(teff), len(logg), len(av), len(bands)
    a = np.zeros((len(variants), nf, nt, ng, na, nb), np.float32)
    for it in tqdm(range(nt), desc="reddened SEDs per Teff", disable=not os.isatty(2)):
        bc = grid["bc"][:, it, :, i_av0].reshape(nf * ng, -1)  # (feh·logg, fit band) at A_V = 0
        c = fitter.fit(float(teff[it]), bc)
        sed = 10 ** (-0.4 * (c @ fitter.phi.T)) * sedfit.bb_shape(np.array([teff[it]]))[0][None, :]
        res = reddened_extinction(sed, W, k, av)  # (feh·logg, law, av, band)
        a[:, :, it] = (
            np.round(res / ROUND_MAG)
            .reshape(nf, ng, len(variants), na, nb)
            .transpose(2, 0, 1, 3, 4)
            * ROUND_MAG
        )
    # comparison with the MIST grid's own A_V axis at the nodes the solar isochrones visit
    stars = sedfit.stellar_nodes(grid)
    i0 = int(np.flatnonzero(np.isclose(feh, 0.0))[0])
    mist = (bc_hst[i0][:, :, :1] - bc_hst[i0])[stars]  # (node, av, band)
    tt = np.broadcast_to(teff[:, None], stars.shape)[stars]
    bins = {
        f"median {lo:.0f}-{hi:.0f} K" if hi < 1e8 else f"median {lo:.0f}-inf K": (tt >= lo)
        & (tt < hi)
        for lo, hi in sedfit.TEFF_BINS
    }
    cmp = {}
    for v, (n, rv) in enumerate(variants):
        rows = {}
        for x in (1.0, float(av[-1])):
            j = int(np.flatnonzero(np.isclose(av, x))[0])
            diff = a[v, i0][stars][:, j] - mist[:, j]  # (node, band)
            rows[f"A_V={x:g}"] = {
                b: {
                    **_stats(diff[:, ib]),
                    **{
                        name: float(np.median(diff[sel, ib])) if sel.any() else None
                        for name, sel in bins.items()
                    },
                }
                for ib, b in enumerate(bands)
            }
        cmp[f"{n}:{rv}"] = rows
    version = md.version("dust-extinction")
    prov = {
        "table": "extinction_laws",
        "method": "A_V=0 SED of every BC-table node reconstructed from the MIST C3K BCs (simulators.tables.sedfit, "
        f"alpha={alpha}) -> multiplied by 10^(-0.4 A_V k(lambda)) of a dust_extinction law -> integrated through the "
        "same photon-counting curves (HST total throughput; Bessell UBVRI via astro-sedpy) -> A_band = -2.5 log10 "
        f"(reddened/unreddened) on the table's A_V nodes, rounded to {ROUND_MAG} mag; run time: "
        "BC(A_V) = BC_mist(A_V=0) - A_band(A_V)",
        "laws": [
            {"name": n, "rv": rv, "x_range_per_um": list(map(float, getattr(pa, n)(Rv=rv).x_range))}
            for n, rv in variants
        ],
        "a_v_normalisation": "each law's own A(V) (dust_extinction k = 1 at its V reference wavelength)",
        "sources": {
            "dust-extinction": version,
            "astro-sedpy": md.version("astro-sedpy"),
            "pyphot": md.version("pyphot"),
            "astrolachesis": md.version("astrolachesis"),
            "bc_table": table_id,
        },
        "bands": [list(b) for b in OUT_BANDS],
        "band_weight_fraction_outside_law_range": frac_out,
        "law_minus_mist_axis": cmp,
        "n_stellar_nodes": int(stars.sum()),
    }
    path = out_dir / "extinction_laws.npz"
    np.savez_compressed(
        path,
        a_band=np.ascontiguousarray(np.moveaxis(a, (4, 5), (1, 2))),  # FILE_AXES
        axes=np.asarray(FILE_AXES),
        laws=np.asarray([n for n, _ in variants]),
        rv=np.asarray([rv for _, rv in variants], float),
        feh=feh,
        teff=teff,
        logg=logg,
        av=av,
        bands=np.asarray(bands),
        bc_table_id=np.asarray(table_id),
        table_id=np.asarray(f"dust_extinction-{version}-on-sedfit-v1"),
    )
    (out_dir / "extinction_laws_provenance.json").write_text(json.dumps(prov, indent=1))
    log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path
