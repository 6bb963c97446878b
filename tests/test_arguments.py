"""arguments.is_whole: the one whole-number check (settings, counts, labels, arguments)."""

from __future__ import annotations

import numpy as np
import pytest

from vaekit.arguments import is_whole


@pytest.mark.parametrize(
    ("value", "low", "high", "numpy", "whole"),
    [
        (3, None, None, False, True),
        (0, 0, None, False, True),
        (0, 1, None, False, False),
        (2**31, 1, 2**31 - 1, False, False),
        (2**31 - 1, 1, 2**31 - 1, False, True),
        (True, None, None, False, False),  # a bool is no number of things
        (3.0, None, None, False, False),
        ("3", None, None, False, False),
        (None, None, None, False, False),
        (np.int64(3), None, None, False, False),  # a setting: JSON cannot write it
        (np.int64(3), 0, 5, True, True),  # an argument or a label may be NumPy's
        (np.int64(9), 0, 5, True, False),
        (np.bool_(True), None, None, True, False),
    ],
)
def test_is_whole(
    value: object, low: int | None, high: int | None, numpy: bool, whole: bool
) -> None:
    assert is_whole(value, low, high, numpy=numpy) is whole
