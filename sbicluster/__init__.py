"""sbicluster: calibrated simulation-based inference for extragalactic star clusters.

The main entry points are :func:`infer` (FITS cutouts → posterior samples, P(cluster) and
visibility) and the ``sbicluster`` command line.
"""

from .api import InferenceResult, infer
from .errors import SbiclusterError

__version__ = "0.1.0"
__all__ = ["InferenceResult", "SbiclusterError", "__version__", "infer"]
