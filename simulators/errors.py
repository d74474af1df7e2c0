"""Exceptions raised by the forward simulator.

Every user-facing failure in :mod:`simulators` raises a subclass of :class:`SimulatorError`
with a message that says what was wrong, what was expected and how to fix it.
"""

__all__ = [
    "SimulatorError",
    "OutOfGridError",
    "UnknownBandError",
    "IncompletePhasesError",
    "IncompletePhasesWarning",
]


class SimulatorError(ValueError):
    """Base class of all errors raised by :mod:`simulators`."""


class OutOfGridError(SimulatorError):
    """A requested age, metallicity, mass or extinction lies outside the tabulated grid."""


class UnknownBandError(SimulatorError, KeyError):
    """A photometric band is not supported; the message lists the supported ones."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class IncompletePhasesError(SimulatorError):
    """An isochrone family lacks evolutionary phases that carry much of the light at the requested ages
    (e.g. the PARSEC tables here have no AGB); the message names the phases and the ages."""


class IncompletePhasesWarning(UserWarning):
    """Issued when isochrones that lack late evolutionary phases are used (see
    :meth:`simulators.isochrones.IsochroneGrid.missing_phases`)."""
