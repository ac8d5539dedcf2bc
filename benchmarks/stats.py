"""Small, dependency-free statistics for benchmark results.

Percentiles use the nearest-rank method (:func:`kernel.stats.percentile`: a
reported p99 is a latency that was actually observed); histograms and
per-second series feed the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from kernel.stats import percentile

__all__ = ["latency_summary", "per_second", "rounded"]


def rounded(value: float, digits: int = 2) -> float | None:
    """``value`` rounded for JSON; None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, digits)


def latency_summary(
    values_ms: Iterable[float], prefix: str = "latency_ms"
) -> dict[str, float | None]:
    """``{prefix}_p50/p95/p99/max/mean`` of latencies in milliseconds."""
    ordered = sorted(values_ms)
    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return {
        f"{prefix}_p50": rounded(percentile(ordered, 50)),
        f"{prefix}_p95": rounded(percentile(ordered, 95)),
        f"{prefix}_p99": rounded(percentile(ordered, 99)),
        f"{prefix}_max": rounded(ordered[-1] if ordered else math.nan),
        f"{prefix}_mean": rounded(mean),
    }


def per_second(times_s: Iterable[float], until_s: float) -> list[int]:
    """How many of ``times_s`` (seconds from the run's start) fall in each whole second."""
    buckets = [0] * max(1, math.ceil(until_s))
    for t in times_s:
        if 0 <= t < len(buckets):
            buckets[int(t)] += 1
    return buckets
