"""ArrivalRate: when a gateway counts as busy and starts holding messages to produce them
together (gateway/sequences.py)."""

from __future__ import annotations

from gateway.sequences import ArrivalRate


def arrivals(rate: ArrivalRate, start: float, every: float, count: int) -> list[bool]:
    return [rate.busy(start + i * every) for i in range(count)]


def test_messages_slower_than_the_busy_rate_are_never_held() -> None:
    rate = ArrivalRate(busy_per_s=400)  # 40 in a window of 0.1 s
    assert not any(arrivals(rate, 0.0, every=1 / 300, count=3000))  # 10 s at 300 msg/s


def test_a_burst_counts_as_busy_once_it_reaches_the_rate_within_a_window() -> None:
    rate = ArrivalRate(busy_per_s=400)
    burst = arrivals(rate, 0.0, every=0.001, count=60)  # 1,000 msg/s
    assert burst[:39] == [False] * 39  # the first 39 of a window go at once
    assert all(burst[39:])


def test_busy_lasts_into_the_next_window_and_ends_when_the_traffic_slows() -> None:
    rate = ArrivalRate(busy_per_s=400)
    arrivals(rate, 0.0, every=0.001, count=100)  # a full window at 1,000 msg/s
    assert rate.busy(0.1005)  # a new window, judged by the last one
    assert not rate.busy(2.0)  # after a pause: the last window, spread over 1.9 s, was slow
    assert not any(arrivals(rate, 2.01, every=0.01, count=100))  # 100 msg/s


def test_steady_traffic_above_the_rate_stays_busy() -> None:
    rate = ArrivalRate(busy_per_s=400)
    steady = arrivals(rate, 0.0, every=1 / 2000, count=20_000)  # 10 s at 2,000 msg/s
    assert all(steady[40:])
