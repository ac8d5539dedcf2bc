"""Event ids the gateway gives messages (gateway/server.py)."""

from __future__ import annotations

from gateway.server import EventIds


def test_event_ids_are_unique_within_and_across_gateways() -> None:
    first, second = EventIds(), EventIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0][:16] != ids[1000][:16]  # each gateway its own random prefix
