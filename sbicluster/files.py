"""Writing files so that a reader never sees half of one: :func:`atomic_path`.

This module owns the one atomic-write helper of the package: write to a temporary sibling, then
:func:`os.replace` it onto the target, so an interrupted run leaves the old file (or none), never
a truncated one. Files get the permissions an ordinary ``open`` would give under the process
umask (temporary files are created 0600; they are widened before the rename). It must not know
what is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_writable_dir", "default_file_mode"]


def default_file_mode() -> int:
    """Permission bits of a new file under the current umask (e.g. 0o644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    On an exception (or interruption) the temporary file is removed and ``path`` is left
    untouched. The parent folder is created if needed.

    Parameters
    ----------
    path : str or Path
        The file to write.
    suffix : str
        Suffix of the temporary file (``.<name>.<random><suffix>`` in the same folder).

    Yields
    ------
    Path
        Where to write.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable_dir(path: str | Path, *, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is (or can become) a folder this process can write.

    Nothing is created. A path that does not exist yet is checked through its nearest existing
    ancestor, which must be a writable folder.

    Parameters
    ----------
    path : str or Path
        The output folder.
    what : str
        How the user named it, for the message (e.g. ``--out``).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        If ``path`` is a file, lies under a file, or in a folder without write permission.

    Examples
    --------
    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> check_writable_dir(base / "new" / "results") == base / "new" / "results"
    True
    >>> (base / "file.txt").write_text("x")
    1
    >>> check_writable_dir(base / "file.txt" / "results")
    Traceback (most recent call last):
    ...
    sbicluster.errors.InputError: --out .../file.txt/results: .../file.txt is a file, not a folder
    """
    from .errors import InputError

    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(
            f"{what} {path}: {probe} is not writable ({os.strerror(errno.EACCES).lower()}); "
            "choose a folder you can write to"
        )
    return path
