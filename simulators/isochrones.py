"""Stellar isochrones: live stars (initial mass, log Teff, log g, log L, phase) at any (log age, [Fe/H]).

This module owns reading the shipped isochrone tables (``simulators/tables/isochrones_<family>.npz``,
derived from ``lachesis-grids`` by ``python -m simulators.tables.build``) and interpolating them in
log age. It must not compute photometry (see :mod:`simulators.photometry`) and never needs
``lachesis-grids`` at run time; when that package *is* installed, [Fe/H] grid nodes that are not
shipped are read from it directly.

Interpolation scheme
--------------------
Isochrones are stored on log-age nodes every 0.05 dex (6.0–10.1). Between two nodes a₀ < a₁ the
isochrone at log age a is built point by point at equal evolutionary phase: for every equivalent
evolutionary point (EEP) present in both node isochrones, each quantity q ∈ {initial mass, log Teff,
log g, log L} is interpolated linearly in log age, q(a) = (1−t) q(a₀) + t q(a₁), t = (a−a₀)/(a₁−a₀).
Because both node isochrones are strictly increasing in initial mass along EEP, the interpolated one
is too (a convex combination of two increasing sequences is increasing), so mass look-ups stay
monotone; and the main-sequence turn-off moves continuously with age instead of snapping to the
nearest node. The phase label is taken from the nearer node. EEPs present at only one node (the very
last evolutionary stages whose coverage changes between nodes) are dropped. [Fe/H] is *not*
interpolated: the requested value must be a grid node.

Live stars vs remnants: MIST phases 6 (post-AGB and the white-dwarf cooling sequence) and −9 (white-dwarf
end points) are removed at build time; the PARSEC v1.2S grid here contains no remnants (and no TP-AGB/post-AGB phases).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import OutOfGridError, SimulatorError
from .tables import table_path

__all__ = ["Isochrone", "IsochroneGrid", "get_isochrone_grid", "FAMILIES", "LOG_AGE_RANGE"]

#: Supported isochrone families: name → shipped file.
FAMILIES = {"mist": "isochrones_mist.npz", "parsec": "isochrones_parsec.npz"}
#: Log-age range (log10 yr) of the shipped tables.
LOG_AGE_RANGE = (6.0, 10.1)

_COLUMNS = ("eep", "initial_mass", "log_Teff", "log_g", "log_L", "phase")


@dataclass(frozen=True)
class Isochrone:
    """Live stars of one isochrone, ordered by increasing initial mass (equivalently EEP).

    Attributes
    ----------
    log_age : float
        log10 age / yr.
    feh : float
        [Fe/H] in dex.
    family : str
        ``"mist"`` or ``"parsec"``.
    eep : ndarray of int
        Equivalent evolutionary point.
    initial_mass : ndarray
        Initial stellar mass, M☉ (strictly increasing).
    log_Teff : ndarray
        log10 effective temperature / K.
    log_g : ndarray
        log10 surface gravity / (cm s⁻²).
    log_L : ndarray
        log10 luminosity / L☉.
    phase : ndarray
        Evolutionary phase label of the source grid (MIST: −1 PMS, 0 MS, 2 RGB, 3 CHeB, 4 EAGB,
        5 TPAGB, 9 WR; PARSEC: its own, possibly fractional, labels).
    max_live_mass : float
        Largest initial mass still alive (M☉); heavier stars are dark remnants.
    """

    log_age: float
    feh: float
    family: str
    eep: np.ndarray
    initial_mass: np.ndarray
    log_Teff: np.ndarray
    log_g: np.ndarray
    log_L: np.ndarray
    phase: np.ndarray
    max_live_mass: float

    def __len__(self) -> int:
        return len(self.initial_mass)


class IsochroneGrid:
    """The isochrones of one family on the shipped (log age, [Fe/H]) nodes, with age interpolation.

    Parameters
    ----------
    family : {"mist", "parsec"}
        Stellar-model family; MIST v2.5 (v/v_crit = 0.4) is the default of the simulator.

    Raises
    ------
    SimulatorError
        If the family is unknown.

    Examples
    --------
    >>> grid = IsochroneGrid("mist")
    >>> iso = grid.isochrone(8.02, feh=0.0)
    >>> bool(np.all(np.diff(iso.initial_mass) > 0))
    True
    """

    def __init__(self, family: str = "mist"):
        family = family.lower()
        if family not in FAMILIES:
            raise SimulatorError(
                f"unknown isochrone family {family!r}; supported: {sorted(FAMILIES)}"
            )
        self.family = family
        with np.load(table_path(FAMILIES[family]), allow_pickle=False) as d:
            self._data = {k: d[k] for k in d.files}
        self.feh_values = self._data["feh_values"]
        self.age_values = self._data["age_values"]
        self.source = str(self._data["source"])
        self._extra: dict[float, dict] = {}

    # ------------------------------------------------------------------------------------------
    def _check_feh(self, feh: float) -> int | None:
        hit = np.flatnonzero(np.isclose(self.feh_values, feh, atol=1e-6))
        if hit.size:
            return int(hit[0])
        try:
            from .tables.build import read_isochrone_grid  # needs lachesis-grids (optional)

            raw = read_isochrone_grid(self.family, [feh], self.age_values)
        except (ImportError, IndexError, OSError) as exc:
            raise OutOfGridError(
                f"[Fe/H] = {feh} is not shipped for {self.family!r} isochrones; shipped values: "
                f"{[float(f) for f in self.feh_values]}. Other grid nodes need the optional package "
                f"'lachesis-grids' (pip install lachesis-grids) and must be nodes of its grid."
            ) from exc
        self._extra[feh] = raw
        return None

    def node(self, i_age: int, feh: float = 0.0) -> dict:
        """Raw live-star columns of the node isochrone (age index ``i_age``, [Fe/H] ``feh``)."""
        i_feh = self._check_feh(feh)
        if i_feh is None:
            from .tables.build import _live_mask

            raw = self._extra[feh][(feh, float(self.age_values[i_age]))]
            live = _live_mask(self.family, raw)
            cols = {c: raw[c][live] for c in _COLUMNS}
            keep = np.concatenate(
                [[True], np.diff(np.maximum.accumulate(cols["initial_mass"])) > 0]
            )
            cols = {c: v[keep] for c, v in cols.items()}
            cols["phase"] = cols["phase"].astype(float)
            cols["max_live_mass"] = float(cols["initial_mass"][-1])
            return cols
        k = i_feh * len(self.age_values) + i_age
        s, n = int(self._data["start"][k]), int(self._data["length"][k])
        cols = {c: self._data[c][s : s + n] for c in _COLUMNS}
        cols["phase"] = cols["phase"] / 100.0
        cols["max_live_mass"] = float(self._data["max_live_mass"][k])
        return cols

    def check_log_age(self, log_age) -> None:
        """Raise :class:`OutOfGridError` unless every log age lies in the shipped range."""
        la = np.asarray(log_age, float)
        lo, hi = float(self.age_values[0]), float(self.age_values[-1])
        if la.size and (
            not np.all(np.isfinite(la)) or la.min() < lo - 1e-9 or la.max() > hi + 1e-9
        ):
            raise OutOfGridError(
                f"log age {la.min():.3f}–{la.max():.3f} outside the {self.family} grid range {lo}–{hi} (log10 yr)"
            )

    def isochrone(self, log_age: float, feh: float = 0.0) -> Isochrone:
        """Live stars at ``log_age`` (log10 yr), interpolated at equal EEP between the bracketing nodes.

        Parameters
        ----------
        log_age : float
            log10 age / yr, within :data:`LOG_AGE_RANGE`.
        feh : float
            [Fe/H] in dex; must be a shipped node (or a ``lachesis-grids`` node if installed).

        Returns
        -------
        Isochrone

        Raises
        ------
        OutOfGridError
            Age or metallicity outside the available grid (the message names the valid range).
        """
        self.check_log_age(log_age)
        ages = self.age_values
        j = int(np.clip(np.searchsorted(ages, log_age, side="right") - 1, 0, len(ages) - 2))
        t = float(np.clip((log_age - ages[j]) / (ages[j + 1] - ages[j]), 0.0, 1.0))
        a, b = self.node(j, feh), self.node(j + 1, feh)
        if t < 1e-9 or t > 1 - 1e-9:
            c = a if t < 0.5 else b
            return Isochrone(
                float(log_age),
                float(feh),
                self.family,
                c["eep"],
                c["initial_mass"],
                c["log_Teff"],
                c["log_g"],
                c["log_L"],
                c["phase"],
                c["max_live_mass"],
            )
        return interpolate_nodes(a, b, t, float(log_age), float(feh), self.family)


def interpolate_nodes(
    a: dict, b: dict, t: float, log_age: float, feh: float, family: str
) -> Isochrone:
    """EEP-matched linear interpolation between two node isochrones (weight ``t`` on ``b``)."""
    common, ia, ib = np.intersect1d(a["eep"], b["eep"], assume_unique=True, return_indices=True)
    q = {
        c: (1 - t) * np.asarray(a[c][ia], float) + t * np.asarray(b[c][ib], float)
        for c in ("initial_mass", "log_Teff", "log_g", "log_L")
    }
    phase = (a if t < 0.5 else b)["phase"][ia if t < 0.5 else ib]
    mass = q["initial_mass"]
    keep = np.concatenate(
        [[True], np.diff(mass) > 0]
    )  # guaranteed by construction; kept as a guard
    return Isochrone(
        log_age,
        feh,
        family,
        common[keep].astype(int),
        mass[keep],
        q["log_Teff"][keep],
        q["log_g"][keep],
        q["log_L"][keep],
        np.asarray(phase, float)[keep],
        float(mass[keep][-1]),
    )


@functools.lru_cache(maxsize=4)
def get_isochrone_grid(family: str = "mist") -> IsochroneGrid:
    """Cached :class:`IsochroneGrid` of a family (tables are read once per process)."""
    return IsochroneGrid(family)
