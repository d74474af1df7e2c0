"""Exceptions raised by :mod:`sbicluster`.

User-facing failures raise a subclass of :class:`SbiclusterError` whose message says what was
wrong, what was expected and how to fix it. The command line turns them into a one-line error
and a non-zero exit code.
"""

__all__ = ["SbiclusterError", "InputError", "ModelError", "OutputExistsError"]


class SbiclusterError(Exception):
    """Base class of all errors raised by :mod:`sbicluster`."""


class InputError(SbiclusterError, ValueError):
    """User input (FITS cutouts, catalogues, options) cannot be used as given."""


class ModelError(SbiclusterError):
    """A model artifact is missing, corrupt, or does not match its card or this software."""


class OutputExistsError(SbiclusterError, FileExistsError):
    """An output would overwrite existing results and ``overwrite`` was not requested."""
