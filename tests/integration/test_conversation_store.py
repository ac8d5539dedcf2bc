"""Conversation state (the gateway's store, the dialogue's sessions) against the real
6-node Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from agents.dialogue.sessions import AppliedTurn, SessionStore
from kernel.settings import Settings
from streams.keys import ConversationKeys
from streams.state import (
    MESSAGE_IDS_KEPT,
    REDIS_UNAVAILABLE,
    ConversationStore,
    Numbered,
    connect_cluster,
)

T = TypeVar("T")

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def redis_bytes(settings: Settings) -> AsyncIterator[RedisCluster]:
    """The store's own kind of client: values are bytes (encoded Avro), not text."""
    client = connect_cluster(settings.redis_startup_nodes)
    yield client
    await client.aclose()


def conversation() -> ConversationKeys:
    return ConversationKeys("t-store", f"c-{uuid.uuid4().hex[:10]}")


def turn(keys: ConversationKeys, n: int, event_id: str | None = None) -> AppliedTurn:
    return AppliedTurn(keys, event_id or f"e{n}", n, n, f"reply {n}".encode(), n,
                       f'{{"s":1,"v":{n}}}'.encode())


async def test_a_turn_is_recorded_atomically_and_once(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=10)
    keys = conversation()

    assert await sessions.apply([turn(keys, 1)]) == [True]
    assert await sessions.apply([turn(keys, 1)]) == [False]  # the same event again

    loaded, seen = await sessions.load([(keys, "e1"), (keys, "e2")])
    session = loaded[keys]
    assert (session.turns, session.last_seq, session.reply_seq) == (1, 1, 1)
    assert session.dialogue == b'{"s":1,"v":1}'  # the dialogue state, in the same call
    assert seen == {"e1": 1}
    assert await store.replies_after(keys, 0) == [b"reply 1"]
    assert 0 < await redis_bytes.ttl(keys.session) <= 60


async def test_a_long_conversation_keeps_two_generations_of_idempotency_records(
        redis_bytes: RedisCluster) -> None:
    """The records of which events were applied are bounded: past ``events_kept`` a new
    generation starts and the one before it is kept, so a reprocessed recent event is
    still found (whichever generation holds it) and the oldest ones go."""
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=10, events_kept=3)
    keys = conversation()
    for n in range(1, 8):  # e1-e3 fill a generation, e4-e6 the next, e7 starts a third
        assert await sessions.apply([turn(keys, n)]) == [True]
    _, seen = await sessions.load([(keys, f"e{n}") for n in range(1, 8)])
    assert seen == {"e4": 4, "e5": 5, "e6": 6, "e7": 7}
    assert await sessions.apply([turn(keys, 5)]) == [False]  # in the generation before
    assert await sessions.apply([turn(keys, 7)]) == [False]  # in the current one
    assert await redis_bytes.hlen(keys.events) + await redis_bytes.hlen(keys.events_before) == 4
    assert 0 < await redis_bytes.ttl(keys.events_before) <= 60  # the TTL goes with it
    assert 0 < await redis_bytes.ttl(keys.events) <= 60


async def test_batches_span_many_slots(redis_bytes: RedisCluster) -> None:
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=10)
    convs = [conversation() for _ in range(40)]  # spread over the three primaries
    assert await sessions.apply([turn(k, 1) for k in convs]) == [True] * 40
    loaded, _ = await sessions.load([(k, "x") for k in convs])
    assert all(s.turns == 1 for s in loaded.values())
    await sessions.mark_produced({k: 1 for k in convs})
    loaded, _ = await sessions.load([(k, "x") for k in convs])
    assert {s.produced_seq for s in loaded.values()} == {1}


async def test_outbox_keeps_the_newest_replies_in_order(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=3)
    keys = conversation()
    await sessions.apply([turn(keys, n) for n in range(1, 6)])
    assert await store.replies_after(keys, 0) == [b"reply 3", b"reply 4", b"reply 5"]
    assert await store.replies_after(keys, 4) == [b"reply 5"]


async def test_unproduced_replies_are_the_range_after_produced_seq(
    redis_bytes: RedisCluster,
) -> None:
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=10)
    done, crashed = conversation(), conversation()
    await sessions.apply([turn(done, n) for n in (1, 2)] + [turn(crashed, n) for n in (1, 2, 3)])
    await sessions.mark_produced({done: 2, crashed: 1})  # the worker died after reply 1
    loaded, _ = await sessions.load([(done, "x"), (crashed, "x")])

    owed = await sessions.unproduced(loaded.values())

    assert owed == [(crashed, 2, b"reply 2"), (crashed, 3, b"reply 3")]


async def test_inbound_sequence_is_per_conversation(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    a, b = conversation(), conversation()
    assert [await store.next_inbound_seqs([a]) for _ in range(2)] == [[1], [2]]
    # One call: a conversation named twice gets consecutive numbers, in order.
    assert await store.next_inbound_seqs([a, b, a]) == [3, 1, 4]
    assert 0 < await redis_bytes.ttl(b.inbound_seq) <= 60, "a new counter lives as a session"


async def test_erase_removes_every_key(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=3)
    keys = conversation()
    await sessions.apply([turn(keys, 1)])
    await store.next_inbound_seqs([keys])
    assert await store.erase([keys]) == 4
    assert await redis_bytes.exists(*keys.all()) == 0


async def test_inbound_sequences_span_every_primary(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    convs = [conversation() for _ in range(40)]  # spread over the three primaries
    assert await store.next_inbound_seqs([*convs, *convs[:5]]) == [1] * 40 + [2] * 5
    assert all([0 < await redis_bytes.ttl(k.inbound_seq) <= 60 for k in convs])


async def role(cluster: RedisCluster, node: ClusterNode) -> str:
    reply: list[Any] = await cluster.execute_command("ROLE", target_nodes=node)
    return str(reply[0])


async def promote(cluster: RedisCluster, replica: ClusterNode) -> None:
    """A manual failover: ``replica`` becomes its primary's primary, and the other a replica."""
    await cluster.execute_command("CLUSTER FAILOVER", target_nodes=replica)
    async with asyncio.timeout(30):
        while await role(cluster, replica) != "master":
            await asyncio.sleep(0.1)


async def eventually(attempt: Callable[[], Awaitable[T]], tries: int = 10) -> T:
    """What a worker does with a batch that failed on Redis: try again after a pause."""
    for _ in range(tries - 1):
        try:
            return await attempt()
        except REDIS_UNAVAILABLE:
            await asyncio.sleep(0.3)
    return await attempt()


async def test_after_a_failover_the_next_try_goes_to_the_new_primaries(
    redis_bytes: RedisCluster, redis_cluster: RedisCluster,
) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    sessions = SessionStore(redis_bytes, ttl_s=60, outbox_size=10)
    convs = [conversation() for _ in range(40)]  # some on every primary
    assert await sessions.apply([turn(k, 1) for k in convs]) == [True] * 40  # layout learned
    replica = redis_cluster.get_replicas()[0]
    reply: list[Any] = await redis_cluster.execute_command("ROLE", target_nodes=replica)
    primary = redis_cluster.get_node(reply[1], int(reply[2]))
    assert primary is not None
    await promote(redis_cluster, replica)
    try:
        await eventually(lambda: sessions.apply([turn(k, 2) for k in convs]))
        loaded, seen = await eventually(lambda: sessions.load([(k, "e2") for k in convs]))
        assert {s.turns for s in loaded.values()} == {2}
        assert seen == {"e2": 2}
        assert await eventually(lambda: store.next_inbound_seqs(convs)) == [1] * 40
    finally:
        await promote(redis_cluster, primary)  # as it was, for the tests after this one
        await redis_cluster.nodes_manager.initialize()


async def test_a_resent_message_id_gets_its_first_number_and_event(
        redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    a, b = conversation(), conversation()
    first = await store.number_messages_settled([(a, "m1", "ev-1"), (b, "m1", "ev-2"),
                                                 (a, "", "ev-3")])
    assert first == [Numbered(1), Numbered(1), Numbered(2)]  # ids are per conversation
    again = await store.number_messages_settled([(a, "m1", "ev-9"), (a, "m2", "ev-10"),
                                                 (a, "m2", "ev-11"), (a, "", "ev-12")])
    assert again == [Numbered(1, "ev-1"), Numbered(3), Numbered(3, "ev-10"), Numbered(4)]
    assert 0 < await redis_bytes.ttl(a.message_ids) <= 60
    await store.forget_message(a, "m2")  # never reached the broker: a retry is new
    assert await store.number_messages_settled([(a, "m2", "ev-13")]) == [Numbered(5)]


async def test_the_remembered_message_ids_are_bounded(redis_bytes: RedisCluster) -> None:
    store = ConversationStore(redis_bytes, ttl_s=60)
    a = conversation()
    await store.number_messages_settled([(a, f"m{i}", f"e{i}")
                                         for i in range(MESSAGE_IDS_KEPT + 10)])
    assert await redis_bytes.hlen(a.message_ids) <= MESSAGE_IDS_KEPT


async def test_a_turn_gives_every_key_the_conversations_retention(
        redis_bytes: RedisCluster) -> None:
    """The retention the gateway recorded for the conversation (its tenant's) is the TTL
    the dialogue step's writes give the session, its records, its outbox and its owner;
    without one, the deployment's."""
    sessions = SessionStore(redis_bytes, ttl_s=3600, outbox_size=10)
    brief, usual = conversation(), conversation()
    for keys in (brief, usual):
        await redis_bytes.set(keys.owner, "ann", ex=5)
    await redis_bytes.set(brief.retention, 120, ex=120)
    assert await sessions.apply([turn(brief, 1), turn(usual, 1)]) == [True, True]
    for name in (brief.session, brief.events, brief.outbox, brief.owner, brief.retention):
        assert 100 < await redis_bytes.ttl(name) <= 120, name
    for name in (usual.session, usual.events, usual.outbox, usual.owner):
        assert 3000 < await redis_bytes.ttl(name) <= 3600, name
    assert await redis_bytes.exists(usual.retention) == 0


async def test_a_turn_renews_ttls_that_ran_down_or_outlast_a_shortened_retention(
        redis_bytes: RedisCluster) -> None:
    """Keys are renewed when their TTL has run down by more than a tenth (at most an
    hour), not at every write; a retention shortened since shortens them at once."""
    sessions = SessionStore(redis_bytes, ttl_s=3600, outbox_size=10)
    keys = conversation()
    await redis_bytes.set(keys.owner, "ann", ex=3600)
    assert await sessions.apply([turn(keys, 1)]) == [True]
    names = (keys.session, keys.events, keys.outbox, keys.owner)
    for name in names:  # a little time passes: within the slack, nothing is written
        await redis_bytes.expire(name, 3500)
    assert await sessions.apply([turn(keys, 2)]) == [True]
    for name in names:
        assert 3490 < await redis_bytes.ttl(name) <= 3500, name
    for name in names:  # more than a tenth: all of them are renewed
        await redis_bytes.expire(name, 3000)
    assert await sessions.apply([turn(keys, 3)]) == [True]
    for name in names:
        assert 3590 < await redis_bytes.ttl(name) <= 3600, name
    await redis_bytes.set(keys.retention, 60, ex=60)  # the tenant's retention shortened
    assert await sessions.apply([turn(keys, 4)]) == [True]
    for name in (*names, keys.retention):
        assert 0 < await redis_bytes.ttl(name) <= 60, name
