"""Predicates that the checks of user input share: :func:`is_whole_number`.

This module owns what counts as a whole number for a count, size or seed that a user gives (an
option, a configuration field): an integer, never a bool (Python's ``True`` is an ``int`` equal to
1, so ``isinstance(True, int)`` alone would let ``--chunk True`` through). It must not raise or
word the refusal: each caller names its own option in its own message.
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_whole_number"]


def is_whole_number(value: object, least: int | None = 1, *, numpy_integers: bool = False) -> bool:
    """Whether ``value`` is an integer (not a bool) no smaller than ``least``.

    Parameters
    ----------
    value : object
        What the user gave.
    least : int or None
        Smallest value allowed (default 1, a count of things); ``None``: no lower bound.
    numpy_integers : bool
        Also take numpy integer scalars (``np.int64(3)``), for values that are used at once and
        not recorded as JSON; by default only Python ``int``.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_whole_number(128), is_whole_number(True), is_whole_number(2.0), is_whole_number(0)
    (True, False, False, False)
    >>> is_whole_number(0, least=0), is_whole_number(np.int64(3), numpy_integers=True)
    (True, True)
    """
    kinds = (int, np.integer) if numpy_integers else (int,)
    if isinstance(value, bool | np.bool_) or not isinstance(value, kinds):
        return False
    return least is None or bool(value >= least)
