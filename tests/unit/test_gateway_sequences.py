"""InboundSequences batches the numbers asked for while a request is at Redis; BusyHold
holds a busy gateway's messages so they are checked and numbered together."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.sequences import BusyHold, InboundSequences
from streams.keys import ConversationKeys
from streams.state import ConversationStore, Numbered

pytestmark = pytest.mark.asyncio


class SlowStore:
    """Counters in a dict; each request waits until the test releases it."""

    def __init__(self) -> None:
        self.counters: Counter[ConversationKeys] = Counter()
        self.requests: list[list[ConversationKeys]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.down: dict[ConversationKeys, Exception] = {}  # conversations of a stopped shard

    async def number_messages_settled(
        self, messages: Sequence[tuple[ConversationKeys, str, str]]
    ) -> list[Numbered | Exception]:
        conversations = [keys for keys, _, _ in messages]
        self.requests.append(conversations)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        seqs: list[Numbered | Exception] = []
        for keys in conversations:
            if keys in self.down:
                seqs.append(self.down[keys])
                continue
            self.counters[keys] += 1
            seqs.append(Numbered(self.counters[keys]))
        return seqs


def sequences(store: SlowStore) -> InboundSequences:
    return InboundSequences(cast(ConversationStore, store))


A, B = ConversationKeys("t", "a"), ConversationKeys("t", "b")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_message_goes_at_once_and_later_ones_wait_for_one_request() -> None:
    store = SlowStore()
    seqs = sequences(store)
    first = asyncio.create_task(seqs.next(A))
    await settle()
    assert store.requests == [[A]]  # nothing to wait for: sent on its own
    later = [asyncio.create_task(seqs.next(k)) for k in (B, A, B, A)]
    await settle()
    assert store.requests == [[A]], "nothing more is sent while a request is at Redis"
    store.release.set()
    assert await first == 1
    assert [await t for t in later] == [1, 2, 2, 3]  # in the order they asked, per conversation
    assert store.requests == [[A], [B, A, B, A]]
    await seqs.close()


async def test_a_failed_request_fails_its_batch_and_the_next_one_is_asked_again() -> None:
    store = SlowStore()
    seqs = sequences(store)
    store.fail = RedisConnectionError("down")
    batch = [asyncio.create_task(seqs.next(k)) for k in (A, B)]
    store.release.set()
    for task in batch:
        with pytest.raises(RedisConnectionError):
            await task
    store.fail = None
    assert await seqs.next(A) == 1


async def test_a_shard_that_is_down_fails_only_the_conversations_it_serves() -> None:
    store = SlowStore()
    seqs = sequences(store)
    store.down[B] = RedisConnectionError("shard of b down")
    batch = [asyncio.create_task(seqs.next(k)) for k in (A, B, A)]
    store.release.set()
    first, refused, second = await asyncio.gather(*batch, return_exceptions=True)
    assert (first, second) == (1, 2)
    assert isinstance(refused, RedisConnectionError)


async def test_a_waiter_that_gives_up_does_not_hold_up_the_others() -> None:
    store = SlowStore()
    seqs = sequences(store)
    first = asyncio.create_task(seqs.next(A))
    await settle()
    gone, stays = asyncio.create_task(seqs.next(B)), asyncio.create_task(seqs.next(A))
    await settle()
    gone.cancel()  # its socket closed
    store.release.set()
    assert (await first, await stays) == (1, 2)
    assert gone.cancelled()


async def test_closing_waits_for_the_request_at_redis() -> None:
    store = SlowStore()
    seqs = sequences(store)
    asked = asyncio.create_task(seqs.next(A))
    await settle()
    closing = asyncio.create_task(seqs.close())
    await settle()
    assert not closing.done()
    store.release.set()
    await closing
    assert asked.done() and await asked == 1




async def held_then_numbered(hold: BusyHold, seqs: InboundSequences,
                             keys: ConversationKeys) -> int:
    """What the gateway does with a message: the hold, then (the rate limits and) its
    number."""
    await hold.arrive()
    return await seqs.next(keys)


def busy_hold(linger_s: float) -> BusyHold:
    """Busy from the first message: every arrival is held for ``linger_s``."""
    return BusyHold(linger_s, busy_rate=1)


async def test_a_busy_gateway_holds_its_messages_then_numbers_them_in_one_request() -> None:
    store = SlowStore()
    store.release.set()
    hold, seqs = busy_hold(0.2), sequences(store)
    asked = [asyncio.create_task(held_then_numbered(hold, seqs, k)) for k in (A, B, A, A, B)]
    await asyncio.sleep(0.1)
    assert store.requests == [], "held for the linger"
    assert [await t for t in asked] == [1, 1, 2, 3, 2]
    assert store.requests == [[A, B, A, A, B]]


async def test_while_busy_what_comes_during_a_request_is_held_for_the_next_linger() -> None:
    store = SlowStore()
    hold, seqs = busy_hold(0.05), sequences(store)
    first = asyncio.create_task(held_then_numbered(hold, seqs, A))
    await asyncio.sleep(0.1)
    assert store.requests == [[A]]  # released, now at Redis
    later = [asyncio.create_task(held_then_numbered(hold, seqs, k)) for k in (A, B)]
    store.release.set()
    assert await first == 1
    await settle()
    assert store.requests == [[A]], "the later ones wait for a linger of their own"
    assert [await t for t in later] == [2, 1]
    assert store.requests == [[A], [A, B]]


async def test_a_held_message_whose_socket_goes_does_not_release_the_others_early() -> None:
    hold = busy_hold(0.2)
    gone, kept = (asyncio.create_task(hold.arrive()) for _ in range(2))
    await settle()
    gone.cancel()
    await settle()
    assert not kept.done(), "still held"
    await asyncio.wait_for(kept, 1)


async def test_closing_lets_on_at_once_what_a_busy_gateway_holds() -> None:
    store = SlowStore()
    store.release.set()
    hold, seqs = busy_hold(60), sequences(store)
    asked = [asyncio.create_task(held_then_numbered(hold, seqs, k)) for k in (A, B)]
    await settle()
    hold.close()  # long before the linger is up
    assert await asyncio.wait_for(asyncio.gather(*asked), 1) == [1, 1]
    assert await asyncio.wait_for(held_then_numbered(hold, seqs, A), 1) == 2, \
        "nothing is held after closing"


async def test_a_quiet_gateway_asks_for_each_number_at_once() -> None:
    store = SlowStore()
    store.release.set()
    hold, seqs = BusyHold(60, busy_rate=400), sequences(store)
    for n in range(1, 6):  # one at a time: far below 400 a second
        assert await asyncio.wait_for(held_then_numbered(hold, seqs, A), 1) == n
    assert store.requests == [[A]] * 5
