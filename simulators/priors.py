"""The parameter space of a star cluster: names, units, bounds and the prior distribution.

This module owns the convention that θ = (log10 age/yr, log10 mass/M☉, log10 r_h/pc, A_V/mag),
always in this order. It must not know anything about images or training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.distributions import Independent, Uniform

from .errors import SimulatorError

__all__ = ["Parameter", "ClusterPrior", "DEFAULT_PRIOR", "PARAMETER_NAMES"]

PARAMETER_NAMES = ("log_age", "log_mass", "log_rh", "av")


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


@dataclass(frozen=True)
class ClusterPrior:
    """Independent uniform prior over θ = (log age, log mass, log r_h, A_V).

    Parameters
    ----------
    parameters : tuple of Parameter
        The four parameters, in the canonical order of :data:`PARAMETER_NAMES`.

    Examples
    --------
    >>> import torch
    >>> prior = DEFAULT_PRIOR
    >>> theta = prior.sample(5, torch.Generator().manual_seed(0))
    >>> theta.shape
    torch.Size([5, 4])
    """

    parameters: tuple[Parameter, ...]

    def __post_init__(self) -> None:
        names = tuple(p.name for p in self.parameters)
        if names != PARAMETER_NAMES:
            raise SimulatorError(
                f"prior parameters must be {PARAMETER_NAMES} in this order, got {names}"
            )
        for p in self.parameters:
            if not p.high > p.low:
                raise SimulatorError(
                    f"prior bound for {p.name!r}: high ({p.high}) must exceed low ({p.low})"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.parameters)

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(p.unit for p in self.parameters)

    @property
    def dim(self) -> int:
        return len(self.parameters)

    def low(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Lower bounds, float32 tensor of shape (4,)."""
        return torch.tensor([p.low for p in self.parameters], dtype=torch.float32, device=device)

    def high(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Upper bounds, float32 tensor of shape (4,)."""
        return torch.tensor([p.high for p in self.parameters], dtype=torch.float32, device=device)

    def distribution(self, device: torch.device | str = "cpu") -> Independent:
        """The prior as a torch distribution with event shape (4,) (usable as an sbi prior)."""
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
            float32, shape (n, 4), in the units of :attr:`units`.
        """
        device = generator.device if device is None else torch.device(device)
        u = torch.rand((n, self.dim), generator=generator, device=generator.device).to(device)
        return self.low(device) + u * (self.high(device) - self.low(device))

    def contains(self, theta: torch.Tensor) -> torch.Tensor:
        """Boolean mask of rows of ``theta`` (..., 4) inside the prior support."""
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
