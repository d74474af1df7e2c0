"""What the checks of user input take as a whole number (:func:`sbicluster.checks.is_whole_number`)
and that the options checked with it refuse bools, fractions and text alike."""

from __future__ import annotations

import numpy as np
import pytest

from sbicluster.checks import is_whole_number
from sbicluster.errors import InputError


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (1, {}, True),
        (10**12, {}, True),
        (0, {}, False),
        (-3, {}, False),
        (0, {"least": 0}, True),
        (-3, {"least": None}, True),
        (99, {"least": 100}, False),
        (True, {}, False),  # an int equal to 1 to Python, never a count to a user
        (False, {"least": 0}, False),
        (np.bool_(True), {"numpy_integers": True}, False),
        (2.0, {}, False),
        (2.5, {}, False),
        ("128", {}, False),
        (None, {}, False),
        (np.int64(3), {}, False),  # recorded as JSON by some callers: Python int only by default
        (np.int64(3), {"numpy_integers": True}, True),
        (np.uint8(0), {"numpy_integers": True}, False),
    ],
)
def test_whole_numbers(value, kwargs, expected):
    assert is_whole_number(value, **kwargs) is expected


@pytest.mark.parametrize("bad", [True, 0, 2.5, "4"])
def test_the_options_checked_with_it_refuse_what_it_refuses(bad):
    from sbicluster.diagnostics.run import check_chunk
    from sbicluster.inference import check_batch_size
    from sbicluster.parallel_inference import check_chunk_size
    from sbicluster.training.loop import _check_validation_chunk

    for check in (check_batch_size, check_chunk, _check_validation_chunk):
        with pytest.raises(InputError):
            check(bad)
    with pytest.raises(InputError):
        check_chunk_size(64, bad)
