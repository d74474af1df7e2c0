"""Fit the photometric-error presets of the catalogue simulator from real LEGUS catalogues.

This module owns the reproducible build of ``simulators/presets/catalogue/legus.json``: it reads
one LEGUS catalogue per band set ("layout"), fits every band's magnitude–error relation
(:func:`simulators.photerrors.fit_band_errors`), and writes the preset with the command that
made it. It must not simulate or train.

Run (from the repository root)::

    python -m sbicluster.catalog_errors \\
        --uvis ../shared/data/legus/hlsp_legus_hst_wfc3_ngc1313-e_multiband_v1_padagb-mwext-avgapcor.tab \\
        --acs-uvis ../shared/data/legus/hlsp_legus_hst_acs-wfc3_ngc628-c_multiband_v1_padagb-mwext-avgapcor.tab

Band columns of the preset: WFC3/UVIS F275W, F336W, F438W, ACS/WFC F435W, WFC3/UVIS F555W,
WFC3/UVIS F814W, ACS/WFC F814W. The shipped photometry table has no ACS/WFC F555W, so an ACS
F555W magnitude is read into the WFC3/UVIS F555W column (``file_band_proxies``; the two
filters' Vega magnitudes of cluster SEDs differ by a few hundredths of a magnitude, which the
fitted error floor of 0.03–0.06 mag does not fully cover for very red or blue clusters).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from simulators.catalogue import CATALOGUE_PRESET_DIR
from simulators.photerrors import fit_band_errors
from simulators.photometry import SUPPORTED_BANDS

from .catalog_io import read_photometry_catalog

__all__ = ["BAND_COLUMNS", "FILE_BAND_PROXIES", "build_legus_preset", "main"]

BAND_COLUMNS = (
    "WFC3_UVIS_F275W",
    "WFC3_UVIS_F336W",
    "WFC3_UVIS_F438W",
    "ACS_WFC_F435W",
    "WFC3_UVIS_F555W",
    "WFC3_UVIS_F814W",
    "ACS_WFC_F814W",
)
"""Band columns of the LEGUS catalogue models (every band of both LEGUS band sets)."""

FILE_BAND_PROXIES = {"ACS_WFC_F555W": "WFC3_UVIS_F555W"}
"""File band → model column where the photometry table lacks the file's band."""

SUPPORTED_FILE_BANDS = tuple(SUPPORTED_BANDS) + tuple(FILE_BAND_PROXIES)
"""Bands a catalogue file may hold for these models."""


def _layout(path: Path, distance_modulus: float) -> dict:
    cat = read_photometry_catalog(path, supported=SUPPORTED_FILE_BANDS)
    models = {}
    for j, band in enumerate(cat.bands):
        column = FILE_BAND_PROXIES.get(band, band)
        nondet = int((cat.state[:, j] == 2).sum())
        fit = fit_band_errors(column, cat.mag[:, j], cat.err[:, j], nondetected=nondet)
        models[column] = fit.to_dict()
    return {
        "catalogue": path.name,
        "file_bands": list(cat.bands),
        "rows": len(cat),
        "distance_modulus": distance_modulus,
        "error_models": models,
    }


def build_legus_preset(uvis: Path, acs_uvis: Path, command: str) -> dict:
    """The LEGUS catalogue preset (see the module docstring) fitted to two catalogues.

    Parameters
    ----------
    uvis, acs_uvis : Path
        LEGUS catalogues of a WFC3/UVIS-only field and of an ACS + WFC3/UVIS field.
    command : str
        The command line that made it (recorded).
    """
    layouts = {
        "uvis": _layout(uvis, 28.21),
        "acs-uvis": _layout(acs_uvis, 29.98),
    }
    limits = {}
    for band in BAND_COLUMNS:
        values = []
        for lay in layouts.values():
            if band in lay["error_models"]:
                m = lay["error_models"][band]
                values.append(m["m1"] + np.log10(2.5 / np.log(10)) / m["slope"])
        limits[band] = round(float(np.mean(values)), 4)
    return {
        "survey": "LEGUS (Calzetti et al. 2015; cluster catalogues Adamo et al. 2017)",
        "bands": list(BAND_COLUMNS),
        "file_band_proxies": FILE_BAND_PROXIES,
        "reference_band": "WFC3_UVIS_F555W",
        "uv_bands": ["WFC3_UVIS_F275W", "WFC3_UVIS_F336W"],
        "nominal_limit": limits,
        "nominal_limit_definition": "apparent Vega mag at S/N = 1 of the fitted noise term, "
        "mean over the layouts holding the band",
        "layouts": layouts,
        "presets": {
            "legus-uvis": {
                "layout_weights": {"uvis": 0.5, "acs-uvis": 0.5},
                "description": "LEGUS catalogues of WFC3/UVIS-only fields (F275W, F336W, F438W, "
                "F555W, F814W) and of ACS + WFC3/UVIS fields (F435W, F555W, F814W on ACS) as one "
                "model: the band set is part of the missing-band mask",
            },
            "legus-acs-uvis": {
                "layout_weights": {"acs-uvis": 1.0},
                "description": "LEGUS ACS + WFC3/UVIS fields only (F275W, F336W WFC3/UVIS; F435W, "
                "F555W, F814W ACS/WFC)",
            },
        },
        "fit_command": command,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sbicluster.catalog_errors", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--uvis", type=Path, required=True, help="LEGUS WFC3/UVIS-only catalogue")
    parser.add_argument("--acs-uvis", type=Path, required=True, help="LEGUS ACS+UVIS catalogue")
    parser.add_argument(
        "--out", type=Path, default=CATALOGUE_PRESET_DIR / "legus.json", help="preset file"
    )
    args = parser.parse_args(argv)
    shown = [Path(a).name if Path(a).is_file() else a for a in (argv or sys.argv[1:])]
    command = "python -m sbicluster.catalog_errors " + shlex.join(
        [f"../shared/data/legus/{a}" if a.startswith("hlsp_") else a for a in shown]
    )
    preset = build_legus_preset(args.uvis, args.acs_uvis, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(preset, indent=2) + "\n")
    for name, lay in preset["layouts"].items():
        for band, m in lay["error_models"].items():
            print(
                f"{name:9s} {band:16s} m1={m['m1']:.2f} slope={m['slope']:.3f} "
                f"floor={m['floor']:.3f} scatter={m['scatter']:.3f} dex n={m['n_fit']}"
            )
    print(f"preset written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
