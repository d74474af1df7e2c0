"""Small derived physics tables shipped with the package, and the build script that regenerates them.

Shipped files are read with ``numpy.load(..., allow_pickle=False)`` only. Rebuild them with
``python -m simulators.tables.build`` (needs the ``build`` extra and astrolachesis ``--no-deps``).
"""

from pathlib import Path

from ..errors import SimulatorError

__all__ = ["TABLE_DIR", "table_path"]

TABLE_DIR = Path(__file__).resolve().parent


def table_path(name: str) -> Path:
    """Path of the shipped table ``name`` in this folder.

    Raises
    ------
    SimulatorError
        If the file is missing (the message says how to rebuild it).
    """
    path = TABLE_DIR / name
    if not path.exists():
        raise SimulatorError(
            f"shipped table {name!r} is missing from {TABLE_DIR}; reinstall the package or rebuild "
            "the tables with `python -m simulators.tables.build`"
        )
    return path
