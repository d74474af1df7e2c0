"""Exceptions raised by :mod:`sbicluster`.

User-facing failures raise a subclass of :class:`SbiclusterError` whose message says what was
wrong, what was expected and how to fix it. The command line turns them into a one-line error
and a non-zero exit code.
"""

__all__ = [
    "SbiclusterError",
    "InputError",
    "ModelError",
    "OutputExistsError",
    "TrainingInterrupted",
]


class SbiclusterError(Exception):
    """Base class of all errors raised by :mod:`sbicluster`."""


class InputError(SbiclusterError, ValueError):
    """User input (FITS cutouts, catalogues, options) cannot be used as given."""


class ModelError(SbiclusterError):
    """A model artifact is missing, corrupt, or does not match its card or this software."""


class OutputExistsError(SbiclusterError, FileExistsError):
    """An output would overwrite existing results and ``overwrite`` was not requested."""


class TrainingInterrupted(SbiclusterError):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint (and the model so far).

    Raised by :func:`sbicluster.training.train`; the command line exits with
    :attr:`exit_code` (128 + the signal number: 130 for SIGINT, 143 for SIGTERM) and prints the
    message, which says where the checkpoint is and how to resume.

    Attributes
    ----------
    signal : str
        ``"SIGINT"`` or ``"SIGTERM"``.
    exit_code : int
        128 + the signal number.
    checkpoint : pathlib.Path
        The checkpoint folder (``out_dir/checkpoint``).
    step : int
        Optimisation steps done when the run stopped.
    model : object
        The model written to ``out_dir/model`` (best validation so far), or None.
    """

    def __init__(self, signal: str, checkpoint, step: int, model=None) -> None:
        import signal as _signal

        self.signal = signal
        self.exit_code = 128 + int(getattr(_signal, signal))
        self.checkpoint = checkpoint
        self.step = step
        self.model = model
        super().__init__(
            f"training interrupted by {signal} at step {step}; checkpoint written to "
            f"{checkpoint}; continue by re-running the same command with --resume "
            "(in Python: train(..., resume=True))"
        )
