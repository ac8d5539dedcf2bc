"""InFlight: the gateway's bound on messages waiting for replies."""

from __future__ import annotations

import pytest

from gateway.admission import InFlight


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_and_again_after_a_release() -> None:
    in_flight = InFlight(limit=2, expiry_s=30)
    assert in_flight.admit("a") and in_flight.admit("b")
    assert not in_flight.admit("c")
    assert len(in_flight) == 2
    in_flight.release("a")
    in_flight.release("a")  # a second reply for one message changes nothing
    in_flight.release("unknown")  # e.g. a reply for another gateway's message
    assert in_flight.admit("c") and len(in_flight) == 2


def test_a_message_without_a_reply_stops_counting_after_the_expiry() -> None:
    clock = Clock()
    in_flight = InFlight(limit=2, expiry_s=30, clock=clock)
    assert in_flight.admit("lost")
    clock.now += 20
    assert in_flight.admit("late")
    assert not in_flight.admit("refused")
    clock.now += 10  # "lost" is 30 s old
    assert in_flight.admit("next")
    assert len(in_flight) == 2
    in_flight.release("late")
    in_flight.release("next")
    assert len(in_flight) == 0


def test_released_messages_do_not_expire_again() -> None:
    clock = Clock()
    in_flight = InFlight(limit=1, expiry_s=5, clock=clock)
    assert in_flight.admit("a")
    in_flight.release("a")
    assert in_flight.admit("b")
    clock.now += 5
    assert in_flight.admit("c")  # b expired
    assert len(in_flight) == 1


@pytest.mark.parametrize("limit, expiry", [(0, 30), (5, 0)])
def test_rejects_nonsense_settings(limit: int, expiry: float) -> None:
    with pytest.raises(ValueError):
        InFlight(limit, expiry)
