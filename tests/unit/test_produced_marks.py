"""ProducedMarks: produced_seq written in the background, known meanwhile, kept on failure."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.keys import ConversationKeys
from streams.state import ConversationStore, ProducedMarks, Session

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
    return ProducedMarks(cast(ConversationStore, store))


def loaded(**produced: int) -> dict[ConversationKeys, Session]:
    return {k: Session(k, reply_seq=5, produced_seq=produced.get(k.conversation_id, 0))
            for k in (A, B)}


async def test_record_returns_at_once_and_the_write_follows() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 2), (A, 3), (B, 1)])  # the highest seq per conversation
    assert store.written == []
    store.go.set()
    await marks.written()
    assert store.written == [{A: 3, B: 1}]


async def test_sessions_loaded_before_the_write_owe_nothing_already_sent() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 3)])
    sessions = loaded(a=1, b=2)  # as Redis still had it
    marks.apply(sessions)
    assert (sessions[A].produced_seq, sessions[B].produced_seq) == (3, 2)
    store.go.set()
    await marks.written()
    sessions = loaded(a=1)
    marks.apply(sessions)  # written: the store is the truth again
    assert sessions[A].produced_seq == 1


async def test_a_failed_write_is_known_meanwhile_and_written_with_the_next() -> None:
    store = Store()
    store.down = True
    store.go.set()
    marks = marks_on(store)
    marks.record([(A, 3)])
    await marks.written()  # logged, not raised
    sessions = loaded()
    marks.apply(sessions)
    assert sessions[A].produced_seq == 3
    store.down = False
    marks.record([(B, 4)])
    await marks.written()
    assert store.written == [{A: 3, B: 4}]


async def test_one_write_at_a_time() -> None:
    store = Store()
    marks = marks_on(store)
    marks.record([(A, 1)])
    with pytest.raises(RuntimeError):
        marks.record([(A, 2)])
    store.go.set()
    await marks.written()
    assert store.written == [{A: 1}]
