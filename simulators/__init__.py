"""Forward models of multi-band star-cluster images, behind one contract.

The package owns the simulators and everything they need: the contract every simulator satisfies
(:class:`simulators.base.Simulator`, with :func:`simulate_in_chunks` for bounded-memory runs),
the data they return (:class:`SimulationBatch`), where simulators come from
(:func:`simulator_from_card`, :func:`simulator_for_preset` in :mod:`simulators.registry`), the
physically grounded :class:`simulators.cluster.ClusterSimulator` — θ = (log10 age/yr, log10 M/M☉,
log10 r_h/pc, A_V/mag) → isochrones → IMF-sampled stars → spatial profile → extinction → PSF →
background (:mod:`simulators.background`) → detector noise, cutouts in e⁻/s per pixel — and the
analytic :class:`simulators.toy.LinearGaussianToy`. It knows nothing of training or inference.

Importing the package is cheap: the simulator classes (and their physics tables) load when first
used.
"""

from .base import Simulator, iter_simulation_chunks, simulate_in_chunks
from .batch import SimulationBatch
from .errors import SimulatorError
from .priors import DEFAULT_PRIOR, PARAMETER_NAMES, ClusterPrior, Parameter
from .registry import SIMULATOR_KINDS, simulator_for_preset, simulator_from_card

__all__ = [
    "ClusterPrior",
    "DEFAULT_PRIOR",
    "PARAMETER_NAMES",
    "Parameter",
    "SIMULATOR_KINDS",
    "SimulationBatch",
    "Simulator",
    "SimulatorError",
    "iter_simulation_chunks",
    "simulate_in_chunks",
    "simulator_for_preset",
    "simulator_from_card",
]
