"""ProducedMarks: produced_seq written in the background, known meanwhile, kept on failure."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.dialogue.sessions import ProducedMarks, Session, SessionStore
from streams.keys import ConversationKeys

pytestmark = pytest.mark.asyncio

A, B = ConversationKeys("t", "a"), ConversationKeys("t", "b")


class Store:
    """mark_produced that waits for ``go``, or fails while ``down``."""

    def __init__(self) -> None:
        self.written: list[dict[ConversationKeys, int]] = []
        self.go = asyncio.Event()
        self.down = False

    async def mark_produced(self, produced: dict[ConversationKeys, int]) -> None:
        await self.go.wait()
        if self.down:
            raise RedisConnectionError("redis is down")
        self.written.append(produced)


def marks_on(store: Store) -> ProducedMarks:
    return ProducedMarks(cast(SessionStore, store))


def loaded(a: int = 0, b: int = 0) -> dict[ConversationKeys, Session]:
    """Sessions as Redis holds them: replies up to 5 recorded, up to a / b produced."""
    return {A: Session(A, reply_seq=5, produced_seq=a), B: Session(B, reply_seq=5, produced_seq=b)}


async def test_record_returns_at_once_and_the_write_follows() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 2), (A, 3), (B, 1)])  # the highest seq per conversation
    assert store.written == []
    store.go.set()
    await marks.written()
    assert store.written == [{A: 3, B: 1}]
    assert marks.pending() == {}


async def test_what_is_recorded_during_a_write_goes_in_the_next() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 1)])
    await asyncio.sleep(0)  # the first write is under way
    marks.record([(A, 2), (B, 1)])
    store.go.set()
    await marks.written()
    assert store.written == [{A: 1}, {A: 2, B: 1}]


async def test_sessions_loaded_before_the_write_owe_nothing_already_sent() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 3)])
    pending = marks.pending()
    store.go.set()
    await marks.written()  # written while the sessions were loading
    sessions = loaded(a=1, b=2)  # the load saw Redis before the write
    marks.apply(pending, sessions)
    assert (sessions[A].produced_seq, sessions[B].produced_seq) == (3, 2)


async def test_a_failed_write_is_known_meanwhile_and_written_with_the_next() -> None:
    store = Store()
    store.down = True
    store.go.set()
    marks = marks_on(store)
    marks.record([(A, 3)])
    await marks.written()  # logged, not raised
    sessions = loaded()
    marks.apply(marks.pending(), sessions)
    assert sessions[A].produced_seq == 3
    store.down = False
    marks.record([(B, 4)])
    await marks.written()
    assert store.written == [{A: 3, B: 4}]
