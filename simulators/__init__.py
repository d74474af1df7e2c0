"""Physically grounded forward model of multi-band star-cluster images.

The simulator turns cluster parameters θ = (log10 age/yr, log10 M/M☉, log10 r_h/pc, A_V/mag)
into cutouts in e⁻/s per pixel: isochrones → IMF-sampled stars → spatial profile → extinction →
PSF → detector noise → field background. It knows nothing of training or inference.
"""

from .batch import SimulationBatch
from .errors import SimulatorError
from .priors import DEFAULT_PRIOR, PARAMETER_NAMES, ClusterPrior, Parameter

__all__ = [
    "ClusterPrior",
    "DEFAULT_PRIOR",
    "PARAMETER_NAMES",
    "Parameter",
    "SimulationBatch",
    "SimulatorError",
]
