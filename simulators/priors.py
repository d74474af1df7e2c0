"""The parameter space of a star cluster: names, units, bounds and the prior distribution.

This module owns the convention that θ = (log10 age/yr, log10 mass/M☉, log10 r_h/pc, A_V/mag),
always in this order, and the one description of each parameter (name, LaTeX label, unit, bounds):
every other module reads names, units, labels and positions of θ from a :class:`ClusterPrior`
(``prior.names``, ``prior.index("av")``, ``prior.dim``, ``prior.astropy_units``) instead of
repeating them. It must not know anything about images or training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.distributions import Independent, Uniform

from .errors import SimulatorError

__all__ = ["Parameter", "ClusterPrior", "DEFAULT_PRIOR", "PARAMETER_NAMES", "NUISANCE_NAMES"]

PARAMETER_NAMES = ("log_age", "log_mass", "log_rh", "av")
NUISANCE_NAMES = ("feh", "rv")
"""Inferred physics nuisances a prior may append after :data:`PARAMETER_NAMES`
(:mod:`simulators.nuisance`)."""


@dataclass(frozen=True)
class Parameter:
    """One inferred parameter.

    Parameters
    ----------
    name : str
        Machine name (``log_age``, ``log_mass``, ``log_rh`` or ``av``).
    label : str
        LaTeX label for plots.
    unit : str
        Unit of the parameter value, as an astropy-parsable string (``dex(yr)``, ``dex(solMass)``,
        ``dex(pc)``, ``mag``).
    low, high : float
        Bounds of the uniform prior, in ``unit``.
    description : str
        One-line human description.
    """

    name: str
    label: str
    unit: str
    low: float
    high: float
    description: str = ""

    @property
    def astropy_unit(self):
        """:attr:`unit` parsed by astropy.

        Returns
        -------
        astropy.units.UnitBase
            E.g. ``dex(yr)`` for ``log_age``, ``mag`` for ``av``.

        Examples
        --------
        >>> DEFAULT_PRIOR.parameter("log_mass").astropy_unit
        Unit("dex(solMass)")
        """
        from astropy import units as u

        return u.Unit(self.unit)


@dataclass(frozen=True)
class ClusterPrior:
    """Independent uniform prior over θ = (log age, log mass, log r_h, A_V[, [Fe/H], R_V]).

    Parameters
    ----------
    parameters : tuple of Parameter
        The parameters, in the canonical order of :data:`PARAMETER_NAMES`, optionally followed by
        the physics nuisances :data:`NUISANCE_NAMES` (a marginalised simulator's prior); their
        number is :attr:`dim` (D), the width of every θ array.

    Examples
    --------
    >>> import torch
    >>> prior = DEFAULT_PRIOR
    >>> theta = prior.sample(5, torch.Generator().manual_seed(0))
    >>> theta.shape == (5, prior.dim)
    True
    >>> prior.names
    ('log_age', 'log_mass', 'log_rh', 'av')
    >>> prior.index("av")
    3
    """

    parameters: tuple[Parameter, ...]

    def __post_init__(self) -> None:
        names = tuple(p.name for p in self.parameters)
        if names not in (PARAMETER_NAMES, PARAMETER_NAMES + NUISANCE_NAMES):
            raise SimulatorError(
                f"prior parameters must be {PARAMETER_NAMES} in this order, optionally followed "
                f"by {NUISANCE_NAMES}, got {names}"
            )
        for p in self.parameters:
            if not p.high > p.low:
                raise SimulatorError(
                    f"prior bound for {p.name!r}: high ({p.high}) must exceed low ({p.low})"
                )

    @property
    def names(self) -> tuple[str, ...]:
        """Machine names of the parameters, in θ order."""
        return tuple(p.name for p in self.parameters)

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        """Names of the inferred physics nuisances in θ (empty unless the prior is marginalised)."""
        return self.names[len(PARAMETER_NAMES) :]

    @property
    def labels(self) -> tuple[str, ...]:
        """LaTeX labels (with units) of the parameters, in θ order."""
        return tuple(p.label for p in self.parameters)

    @property
    def units(self) -> tuple[str, ...]:
        """Units of the parameters as astropy-parsable strings, in θ order."""
        return tuple(p.unit for p in self.parameters)

    @property
    def astropy_units(self) -> tuple:
        """Units of the parameters as :class:`astropy.units.UnitBase`, in θ order."""
        return tuple(p.astropy_unit for p in self.parameters)

    @property
    def dim(self) -> int:
        """Number of parameters D, the width of θ."""
        return len(self.parameters)

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in θ.

        Raises
        ------
        SimulatorError
            If ``name`` is not a parameter of this prior.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise SimulatorError(
                f"unknown parameter {name!r}; expected one of {self.names}"
            ) from None

    def parameter(self, name: str) -> Parameter:
        """The :class:`Parameter` called ``name`` (see :meth:`index`)."""
        return self.parameters[self.index(name)]

    def low(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Lower bounds, float32 tensor of shape (D,), in the units of :attr:`units`."""
        return torch.tensor([p.low for p in self.parameters], dtype=torch.float32, device=device)

    def high(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Upper bounds, float32 tensor of shape (D,), in the units of :attr:`units`."""
        return torch.tensor([p.high for p in self.parameters], dtype=torch.float32, device=device)

    def distribution(self, device: torch.device | str = "cpu") -> Independent:
        """The prior as a torch distribution with event shape (D,) (usable as an sbi prior)."""
        return Independent(Uniform(self.low(device), self.high(device)), 1)

    def sample(
        self, n: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Draw ``n`` parameter vectors.

        Parameters
        ----------
        n : int
            Number of draws.
        generator : torch.Generator
            Source of randomness; its device decides the output device unless ``device`` is given.
        device : torch.device or str, optional
            Device of the result.

        Returns
        -------
        torch.Tensor
            float32, shape (n, D), in the units of :attr:`units`.
        """
        device = generator.device if device is None else torch.device(device)
        u = torch.rand((n, self.dim), generator=generator, device=generator.device).to(device)
        return self.low(device) + u * (self.high(device) - self.low(device))

    def contains(self, theta: torch.Tensor) -> torch.Tensor:
        """Boolean mask (...,) of the rows of ``theta`` (..., D) inside the prior support."""
        low, high = self.low(theta.device), self.high(theta.device)
        return ((theta >= low) & (theta <= high)).all(dim=-1)

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in model cards)."""
        return {"parameters": [asdict(p) for p in self.parameters]}

    @classmethod
    def from_dict(cls, data: dict) -> ClusterPrior:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(Parameter(**p) for p in data["parameters"]))

    def with_bounds(self, **bounds: tuple[float, float]) -> ClusterPrior:
        """A copy with some bounds replaced, e.g. ``prior.with_bounds(av=(0.0, 1.5))``."""
        unknown = set(bounds) - set(self.names)
        if unknown:
            raise SimulatorError(
                f"unknown parameter(s) {sorted(unknown)}; expected some of {self.names}"
            )
        params = tuple(
            Parameter(p.name, p.label, p.unit, *bounds[p.name], p.description)
            if p.name in bounds
            else p
            for p in self.parameters
        )
        return ClusterPrior(params)


DEFAULT_PRIOR = ClusterPrior(
    (
        Parameter("log_age", r"$\log_{10}(t/\mathrm{yr})$", "dex(yr)", 6.5, 10.0, "cluster age"),
        Parameter(
            "log_mass", r"$\log_{10}(M/M_\odot)$", "dex(solMass)", 3.0, 5.5, "initial stellar mass"
        ),
        Parameter(
            "log_rh",
            r"$\log_{10}(r_h/\mathrm{pc})$",
            "dex(pc)",
            math.log10(0.5),
            1.0,
            "projected half-light radius",
        ),
        Parameter("av", r"$A_V$ [mag]", "mag", 0.0, 3.0, "V-band extinction (R_V = 3.1)"),
    )
)
"""Default prior: log age 6.5–10.0, log M 3.0–5.5, r_h 0.5–10 pc, A_V 0–3 mag (uniform in each)."""
