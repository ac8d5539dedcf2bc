"""The one percentile every benchmark and evaluation reports."""

from __future__ import annotations

import math

import pytest

from kernel.stats import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([1.0, 10.0], 50) == 1.0  # observed, not interpolated (5.5)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)
