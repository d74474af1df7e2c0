"""Reading the catalogue a population is fitted to: the folder ``sbicluster infer`` wrote.

This module owns choosing the clusters of a population run from ``summary.ecsv`` (P(cluster),
visibility, flags) and reading their draws from ``posterior.nc``. A cutout enters the catalogue
when P(cluster) ≥ ``threshold`` and visibility ≥ ``visibility_cut``; cutouts flagged out of range
(their draws are blank) or with non-finite draws are left out and counted. It must not fit
anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulators.priors import ClusterPrior

from ..errors import InputError
from ..io import FLAG_OUT_OF_RANGE

__all__ = ["Catalogue", "read_results", "check_results_dir"]


@dataclass
class Catalogue:
    """The clusters of one population run.

    Attributes
    ----------
    draws : numpy.ndarray
        float32 (N, S, D) posterior draws of the selected clusters, prior units.
    ids : numpy.ndarray
        (N,) cutout ids.
    p_cluster, visibility : numpy.ndarray
        (N,) of the selected clusters.
    prior : ClusterPrior
        The training prior of the model that made the draws.
    card : dict
        That model's card.
    views : int or None
        Symmetric views of ``infer`` (from the summary's metadata).
    counts : dict
        ``cutouts`` (in the folder), ``below_threshold``, ``below_visibility_cut``,
        ``out_of_range``, ``non_finite_draws`` (left out), ``selected``.
    threshold, visibility_cut : float
        The cuts applied.
    """

    draws: np.ndarray
    ids: np.ndarray
    p_cluster: np.ndarray
    visibility: np.ndarray
    prior: ClusterPrior
    card: dict
    views: int | None
    threshold: float
    visibility_cut: float
    counts: dict = field(default_factory=dict)


def check_results_dir(path: str | Path) -> Path:
    """Raise :class:`InputError` unless ``path`` is a folder holding ``summary.ecsv`` and
    ``posterior.nc``."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise InputError(
            f"results folder {path} {what}; give the --out folder of `sbicluster infer`"
        )
    for name in ("summary.ecsv", "posterior.nc"):
        if not (path / name).is_file():
            raise InputError(
                f"results folder {path} lacks {name}; give the --out folder of `sbicluster infer`"
            )
    return path


def check_cuts(threshold: float, visibility_cut: float) -> None:
    """Raise :class:`InputError` unless 0 ≤ threshold ≤ 1 and visibility_cut ≥ 0 (finite)."""
    if not (np.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise InputError(f"--threshold {threshold}: must be a probability in [0, 1]")
    if not (np.isfinite(visibility_cut) and visibility_cut >= 0.0):
        raise InputError(f"--visibility-cut {visibility_cut}: must be a finite number ≥ 0")


def read_results(
    path: str | Path, *, threshold: float = 0.5, visibility_cut: float = 0.0
) -> Catalogue:
    """The catalogue of clusters in an ``infer`` results folder.

    Parameters
    ----------
    path : str or Path
        Folder with ``summary.ecsv`` and ``posterior.nc``.
    threshold : float
        Least P(cluster) of a catalogue member.
    visibility_cut : float
        Least visibility (signal-to-noise measure) of a catalogue member.

    Returns
    -------
    Catalogue

    Raises
    ------
    InputError
        Missing or unreadable files, files that disagree, bad cuts, or no cluster passing them.
    """
    import h5netcdf
    from astropy.table import Table

    path = check_results_dir(path)
    check_cuts(threshold, visibility_cut)
    try:
        table = Table.read(path / "summary.ecsv", format="ascii.ecsv")
        ids = np.asarray(table["id"], dtype=str)
        p_cluster = np.asarray(table["p_cluster"], dtype=float)
        vis = np.asarray(table["visibility"], dtype=float)
        flags = np.asarray(table["flag"], dtype=int)
    except Exception as err:  # noqa: BLE001 - any unreadable table is the same user error
        raise InputError(
            f"{path / 'summary.ecsv'}: not a summary written by `sbicluster infer` ({err})"
        ) from err
    try:
        with h5netcdf.File(str(path / "posterior.nc"), "r") as fh:
            group = fh["posterior"]
            attrs = dict(group.attrs)
            prior = ClusterPrior.from_dict(json.loads(attrs["prior"]))
            card = json.loads(attrs.get("model_card", "{}"))
            nc_ids = np.asarray(group["cutout"][:], dtype=str)
            out_of_range = (flags & FLAG_OUT_OF_RANGE) != 0
            cut = (p_cluster >= threshold) & (vis >= visibility_cut)
            keep = np.flatnonzero(cut & ~out_of_range)
            draws = np.stack([group[name][0, :, :][:, keep].T for name in prior.names], -1)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001
        raise InputError(
            f"{path / 'posterior.nc'}: not a posterior written by `sbicluster infer` ({err})"
        ) from err
    if len(nc_ids) != len(ids) or not np.array_equal(nc_ids, ids):
        raise InputError(
            f"{path}: summary.ecsv and posterior.nc list different cutouts; rerun `sbicluster infer`"
        )
    finite = np.isfinite(draws).all(axis=(1, 2))
    counts = {
        "cutouts": int(len(ids)),
        "below_threshold": int(np.sum(p_cluster < threshold)),
        "below_visibility_cut": int(np.sum((p_cluster >= threshold) & (vis < visibility_cut))),
        "out_of_range": int(np.sum(cut & out_of_range)),
        "non_finite_draws": int(np.sum(~finite)),
    }
    keep = keep[finite]
    counts["selected"] = int(len(keep))
    if len(keep) == 0:
        raise InputError(
            f"{path}: no cutout has P(cluster) ≥ {threshold} and visibility ≥ {visibility_cut} "
            f"(of {len(ids)}); lower --threshold or --visibility-cut"
        )
    views = table.meta.get("symmetry_views")
    return Catalogue(
        draws=np.ascontiguousarray(draws[finite], dtype=np.float32),
        ids=ids[keep],
        p_cluster=p_cluster[keep],
        visibility=vis[keep],
        prior=prior,
        card=card,
        views=None if views is None else int(views),
        threshold=float(threshold),
        visibility_cut=float(visibility_cut),
        counts=counts,
    )
