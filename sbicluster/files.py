"""Writing files and folders so that a reader never sees half of one.

This module owns the atomic-write helpers of the package. :func:`atomic_path` writes a file to a
temporary sibling, then :func:`os.replace` moves it onto the target, so an interrupted run leaves
the old file (or none), never a truncated one. :func:`atomic_folder` does the same for a whole
output folder: a run writes into a temporary sibling folder that is swapped in at the end, so the
folder holds one complete run, never a mix of two. Files and folders get the permissions an
ordinary ``open``/``mkdir`` would give under the process umask (temporary ones are created 0600
and 0700; they are widened before the rename). It must not know what is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

__all__ = [
    "atomic_folder",
    "atomic_path",
    "check_output_folder",
    "check_writable_dir",
    "default_dir_mode",
    "default_file_mode",
]


def default_file_mode() -> int:
    """Permission bits of a new file under the current umask (e.g. 0o644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def default_dir_mode() -> int:
    """Permission bits of a new folder under the current umask (e.g. 0o755 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_siblings(path: Path) -> None:
    """Remove temporary siblings of ``path`` left by killed runs; restore a lost old folder.

    Siblings are named ``.<name>.tmp-<pid>-<random>`` (a run in progress) and
    ``.<name>.old-<pid>-<random>/run`` (the previous folder, or its replaced entries, while they
    are swapped out). Only those whose process is gone are touched. If a run was killed between
    its renames, what is missing from ``path`` is moved back from ``run``.
    """
    for kind in ("old", "tmp"):
        for sibling in sorted(path.parent.glob(f".{path.name}.{kind}-*")):
            pid_text = sibling.name[len(f".{path.name}.{kind}-") :].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            kept = sibling / "run"
            if kind == "old" and kept.is_dir():
                if not path.exists():
                    os.rename(kept, path)
                elif path.is_dir():
                    for entry in kept.iterdir():
                        if not (path / entry.name).exists():
                            os.rename(entry, path / entry.name)
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    path: str | Path,
    *,
    overwrite: bool = False,
    owned: Collection[str] | None = None,
    what: str = "--out",
) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; on success swap it in as ``path``.

    Everything a run writes goes into the temporary folder ``.<name>.tmp-<pid>-<random>`` beside
    ``path``. When the block ends without an exception, an existing ``path`` is renamed aside
    (``.<name>.old-...``), the new folder is renamed to ``path`` and the old one is deleted, so
    ``path`` holds the files of exactly one complete run: no file of an earlier run survives an
    overwrite. On an exception the temporary folder is deleted and ``path`` is left as it was.
    When ``owned`` is given and ``path`` also holds other entries (``--out .``, or a folder that
    holds the command's input), those are kept: the owned entries are then swapped one by one
    (each old one renamed aside, the new one renamed in, stale ones of an earlier run removed).
    A process killed mid-run leaves only its temporary sibling, which the next call removes; one
    killed between the two renames leaves the previous run in ``.<name>.old-...``, which the next
    call moves back first.

    Parameters
    ----------
    path : str or Path
        The output folder. It may not exist yet, or be an empty folder.
    overwrite : bool
        Replace a ``path`` that already holds files. Without it such a folder is refused.
    owned : collection of str, optional
        Names of the entries the command writes. Other entries of an existing ``path`` are
        kept, so that ``--out .`` cannot delete unrelated files. ``None``: the whole folder is
        the command's and is replaced.
    what : str
        How the user named ``path``, for messages.

    Yields
    ------
    Path
        The temporary folder to write into; it has the umask's permissions (0o755 under 022).

    Raises
    ------
    InputError
        ``path`` is a file, lies under a file, or cannot be written.
    OutputExistsError
        ``path`` holds files and ``overwrite`` is false.

    Examples
    --------
    >>> base = Path(tempfile.mkdtemp())
    >>> with atomic_folder(base / "run") as tmp:
    ...     _ = (tmp / "a.txt").write_text("1")
    >>> with atomic_folder(base / "run", overwrite=True) as tmp:
    ...     _ = (tmp / "b.txt").write_text("2")
    >>> sorted(p.name for p in (base / "run").iterdir())
    ['b.txt']
    """
    path = check_output_folder(path, overwrite=overwrite, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_siblings(path)
    path = check_output_folder(path, overwrite=overwrite, what=what)  # as restored
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, default_dir_mode())
        existing = {p.name for p in path.iterdir()} if path.is_dir() else set()
        if not existing:
            if path.is_dir():
                path.rmdir()
            os.rename(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
        if owned is None or existing <= set(owned):
            os.rename(path, old / "run")  # the old folder moves whole, in one rename
            os.rename(tmp, path)
        else:
            (old / "run").mkdir()
            for name in sorted(existing & set(owned)):
                os.rename(path / name, old / "run" / name)
            for entry in sorted(tmp.iterdir()):
                os.rename(entry, path / entry.name)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_folder(path: str | Path, *, overwrite: bool = False, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can receive a run's outputs; create nothing.

    ``path`` must be (or can become) a writable folder (:func:`check_writable_dir`) and, unless
    ``overwrite``, must not exist or be empty.

    Raises
    ------
    InputError
        ``path`` is a file, lies under a file, or cannot be written.
    OutputExistsError
        ``path`` holds files and ``overwrite`` is false.
    """
    from .errors import OutputExistsError

    path = check_writable_dir(path, what=what)
    existing = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if existing and not overwrite:
        raise OutputExistsError(
            f"{what} {path}: already holds {', '.join(existing[:3])}"
            f"{' ...' if len(existing) > 3 else ''}; pass --overwrite (overwrite=True) to "
            "replace its outputs, or choose a new or empty folder"
        )
    return path
