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
end points) are removed at build time; the PARSEC v1.2S grid here contains no remnants.

Evolutionary phases present
---------------------------
MIST v2.5 isochrones carry every phase of live stars (PMS, MS, RGB, core-He burning, E-AGB, TP-AGB,
WR); the build's strict-monotonicity filter only drops rows that share one float32 initial mass with
their neighbour (no IMF weight, so no light; up to 0.11 dex of the maximum log L at log age ≥ 9.0, on
CHeB and TP-AGB rows). The PARSEC v1.2S grid of
``lachesis-grids`` 0.0.9 (``parsec_v1.25.h5``, the only PARSEC source among the installable packages)
does **not**: its isochrones stop early. The build drops no PARSEC phase: it keeps every source row
except those whose initial mass does not increase (the source's constant-mass filler across the helium
flash, EEP 606–631 (550–631 at log age 9.95–10.05) at log age ≥ 9.15, log L ≤ 3.40 and below each
isochrone's maximum; and at log age 7.15 the source rows EEP 500–669, whose initial mass runs back
from 14.73 to 14.00 M☉, log L ≤ 5.07), so the shipped maximum log L equals the source's at every
node. Measured on the source at [Fe/H] = 0 (PARSEC phase labels: 1 MS, 2 Hertzsprung gap, 3 RGB /
red-supergiant ascent, 4–6 core-He burning, 7 E-AGB, 8 TP-AGB, 9 post-AGB; the grid never exceeds 6):

=============  ===========================  ======================================================
log age (yr)   last EEP / last phase label   missing
=============  ===========================  ======================================================
6.00–6.40      324–500 / 1–2                 phases after the MS of stars ≥ 263 M☉ (above the IMFs' 120 M☉)
6.45–7.10      605 / 3                       core-He burning and later of stars ≥ 205 … 16 M☉
                                             (red and blue supergiants)
7.15           669 / 4 (shipped: 605 / 3)    the same above 14.7 M☉
7.20–9.20      1200 / 6                      E-AGB, TP-AGB, post-AGB
9.25–10.10     707 / 4                       core-He burning (red clump) and AGB of stars ≥ 1.80 … 0.97 M☉
=============  ===========================  ======================================================

Consequences, measured with the shipped BC table and a Kroupa IMF (F814W, A_V = 0): the maximum log L/L☉
of the PARSEC isochrones at log age 8.0 / 8.5 / 9.0 is 3.52 / 2.89 / 2.49 (MIST here 4.53 / 4.22 / 4.01;
PARSEC v1.2S from its authors' web service reaches 4.35 / 4.06 / 3.29 up to the end of the E-AGB alone,
as reported in issue #20); red supergiants (Teff < 4500 K, log L > 4) carry 7 % of the F814W light at
log age 7.0 in PARSEC against 77 % in MIST; the PARSEC F814W light per unit mass is 0.48–0.96 of MIST's
at log age 7.0–9.0. :meth:`IsochroneGrid.missing_phases` reports the gap at any age, every isochrone
that has one issues an :class:`~simulators.errors.IncompletePhasesWarning`, and
:class:`simulators.population.StellarPopulation` warns or refuses (``on_incomplete_phases``).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import IncompletePhasesError, IncompletePhasesWarning, OutOfGridError, SimulatorError
from .tables import table_path

__all__ = [
    "Isochrone",
    "IsochroneGrid",
    "get_isochrone_grid",
    "check_phase_coverage",
    "FAMILIES",
    "COMPLETE_FAMILIES",
    "LOG_AGE_RANGE",
]

#: Supported isochrone families: name → shipped file.
FAMILIES = {"mist": "isochrones_mist.npz", "parsec": "isochrones_parsec.npz"}
#: Families whose isochrones carry every phase of live stars (no late phase missing at any age).
COMPLETE_FAMILIES = frozenset({"mist"})
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

    def _bracket(self, log_age: float) -> tuple[int, float]:
        """Index ``j`` of the node at or below ``log_age`` and the weight ``t`` of node ``j + 1``."""
        self.check_log_age(log_age)
        ages = self.age_values
        j = int(np.clip(np.searchsorted(ages, log_age, side="right") - 1, 0, len(ages) - 2))
        return j, float(np.clip((log_age - ages[j]) / (ages[j + 1] - ages[j]), 0.0, 1.0))

    def missing_phases(
        self, log_age: float, feh: float = 0.0, max_mass: float = np.inf
    ) -> str | None:
        """The evolutionary phases the isochrone at ``log_age`` lacks, or ``None`` if it is complete.

        Judged from the last phase label of the bracketing node isochrones (an interpolated isochrone
        keeps only the EEPs both nodes have, so it ends where the shorter one ends). Families in
        :data:`COMPLETE_FAMILIES` are complete at every age.

        Parameters
        ----------
        log_age : float
            log10 age / yr.
        feh : float
            [Fe/H] (dex).
        max_mass : float
            Initial mass (M☉) above which no star is drawn (an IMF's upper limit): an isochrone that ends
            at or above it lacks nothing that matters.

        Returns
        -------
        str or None
            E.g. ``"E-AGB, TP-AGB and post-AGB (the isochrone ends at the end of core-He burning,
            phase label 6.0, initial mass 5.30 M☉)"``.
        """
        if self.family in COMPLETE_FAMILIES:
            return None
        j, t = self._bracket(log_age)
        nodes = [self.node(i, feh) for i, w in ((j, 1 - t), (j + 1, t)) if w > 1e-9]
        last = min(nodes, key=lambda n: (float(n["phase"].max()), n["max_live_mass"]))
        gap = _parsec_gap(float(last["phase"].max()), last["max_live_mass"], max_mass)
        return None if gap is None else f"{gap[0]} ({gap[1]})"

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
        j, t = self._bracket(log_age)
        a, b = self.node(j, feh), self.node(j + 1, feh)
        missing = self.missing_phases(log_age, feh)
        if missing is not None:
            warnings.warn(
                f"{self.family} isochrone at log age {float(log_age):.2f} lacks {missing}",
                IncompletePhasesWarning,
                stacklevel=2,
            )
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


def _parsec_gap(
    last_label: float, end_mass: float, max_mass: float = np.inf
) -> tuple[str, str] | None:
    """What a PARSEC isochrone that ends at phase label ``last_label`` and initial mass ``end_mass`` (M☉)
    lacks, as ``(missing phases, where the isochrone ends)``; ``None`` when it ends at or above
    ``max_mass`` (M☉)."""
    if end_mass >= max_mass:
        return None
    where = f"phase label {last_label:.1f}, initial mass {end_mass:.2f} M☉"
    if last_label >= 6.0 - 1e-6:
        return (
            "E-AGB, TP-AGB and post-AGB",
            f"the isochrone ends at the end of core-He burning, {where}",
        )
    if last_label >= 4.0 - 1e-6:
        return (
            "core-He burning (red clump) and the AGB of low-mass stars",
            f"the isochrone ends at helium ignition, {where}",
        )
    if last_label >= 3.0 - 1e-6:
        return (
            "core-He burning (red and blue supergiants) and every later phase of massive stars",
            f"the isochrone ends at helium ignition, {where}",
        )
    return "every phase after the main sequence of the most massive stars", where


def check_phase_coverage(
    family: str,
    log_age_range: tuple[float, float],
    *,
    feh: float = 0.0,
    max_mass: float = np.inf,
    action: str = "warn",
) -> list[tuple[float, float, str]]:
    """Find the log ages in a range whose isochrones lack evolutionary phases; warn or refuse.

    Parameters
    ----------
    family : {"mist", "parsec"}
    log_age_range : (float, float)
        log10 age / yr range (inclusive).
    feh : float
        [Fe/H] (dex).
    max_mass : float
        Upper initial mass of the IMF (M☉); see :meth:`IsochroneGrid.missing_phases`.
    action : {"warn", "error", "ignore"}
        Issue one :class:`~simulators.errors.IncompletePhasesWarning` naming every gap, raise
        :class:`~simulators.errors.IncompletePhasesError`, or do nothing.

    Returns
    -------
    list of (float, float, str)
        Log-age intervals (first and last affected shipped node inside the range) and what they lack.

    Raises
    ------
    IncompletePhasesError
        With ``action="error"``, if any age in the range lacks phases.
    SimulatorError
        Unknown ``action``.
    """
    if action not in ("warn", "error", "ignore"):
        raise SimulatorError(
            f"on_incomplete_phases must be 'warn', 'error' or 'ignore', not {action!r}"
        )
    grid = get_isochrone_grid(family)
    ages = grid.age_values
    # ages outside the grid are the caller's to refuse (with its own message): look inside only
    lo, hi = (float(np.clip(x, ages[0], ages[-1])) for x in log_age_range)
    if not hi >= lo:
        return []
    inside = ages[(ages > lo + 1e-9) & (ages < hi - 1e-9)]
    gaps: list[tuple[float, float, str]] = []
    for a in np.concatenate([[lo], inside, [hi]]):
        miss = grid.missing_phases(float(a), feh, max_mass)
        if miss is None:
            continue
        kind = miss[: miss.rindex(" (")]
        if gaps and gaps[-1][2] == kind:
            gaps[-1] = (gaps[-1][0], float(a), kind)
        else:
            gaps.append((float(a), float(a), kind))
    if gaps and action != "ignore":
        text = "; ".join(f"log age {a:.2f}–{b:.2f}: {k}" for a, b, k in gaps)
        msg = (
            f"{family} isochrones ([Fe/H] = {feh:+.2f}) lack evolutionary phases that carry much of the red "
            f"and near-IR light: {text}. Red supergiants carry 77 % of the F814W light of a MIST "
            "population at log age 7.0 (7 % in PARSEC here); E-AGB + TP-AGB 8–19 % at log age 8.0–9.0. "
            "Use family='mist' (complete), or accept the gap explicitly (on_incomplete_phases='ignore')."
        )
        if action == "error":
            raise IncompletePhasesError(msg)
        warnings.warn(msg, IncompletePhasesWarning, stacklevel=3)
    return gaps


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
