"""Physics choices drawn per cluster as nuisance parameters: [Fe/H], R_V and the IMF.

This module owns the physics of the *marginalised* cluster simulator
(``ClusterSimulator(..., physics_nuisance=True)``): the nuisance priors, and a stellar population
whose metallicity and extinction curve vary from cluster to cluster, :class:`PopulationBlend`.
It must not draw stars, place them or know about pixels (that is :mod:`simulators.cluster`).

The nuisances and their priors (written into every card of a marginalised simulator by
:func:`nuisance_card`):

- **[Fe/H]** uniform in [−0.75, +0.5] dex, inferred (θ column ``feh``). A cluster's stars take the
  flux-linear interpolation, at fixed initial mass, age and A_V, between the populations at the
  bracketing shipped MIST nodes −0.75, −0.5, 0, +0.25 and +0.5 (:data:`FEH_NODES`). At a node
  this is the node's physics exactly. Between nodes it is an approximation: against MIST's own
  [Fe/H] = −0.25 isochrones (the widest gap, 0.5 dex), the integrated magnitudes of a whole
  population differ by 0.07 mag rms over log age 6.6–9.9, by at most 0.08 mag from log age 7.8
  on and by up to 0.25 mag at log age 6.6–7.7, where red supergiants dominate (taking the
  nearest node instead: 0.19 mag rms); ``tests/test_nuisance.py`` holds it to this. The prior
  is wider than the values the misspecification benchmark tests (−0.5, 0, +0.25), so that they
  lie inside it rather than on its edges.
- **R_V** uniform in [2.0, 5.0], inferred (θ column ``rv``): most Milky Way sight lines, inside
  the R_V 2.0–6.0 for which ``dust_extinction`` defines Fitzpatrick (1999). Each star's magnitude is interpolated linearly in 1/R_V
  between five extinction curves applied to its SED (:data:`EXTINCTION_NODES`): Fitzpatrick
  (1999) with R_V = 2.0 and 2.5, the BC grid's own curve (CCM89 with R_V = 3.1 in MIST's bands,
  the default simulator's extinction) and Fitzpatrick (1999) with R_V = 4.0 and 5.0.
  CCM89-type curves are linear in 1/R_V at fixed wavelength; for F99, interpolating R_V = 2.5
  and 4.0 reproduces its R_V = 3.1 populations within 0.011 mag in F336W at A_V = 3
  (interpolating fluxes instead: 0.097 mag; tested). Because the middle node is CCM89 and the
  others F99, A_F814W/A_V of a 100 Myr population is not monotonic in R_V (0.48, 0.52, 0.60,
  0.59, 0.61 at 2.0, 2.5, 3.1, 4.0, 5.0); the ultraviolet ratios are (A_F336W/A_V 2.03, 1.80,
  1.68, 1.47, 1.37).
- **IMF** Kroupa (2001) or Chabrier (2003) with probability 1/2 each, marginalised (not inferred;
  recorded per sample as the ``imf_index`` nuisance, 0 = Kroupa).
- **Isochrone family** MIST v2.5 only: the shipped PARSEC tables lack the AGB at every age and the
  core-He burning of massive stars at log age 6.5–7.15 (:mod:`simulators.isochrones`), so
  drawing them would teach the model physics with stars missing.

The field stars of the synthetic background keep the nominal physics (MIST, [Fe/H] = 0, Kroupa,
the BC grid's extinction).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import SimulatorError
from .priors import DEFAULT_PRIOR, ClusterPrior, Parameter

__all__ = [
    "FEH_NODES",
    "EXTINCTION_NODES",
    "IMF_CHOICES",
    "NUISANCE_FAMILY",
    "NUISANCE_PARAMETERS",
    "NUISANCE_PRIOR",
    "NUISANCE_AGE_STEP",
    "PopulationBlend",
    "interpolation_weights",
    "nuisance_card",
]

FEH_NODES: tuple[float, ...] = (-0.75, -0.5, 0.0, 0.25, 0.5)
"""Shipped MIST [Fe/H] nodes (dex) between which a cluster's metallicity is interpolated."""

EXTINCTION_NODES: tuple[tuple[str, float], ...] = (
    ("F99", 2.0),
    ("F99", 2.5),
    ("mist", 3.1),
    ("F99", 4.0),
    ("F99", 5.0),
)
"""Extinction curves (law, R_V) between which a cluster's curve is interpolated in 1/R_V."""

IMF_CHOICES: tuple[str, ...] = ("kroupa", "chabrier")
"""IMFs drawn with equal probability per cluster."""

NUISANCE_FAMILY = "mist"
"""Isochrone family of the marginalised simulator (PARSEC's shipped tables are incomplete)."""

NUISANCE_AGE_STEP = 0.02
"""Fine log-age grid step (dex) of the node populations (25 per IMF; 0.02 halves their memory)."""

NUISANCE_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("feh", r"$[\mathrm{Fe/H}]$", "dex", -0.75, 0.5, "metallicity (nuisance)"),
    Parameter("rv", r"$R_V$", "", 2.0, 5.0, "total-to-selective extinction ratio (nuisance)"),
)
"""The inferred nuisance parameters, appended to θ after (log age, log M, log r_h, A_V)."""

NUISANCE_PRIOR = ClusterPrior(
    DEFAULT_PRIOR.parameters[:3]
    + (Parameter("av", r"$A_V$ [mag]", "mag", 0.0, 3.0, "V-band extinction (R_V a nuisance)"),)
    + NUISANCE_PARAMETERS
)
"""Prior of the marginalised simulator: the default prior's four cluster parameters, then
[Fe/H] U(−0.75, 0.5) dex and R_V U(2.0, 5.0)."""


def interpolation_weights(
    value: torch.Tensor, nodes: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Piecewise-linear interpolation between increasing ``nodes``.

    Parameters
    ----------
    value : torch.Tensor
        (S,) points, inside ``[nodes[0], nodes[-1]]``.
    nodes : sequence of float
        Strictly increasing node positions (at least two).

    Returns
    -------
    lower : torch.Tensor
        (S,) int64 index of the node at or below each value (at most ``len(nodes) − 2``).
    weight : torch.Tensor
        (S,) weight of node ``lower + 1``, in [0, 1]; node ``lower`` gets ``1 − weight``.

    Raises
    ------
    SimulatorError
        If a value lies outside the nodes or is not finite.
    """
    grid = torch.as_tensor(nodes, dtype=torch.float64, device=value.device)
    v = value.double()
    if v.numel() and bool(
        ((v < grid[0] - 1e-6) | (v > grid[-1] + 1e-6) | ~torch.isfinite(v)).any()
    ):
        raise SimulatorError(
            f"nuisance value outside its interpolation nodes [{float(grid[0])}, {float(grid[-1])}]"
        )
    lower = (torch.searchsorted(grid, v.contiguous(), right=True) - 1).clamp(0, len(nodes) - 2)
    weight = ((v - grid[lower]) / (grid[lower + 1] - grid[lower])).clamp(0.0, 1.0)
    return lower, weight.float()


def _magnitudes(flux: torch.Tensor) -> torch.Tensor:
    """−2.5 log10 ``flux``, +inf where the flux is 0."""
    return torch.where(
        flux > 0, -2.5 * torch.log10(flux.clamp_min(1e-38)), torch.full_like(flux, np.inf)
    )


def _inverse_rv_nodes() -> list[float]:
    """1/R_V of :data:`EXTINCTION_NODES`, increasing (R_V decreasing)."""
    return sorted(1.0 / rv for _, rv in EXTINCTION_NODES)


class PopulationBlend:
    """A stellar population whose [Fe/H] and R_V are given per star.

    Holds one :class:`simulators.population.StellarPopulation` per ([Fe/H] node, extinction node).
    A star of metallicity ``feh`` and extinction ratio ``rv`` takes, at its initial mass, age and
    A_V, in each of the two bracketing [Fe/H] nodes the magnitude interpolated linearly in 1/R_V
    between the two bracketing extinction curves (extinction in magnitudes linear in 1/R_V, as
    for CCM89-type curves), and then the weighted sum of the two nodes' fluxes. Stars dead in
    one [Fe/H] node and alive in the other fade with the weights, so the blend has no flux jump.
    Without ``feh``/``rv`` every method answers for the nominal node ([Fe/H] = 0, the BC grid's
    extinction), which is what the drawn-star threshold tables use.

    Parameters
    ----------
    bands : sequence of str
        Filter names.
    imf : str
        IMF name of every node.
    log_age_range : (float, float)
        log10 age / yr range to tabulate.
    age_step : float
        Fine log-age grid step (dex).
    device : str or torch.device
        Where the look-ups run.
    """

    def __init__(
        self,
        bands: Sequence[str],
        *,
        imf: str = "kroupa",
        log_age_range: tuple[float, float] = (6.0, 10.1),
        age_step: float = NUISANCE_AGE_STEP,
        device: str | torch.device = "cpu",
    ) -> None:
        from .population import StellarPopulation

        self.device = torch.device(device)
        self._law_order = sorted(
            range(len(EXTINCTION_NODES)), key=lambda k: 1.0 / EXTINCTION_NODES[k][1]
        )
        self.nodes = [
            [
                StellarPopulation(
                    bands,
                    feh=feh,
                    family=NUISANCE_FAMILY,
                    imf=imf,
                    log_age_range=log_age_range,
                    age_step=age_step,
                    extinction_law=EXTINCTION_NODES[k][0],
                    rv=EXTINCTION_NODES[k][1],
                    device=device,
                )
                for k in self._law_order
            ]
            for feh in FEH_NODES
        ]
        self.imf = self.nodes[0][0].imf
        self.bands = self.nodes[0][0].bands
        laws = [EXTINCTION_NODES[k] for k in self._law_order]
        row = self.nodes[int(np.argmin(np.abs(np.asarray(FEH_NODES))))]
        #: The node closest to the default simulator's physics ([Fe/H] = 0, BC grid, R_V = 3.1).
        self.nominal = row[laws.index(("mist", 3.1))] if ("mist", 3.1) in laws else row[0]
        self.table_id = [p.table_id for row in self.nodes for p in row]

    def to(self, device) -> PopulationBlend:
        """Move every node population to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        for row in self.nodes:
            for p in row:
                p.to(device)
        return self

    def max_live_mass(self, log_age: torch.Tensor) -> torch.Tensor:
        """Largest initial mass alive at any [Fe/H] node, M☉, shape (B,)."""
        return torch.stack([row[0].max_live_mass(log_age) for row in self.nodes]).amax(0)

    def _blend(self, magnitudes, feh, rv, n_out: int, *per_star: torch.Tensor) -> torch.Tensor:
        """Σ over [Fe/H] nodes of w_feh · flux, each node's magnitudes interpolated linearly in
        1/R_V between its two bracketing extinction nodes; nodes are evaluated only on the stars
        they weigh. ``magnitudes(population, *rows)`` gives (S, n_band) magnitudes (+inf: no
        flux)."""
        fi, fw = interpolation_weights(torch.as_tensor(feh, device=self.device), FEH_NODES)
        inv = 1.0 / torch.as_tensor(rv, dtype=torch.float64, device=self.device)
        li, lw = interpolation_weights(inv, _inverse_rv_nodes())
        total = torch.zeros(n_out, len(self.bands), device=self.device)
        for i in range(len(FEH_NODES)):
            w_feh = torch.where(fi == i, 1 - fw, torch.zeros_like(fw)) + torch.where(
                fi == i - 1, fw, torch.zeros_like(fw)
            )
            for j in range(len(EXTINCTION_NODES) - 1):
                sel = ((w_feh > 0) & (li == j)).nonzero().flatten()
                if len(sel) == 0:
                    continue
                rows = tuple(x[sel] for x in per_star)
                lo = magnitudes(self.nodes[i][j], *rows)
                hi = magnitudes(self.nodes[i][j + 1], *rows)
                w = lw[sel, None].to(lo.dtype)
                # the same isochrone under both curves: a star is dark in both or in neither
                mags = torch.where(torch.isfinite(lo) & torch.isfinite(hi), lo + w * (hi - lo), lo)
                flux = torch.where(
                    torch.isfinite(mags), 10 ** (-0.4 * mags), torch.zeros_like(mags)
                )
                total.index_add_(0, sel, w_feh[sel, None].to(total.dtype) * flux.float())
        return total

    def star_magnitudes_flat(
        self,
        log_age: torch.Tensor,
        initial_mass: torch.Tensor,
        av: torch.Tensor,
        feh: torch.Tensor | None = None,
        rv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Absolute Vega magnitudes of a flat list of stars (see
        :meth:`simulators.population.StellarPopulation.star_magnitudes_flat`).

        Parameters
        ----------
        log_age, initial_mass, av : torch.Tensor
            (S,) log10 age / yr, initial mass (M☉), A_V (mag).
        feh, rv : torch.Tensor, optional
            (S,) [Fe/H] (dex) and R_V of each star's cluster; both or neither.

        Returns
        -------
        torch.Tensor
            (S, n_band) magnitudes, +inf where no node gives the star any flux.
        """
        if feh is None or rv is None:
            return self.nominal.star_magnitudes_flat(log_age, initial_mass, av)

        m = torch.as_tensor(initial_mass, dtype=torch.float32, device=self.device)
        total = self._blend(
            lambda pop, a, mass, e: pop.star_magnitudes_flat(a, mass, e),
            feh,
            rv,
            len(m),
            torch.as_tensor(log_age),
            m,
            torch.as_tensor(av),
        )
        return _magnitudes(total)

    def star_magnitudes(
        self, log_age: torch.Tensor, initial_mass: torch.Tensor, av: torch.Tensor
    ) -> torch.Tensor:
        """Magnitudes of the nominal node, (B, K, n_band) (for threshold tables and the field)."""
        return self.nominal.star_magnitudes(log_age, initial_mass, av)

    def unresolved_flux_per_mass(
        self,
        log_age: torch.Tensor,
        av: torch.Tensor,
        mass_threshold: torch.Tensor,
        feh: torch.Tensor | None = None,
        rv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """IMF-expected flux per 1 M☉ of the stars below ``mass_threshold``, (B, n_band) (see
        :meth:`simulators.population.StellarPopulation.unresolved_flux_per_mass`), blended like
        :meth:`star_magnitudes_flat`."""
        if feh is None or rv is None:
            return self.nominal.unresolved_flux_per_mass(log_age, av, mass_threshold)
        t = torch.as_tensor(mass_threshold, dtype=torch.float32, device=self.device)

        return self._blend(
            lambda pop, a, e, m: _magnitudes(pop.unresolved_flux_per_mass(a, e, m)),
            feh,
            rv,
            len(t),
            torch.as_tensor(log_age),
            torch.as_tensor(av),
            t,
        )

    def __repr__(self) -> str:
        return (
            f"PopulationBlend(bands={self.bands}, imf={self.imf.name!r}, feh nodes={FEH_NODES}, "
            f"extinction nodes={EXTINCTION_NODES})"
        )


def nuisance_card() -> dict:
    """The nuisance priors and how each enters the physics, for simulator and model cards."""
    return {
        "inferred": [
            {
                "name": p.name,
                "prior": f"uniform [{p.low:g}, {p.high:g}]",
                "unit": p.unit or "dimensionless",
                "physics": (
                    f"flux-linear interpolation between MIST [Fe/H] nodes {list(FEH_NODES)}"
                    if p.name == "feh"
                    else "magnitudes linear in 1/R_V between "
                    + ", ".join(
                        f"{'BC grid (CCM89)' if law == 'mist' else law} R_V={rv:g}"
                        for law, rv in EXTINCTION_NODES
                    )
                ),
            }
            for p in NUISANCE_PARAMETERS
        ],
        "marginalised": [
            {"name": "imf", "prior": "Kroupa 2001 or Chabrier 2003, probability 1/2 each"},
        ],
        "fixed": [
            {
                "name": "isochrone family",
                "value": "MIST v2.5",
                "why": "the shipped PARSEC tables lack the AGB and, at log age 6.5-7.15, the "
                "core-He burning of massive stars",
            },
            {"name": "field stars", "value": "nominal physics (MIST [Fe/H]=0, Kroupa, BC grid)"},
        ],
        "age_step_dex": NUISANCE_AGE_STEP,
    }
