"""Regenerate the shipped isochrone and HST photometry tables from the raw sources (build time only).

Usage::

    python -m simulators.tables.build            # isochrones + photometry
    python -m simulators.tables.build --only isochrones
    python -m simulators.tables.build --only extinction   # dust_extinction laws on the shipped BC table
    python -m simulators.tables.build --only law-identity # which law the MIST grid's A_V axis is

This module owns the *derivation* of the shipped tables; the simulator must never import it at run
time (it needs ``lachesis-grids``, ``astrolachesis`` (installed ``--no-deps``; read with h5py, never
imported), ``astro-sedpy``, ``pyphot``'s filter library file, ``h5py``, ``astropy`` and, for the
extinction laws, ``dust-extinction``).

Outputs (in this folder)
------------------------
``isochrones_mist.npz`` / ``isochrones_parsec.npz``
    Live stars of every isochrone on the 0.05-dex log-age nodes 6.0–10.1 at the shipped [Fe/H]
    values: EEP, initial mass (M☉, float64), log Teff (K), log g (cgs), log L (L☉), phase; rows of
    isochrone ``(i_feh, i_age)`` are ``rows[start[k]:start[k]+length[k]]`` with ``k = i_feh*n_age+i_age``.
    Remnants (MIST phases 6 and −9: post-AGB, white-dwarf cooling and end points) are removed;
    ``max_live_mass`` is the largest initial mass still alive (the last row).
``bc_hst.npz``
    Bolometric corrections BC = M_bol − M_band (Vega, M_bol☉ = 4.74) on the MIST C3K grid
    (Teff, log g, [Fe/H], A_V; R_V = 3.1) for the HST bands, reconstructed by :mod:`.sedfit`, and
    MIST's own Bessell UBVRI BCs.
``extinction_laws.npz``
    A_band(A_V) (mag) of the A_V = 0 SED of every node of ``bc_hst.npz`` reddened by ``dust_extinction``
    laws (F99 at R_V 2.0, 2.5, 3.1, 4.0, 5.0; G23 at 2.5, 3.1, 4.0; CCM89 at 3.1), on the same nodes and A_V axis, built by
    :mod:`.reddening`; selectable at run time with ``law=``/``rv=`` (the default stays the grid's own axis).
``bc_hst_provenance.json``, ``extinction_laws_provenance.json`` and ``PROVENANCE.md``
    Source versions, method, fit residuals, leave-one-band-out transfer errors, each extinction
    law's difference to the MIST grid axis, the measured identity of that axis (``grid_axis_identity``)
    and, from the isochrone files, where each family's isochrones end.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import logging
import os
from pathlib import Path

import numpy as np

from . import TABLE_DIR

__all__ = [
    "build_isochrones",
    "build_photometry",
    "build_extinction_laws",
    "build_law_identity",
    "main",
    "ISOCHRONE_FEH",
    "BC_FEH",
]

log = logging.getLogger(__name__)

#: [Fe/H] values of the shipped isochrones per family.
ISOCHRONE_FEH = {"mist": (-1.0, -0.75, -0.5, 0.0, 0.25, 0.5), "parsec": (0.0,)}
#: [Fe/H] nodes of the shipped BC table (MIST C3K nodes bracketing the isochrone values).
BC_FEH = (-1.0, -0.75, -0.5, 0.0, 0.25, 0.5)
#: Shipped log-age nodes (log10 yr).
AGE_NODES = np.round(np.arange(6.0, 10.1 + 1e-9, 0.05), 2)

_GRID_FILES = {"mist": "mist_v2.5_vvcrit0.4.h5", "parsec": "parsec_v1.25.h5"}


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def grid_file(family: str) -> Path:
    """Path of a ``lachesis-grids`` HDF5 isochrone grid (raises ImportError if not installed)."""
    import lachesis_grids

    return Path(os.path.dirname(lachesis_grids.__file__)) / "grids" / _GRID_FILES[family]


def read_isochrone_grid(family: str, fehs, ages) -> dict:
    """Read raw isochrones from ``lachesis-grids`` (sparse_v1 storage) for the given nodes.

    Parameters
    ----------
    family : {"mist", "parsec"}
    fehs, ages : sequence of float
        [Fe/H] (dex) and log10 age (yr) values; each must be a grid node.

    Returns
    -------
    dict
        ``{(feh, age): {"eep", "initial_mass", "log_Teff", "log_g", "log_L", "phase"}}`` with NaN gap
        rows removed, rows sorted by EEP.
    """
    import h5py

    out = {}
    with h5py.File(grid_file(family), "r") as h:
        n_feh, n_age, _, _ = (int(v) for v in h.attrs["shape"])
        cols = [c.decode() if isinstance(c, bytes) else str(c) for c in h.attrs["columns"]]
        grid_feh = np.round(h["feh_values"][:], 3)
        grid_age = np.round(h["age_values"][:], 3)
        lengths = h["lengths"][:].astype(np.int64)
        start = np.concatenate([[0], np.cumsum(lengths)])
        values = h["values"]
        for feh in fehs:
            i_feh = int(np.flatnonzero(np.isclose(grid_feh, feh))[0])
            for age in ages:
                i_age = int(np.flatnonzero(np.isclose(grid_age, age))[0])
                k = i_feh * n_age + i_age
                v = values[start[k] : start[k + 1]]
                v = v[
                    np.all(
                        np.isfinite(
                            v[
                                :,
                                [
                                    cols.index(c)
                                    for c in ("initial_mass", "log_Teff", "log_g", "log_L")
                                ],
                            ]
                        ),
                        axis=1,
                    )
                ]
                v = v[np.argsort(v[:, cols.index("eep")])]
                out[(feh, age)] = {
                    c: v[:, cols.index(c)]
                    for c in ("eep", "initial_mass", "log_Teff", "log_g", "log_L", "phase")
                }
    return out


def _live_mask(family: str, iso: dict) -> np.ndarray:
    """Live stars. MIST keeps phases −1 (PMS), 0 (MS), 2 (RGB), 3 (CHeB), 4 (EAGB), 5 (TPAGB) and 9 (WR);
    it drops 6 (post-AGB + white-dwarf cooling) and −9 (white-dwarf end points). PARSEC here has no remnants."""
    if family == "mist":
        return np.isin(np.round(iso["phase"]).astype(int), [-1, 0, 2, 3, 4, 5, 9])
    return np.ones(len(iso["eep"]), dtype=bool)


def build_isochrones(family: str, fehs=None, out_dir: Path = TABLE_DIR) -> Path:
    """Write ``isochrones_<family>.npz`` (live stars per isochrone on the shipped nodes).

    Rows with non-increasing initial mass (rare numerical ties in the source grids) are dropped so
    that every shipped isochrone is strictly monotone in initial mass along EEP.
    """
    fehs = ISOCHRONE_FEH[family] if fehs is None else fehs
    raw = read_isochrone_grid(family, fehs, AGE_NODES)
    cols = {c: [] for c in ("eep", "initial_mass", "log_Teff", "log_g", "log_L", "phase")}
    starts, lengths, max_live = [], [], []
    n = 0
    for feh in fehs:
        for age in AGE_NODES:
            iso = raw[(feh, age)]
            live = _live_mask(family, iso)
            m = iso["initial_mass"]
            keep = live.copy()
            # strict monotonicity in initial mass over the kept rows
            last = -np.inf
            for i in np.flatnonzero(keep):
                if m[i] <= last:
                    keep[i] = False
                else:
                    last = m[i]
            max_live.append(float(m[keep].max()))
            for c in cols:
                cols[c].append(iso[c][keep])
            starts.append(n)
            lengths.append(int(keep.sum()))
            n += int(keep.sum())
    path = out_dir / f"isochrones_{family}.npz"
    np.savez_compressed(
        path,
        feh_values=np.asarray(fehs, dtype=np.float64),
        age_values=AGE_NODES.astype(np.float64),
        start=np.asarray(starts, dtype=np.int64),
        length=np.asarray(lengths, dtype=np.int64),
        max_live_mass=np.asarray(max_live, dtype=np.float64),
        eep=np.concatenate(cols["eep"]).astype(np.int16),
        initial_mass=np.concatenate(cols["initial_mass"]).astype(np.float64),
        log_Teff=np.concatenate(cols["log_Teff"]).astype(np.float32),
        log_g=np.concatenate(cols["log_g"]).astype(np.float32),
        log_L=np.concatenate(cols["log_L"]).astype(np.float32),
        phase=np.round(np.concatenate(cols["phase"]) * 100).astype(
            np.int16
        ),  # phase × 100 (PARSEC labels are fractional)
        source=np.asarray(
            f"lachesis-grids {_version('lachesis-grids')} {_GRID_FILES[family]} sha256={_sha256(grid_file(family))[:16]}"
        ),
    )
    log.info("wrote %s (%d rows, %.1f MB)", path, n, path.stat().st_size / 1e6)
    return path


def build_photometry(out_dir: Path = TABLE_DIR, fehs=BC_FEH) -> Path:
    """Reconstruct HST-band BCs from the MIST C3K BC grid and write ``bc_hst.npz`` + provenance."""
    from . import sedfit

    return sedfit.build(out_dir=out_dir, fehs=fehs)


def build_extinction_laws(out_dir: Path = TABLE_DIR) -> Path:
    """Redden the A_V = 0 SED of every node of the shipped ``bc_hst.npz`` with ``dust_extinction`` laws and
    write ``extinction_laws.npz`` + ``extinction_laws_provenance.json`` (see :mod:`.reddening`)."""
    from . import reddening

    return reddening.build(out_dir=out_dir, bc_path=out_dir / "bc_hst.npz")


def build_law_identity(out_dir: Path = TABLE_DIR) -> Path:
    """Measure which law the MIST grid's A_V axis is (:func:`.reddening.grid_axis_identity`) and store it as
    ``grid_axis_identity`` in ``extinction_laws_provenance.json`` (the tables themselves are unchanged)."""
    from . import reddening

    path = out_dir / "extinction_laws_provenance.json"
    prov = json.loads(path.read_text())
    prov["grid_axis_identity"] = reddening.grid_axis_identity()
    path.write_text(json.dumps(prov, indent=1))
    return path


def _identity_md(ident: dict) -> list[str]:
    """PROVENANCE.md lines of the measured identity of the MIST grid's A_V axis."""
    rms = ", ".join(f"{k} {v['rms']:.4f}" for k, v in ident["law_minus_grid"].items())
    best = ident["law_minus_grid"][ident["best_law"]]
    worst = max(abs(v) for k, v in best.items() if k != "rms")
    cells = "; ".join(
        f"{b.split('_')[-1]} {v['grid_axis']:.3f} / {v['CCM89_direct']:.3f} / {v['CCM89_reconstructed']:.3f}"
        for b, v in ident["hst"].items()
        if b.startswith("WFC3_UVIS")
    )
    return [
        f'Identity of the MIST grid axis (the default, `law="mist"`), measured over {ident["n_nodes"]} stellar '
        f"nodes at A_V = {ident['a_v']:g} (`reddening.grid_axis_identity`): rms of law − grid axis over the MIST "
        f"bands {', '.join(ident['fit_bands'])}: {rms} mag; best {ident['best_law']} (largest |median| per band "
        f"{worst:.3f} mag). WFC3/UVIS A_band of the grid axis / CCM89 on the SED / CCM89 through the same "
        f"per-node reconstruction: {cells}. So the axis is CCM89 (R_V = 3.1) in MIST's bands, and its near-UV "
        "excess in F275W/F336W comes from the reconstruction, which cannot follow the 2175 A bump "
        "(`simulators.photometry.LAW_DESCRIPTIONS`).",
        "",
    ]


def _extinction_md(out_dir: Path) -> list[str]:
    """PROVENANCE.md section of the extinction-law table (empty if it was not built)."""
    path = out_dir / "extinction_laws_provenance.json"
    if not path.exists():
        return []
    prov = json.loads(path.read_text())
    laws = ", ".join(f"{x['name']} (R_V {x['rv']})" for x in prov["laws"])
    out = [
        "## Extinction laws (`extinction_laws.npz`)",
        "",
        prov["method"] + ".",
        "",
        f"Laws: {laws}. A_V normalisation: {prov['a_v_normalisation']}. Sources: "
        + json.dumps(prov["sources"]),
        "",
        "Largest fraction of any band's throughput weight outside a law's validity range: "
        + f"{max(max(v.values()) for v in prov['band_weight_fraction_outside_law_range'].values()):.3g} "
        "(all shipped curves lie within 1980 Å–1.7 µm; the laws cover ≥ 1000 Å–3.3 µm).",
        "",
        f"Law − MIST grid axis, A_band at A_V = 1 (mag): median over the {prov['n_stellar_nodes']} stellar nodes "
        "(solar [Fe/H]) / largest |difference|:",
        "",
    ]
    if "grid_axis_identity" in prov:
        out[-2:-2] = _identity_md(prov["grid_axis_identity"])
    first = next(iter(prov["law_minus_mist_axis"].values()))["A_V=1"]
    out += ["| law | " + " | ".join(first) + " |", "|---" * (len(first) + 1) + "|"]
    for law, rows in prov["law_minus_mist_axis"].items():
        r = rows["A_V=1"]
        out.append(
            f"| {law} | "
            + " | ".join(f"{v['median']:+.3f} / {v['max_abs']:.3f}" for v in r.values())
            + " |"
        )
    return out + [""]


def _phase_coverage_md(out_dir: Path) -> list[str]:
    """PROVENANCE.md section: where each shipped isochrone family ends, per run of log-age nodes ([Fe/H] = 0)."""
    out = [
        "## Isochrone phase coverage ([Fe/H] = 0)",
        "",
        "Last EEP, last phase label and the largest live initial mass of the shipped node isochrones "
        "(runs of nodes with the same last label). PARSEC labels: 1 MS, 2 Hertzsprung gap, 3 RGB / red-supergiant "
        "ascent, 4-6 core-He burning, 7 E-AGB, 8 TP-AGB; MIST: 0 MS, 2 RGB, 3 CHeB, 4 E-AGB, 5 TP-AGB, 9 WR. "
        "The PARSEC grid of lachesis-grids never reaches label 7: it has no E-AGB, TP-AGB or post-AGB at any "
        "age, no core-He burning of massive stars at log age 6.5-7.15 and no red clump at log age >= 9.25 "
        "(see `simulators/isochrones.py`); no installable package ships PARSEC isochrones that have them.",
        "",
        "| family | log age | last EEP | last phase label | max live initial mass (M☉), first-last node | "
        "max log L, first-last node |",
        "|---|---|---|---|---|---|",
    ]
    for fam in ("mist", "parsec"):
        with np.load(out_dir / f"isochrones_{fam}.npz", allow_pickle=False) as d:
            i0 = int(np.flatnonzero(np.isclose(d["feh_values"], 0.0))[0])
            n_age = len(d["age_values"])
            runs: list[list] = []
            for i, age in enumerate(d["age_values"]):
                k = i0 * n_age + i
                s, n = int(d["start"][k]), int(d["length"][k])
                last = float(d["phase"][s : s + n].max()) / 100.0
                row = [
                    float(age),
                    int(d["eep"][s + n - 1]),
                    last,
                    float(d["max_live_mass"][k]),
                    float(d["log_L"][s : s + n].max()),
                ]
                if runs and runs[-1][0][2] == last:
                    runs[-1][1] = row
                else:
                    runs.append([row, row])
            for a, b in runs:
                eep = f"{a[1]}" if a[1] == b[1] else f"{a[1]}-{b[1]}"
                out.append(
                    f"| {fam} | {a[0]:.2f}-{b[0]:.2f} | {eep} | {a[2]:g} | {a[3]:.3g}-{b[3]:.3g} | "
                    f"{a[4]:.2f}-{b[4]:.2f} |"
                )
    return out + [""]


def write_provenance_md(out_dir: Path = TABLE_DIR) -> Path:
    """Write the human-readable ``PROVENANCE.md`` from ``bc_hst_provenance.json`` and the isochrone files."""
    prov = json.loads((out_dir / "bc_hst_provenance.json").read_text())
    lines = [
        "# Provenance of the shipped physics tables",
        "",
        "Regenerate with `python -m simulators.tables.build`.",
        "",
    ]
    for fam in ("mist", "parsec"):
        with np.load(out_dir / f"isochrones_{fam}.npz", allow_pickle=False) as d:
            lines.append(
                f"- `isochrones_{fam}.npz`: {d['source']}; [Fe/H] {list(map(float, d['feh_values']))}; log age "
                f"{d['age_values'][0]:.2f}-{d['age_values'][-1]:.2f} step 0.05; {int(d['length'].sum())} live-star rows."
            )
    with np.load(out_dir / "bc_hst.npz", allow_pickle=False) as d:
        lines.append(
            f"- `bc_hst.npz` (`{d['table_id']}`): BC (mag) on Teff {d['teff'][0]:.0f}-{d['teff'][-1]:.0f} K ({len(d['teff'])}), "
            f"log g {d['logg'][0]}-{d['logg'][-1]} ({len(d['logg'])}), [Fe/H] {list(map(float, d['feh']))}, A_V {[round(float(a), 3) for a in d['av']]}; "
            f"bands {', '.join(map(str, d['bands']))}."
        )
    lines += [
        "",
        "## Method",
        "",
        prov["method"] + ".",
        "",
        "Sources: " + json.dumps(prov["sources"]),
        "",
        "Fitted MIST bands (name, curve, system): "
        + "; ".join(", ".join(b) for b in prov["fit_bands"]),
        "",
        "HST curves: " + "; ".join(", ".join(b) for b in prov["hst_bands"]),
        "",
        f"## Residuals (median |error| mag over the {prov['n_stellar_nodes']} grid nodes visited by solar MIST isochrones, A_V = 0)",
        "",
    ]
    for sec in ("fit_residual", "leave_one_out", "blackbody_minus_reconstructed_hst"):
        rows = prov[sec]
        bins = list(next(iter(rows.values())).keys())
        lines += [
            f"### {sec}",
            "",
            "| band | " + " | ".join(bins) + " |",
            "|---" * (len(bins) + 1) + "|",
        ]
        for b, r in rows.items():
            lines.append(
                f"| {b} | "
                + " | ".join(f"{r[k]['median_abs']:.3f}" if r[k] else "-" for k in bins)
                + " |"
            )
        lines.append("")
    lines += _phase_coverage_md(out_dir)
    lines += _extinction_md(out_dir)
    lines.append(
        "Full validation: `benchmarks/results/photometry.md` (`python -m benchmarks.photometry`)."
    )
    path = out_dir / "PROVENANCE.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> None:
    """Command-line entry point (see module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.tables.build", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--only", choices=["isochrones", "photometry", "extinction", "law-identity"], default=None
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.only in (None, "isochrones"):
        for fam in ("mist", "parsec"):
            build_isochrones(fam)
    if args.only in (None, "photometry"):
        build_photometry()
    if args.only in (None, "extinction"):
        build_extinction_laws()
    if args.only in (None, "extinction", "law-identity"):
        build_law_identity()
    (out := TABLE_DIR / "build_versions.json").write_text(
        json.dumps(
            {
                p: _version(p)
                for p in (
                    "lachesis-grids",
                    "astrolachesis",
                    "astro-sedpy",
                    "pyphot",
                    "dust-extinction",
                    "h5py",
                    "numpy",
                    "astropy",
                )
            },
            indent=2,
        )
    )
    log.info("wrote %s", out)
    log.info("wrote %s", write_provenance_md())


if __name__ == "__main__":
    main()
