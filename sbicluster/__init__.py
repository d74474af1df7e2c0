"""sbicluster: calibrated simulation-based inference for extragalactic star clusters."""

from .errors import SbiclusterError

__version__ = "0.1.0"
__all__ = ["SbiclusterError", "__version__"]
