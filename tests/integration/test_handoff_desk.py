"""The agent console's API on a real Redis Cluster: the queue, an atomic claim when two
agents race, holder checks, tenant isolation and the expiry of unclaimed requests. The
broker is replaced by a recorder (the whole pipeline: tests/e2e/test_handoff.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from agents.dialogue.handoff import expire_due
from gateway.handoff_desk import HandoffDesk, HandoffRefused
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.handoff import HandoffKeys, HandoffRecord, HandoffStore, TranscriptLine
from streams.keys import InvalidIdError
from streams.state import connect_cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

CODEC = codec_for("handoff_event")


class Recorder:
    """Stands in for the producer: keeps what was published (or refuses it)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    def send(self, topic: str, key: str, value: bytes) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(OSError("broker down"))
        else:
            event = CODEC.decode(value)
            assert key == event["conversation_id"]
            self.events.append(event)
            future.set_result(0)
        return future


@pytest_asyncio.fixture
async def store(settings: Settings) -> AsyncIterator[HandoffStore]:
    redis = connect_cluster(settings.redis_startup_nodes)
    try:
        yield HandoffStore(redis, ttl_s=600)
    finally:
        await redis.aclose()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def request(store: HandoffStore, tenant_id: str, conversation: str,
                  deadline_ms: int = 10**13) -> HandoffRecord:
    record = HandoffRecord(conversation, f"req-{conversation}", "u1", "ws",
                           "human_handoff", {"order_id": "123"}, 1_000,
                           transcript=(TranscriptLine("l1", "user", "a person please", 999),))
    assert await store.enqueue(tenant_id, record, deadline_ms)
    return record


async def test_two_agents_claim_one_conversation_and_one_wins(store: HandoffStore) -> None:
    t, published = tenant(), Recorder()
    desk = HandoffDesk(store, published, "handoff.events", CODEC)
    await request(store, t, "c1")
    queue = await desk.queue(t, "ann")
    assert [r.conversation_id for r in queue.waiting] == ["c1"]
    assert queue.waiting[0].slots == {"order_id": "123"}
    assert [line.text for line in queue.waiting[0].transcript] == ["a person please"]

    results = await asyncio.gather(*(desk.claim(t, agent, "c1") for agent in ("ann", "bob")),
                                   return_exceptions=True)
    winners = [r for r in results if isinstance(r, HandoffRecord)]
    refused = [r for r in results if isinstance(r, HandoffRefused)]
    assert len(winners) == 1 and len(refused) == 1 and refused[0].code == "not_waiting"
    assert [e["type"] for e in published.events] == ["claimed"]
    holder = published.events[0]["agent_id"]
    queue = await desk.queue(t, "ann")
    assert queue.waiting == () and [(r.conversation_id, r.agent_id) for r in queue.held] == [
        ("c1", holder)]


async def test_only_the_holder_may_send_release_or_close(store: HandoffStore) -> None:
    t, published = tenant(), Recorder()
    desk = HandoffDesk(store, published, "handoff.events", CODEC)
    await request(store, t, "c1")
    with pytest.raises(HandoffRefused) as early:
        await desk.send(t, "ann", "c1", "hi")  # nobody holds it yet
    assert early.value.code == "not_holder"
    await desk.claim(t, "ann", "c1")
    for act in (desk.send(t, "bob", "c1", "hi"), desk.note(t, "bob", "c1", "x"),
                desk.release(t, "bob", "c1"), desk.close(t, "bob", "c1")):
        with pytest.raises(HandoffRefused) as refused:
            await act
        assert refused.value.code == "not_holder"
    with pytest.raises(HandoffRefused) as empty:
        await desk.send(t, "ann", "c1", "   ")
    assert empty.value.code == "invalid"

    await desk.send(t, "ann", "c1", "hello, I'm Ann")
    await desk.release(t, "ann", "c1", slots={"order_id": "999"})
    assert [e["type"] for e in published.events] == ["claimed", "agent_message", "released"]
    assert published.events[-1]["slots_json"] == '{"order_id":"999"}'
    assert all(e["request_id"] == "req-c1" for e in published.events)
    with pytest.raises(HandoffRefused):
        await desk.send(t, "ann", "c1", "still here?")  # released: no longer hers
    record = await store.record(t, "c1", transcript=True)
    assert record is not None and [line.role for line in record.transcript] == ["user", "agent"]


async def test_an_agent_of_another_tenant_sees_and_does_nothing(store: HandoffStore) -> None:
    mine, theirs, published = tenant(), tenant(), Recorder()
    desk = HandoffDesk(store, published, "handoff.events", CODEC)
    await request(store, mine, "c1")
    other = await desk.queue(theirs, "eve")
    assert other.waiting == () and other.held == ()
    with pytest.raises(HandoffRefused):
        await desk.claim(theirs, "eve", "c1")
    await desk.claim(mine, "ann", "c1")
    with pytest.raises(HandoffRefused):
        await desk.send(theirs, "ann", "c1", "hi")  # the same agent id, the wrong tenant
    with pytest.raises(InvalidIdError):
        await desk.queue("{mine}", "eve")  # no way to name another tenant's keys
    assert [e["tenant_id"] for e in published.events] == [mine]


async def test_a_claim_whose_command_is_not_published_is_undone(store: HandoffStore) -> None:
    t, published = tenant(), Recorder()
    desk = HandoffDesk(store, published, "handoff.events", CODEC)
    await request(store, t, "c1")
    published.fail = True
    with pytest.raises(HandoffRefused) as refused:
        await desk.claim(t, "ann", "c1")
    assert refused.value.code == "unavailable"
    assert await store.waiting(t) == ["c1"] and await store.held(t) == {}


async def test_unclaimed_requests_expire_once(store: HandoffStore) -> None:
    t = tenant()
    await request(store, t, "late", deadline_ms=5_000)
    await request(store, t, "claimed", deadline_ms=5_000)
    await request(store, t, "fresh", deadline_ms=10**13)
    assert await store.claim(t, "claimed", "ann", 2_000) is not None
    sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(events: Any) -> None:
        sent.extend(events)

    assert await expire_due(store, publish, now_ms=6_000) >= 1
    mine = [(c, e) for c, e in sent if e["tenant_id"] == t]
    assert [(c, e["type"], e["request_id"]) for c, e in mine] == [
        ("late", "expired", "req-late")]
    assert await store.waiting(t) == ["fresh"]
    sent.clear()
    await expire_due(store, publish, now_ms=7_000)  # already taken: not again
    assert not [e for _, e in sent if e["tenant_id"] == t]


async def test_a_repeated_request_is_queued_once(store: HandoffStore) -> None:
    t = tenant()
    record = await request(store, t, "c1")
    await store.claim(t, "c1", "ann", 2_000)
    assert not await store.enqueue(t, record, 10**13)  # a reprocessed turn
    assert await store.waiting(t) == [] and await store.held(t) == {"c1": "ann"}


async def test_a_conversation_whose_record_expired_leaves_the_queue(store: HandoffStore) -> None:
    t = tenant()
    desk = HandoffDesk(store, Recorder(), "handoff.events", CODEC)
    await request(store, t, "gone")
    await request(store, t, "held")
    await store.claim(t, "held", "ann", 2_000)
    for conversation in ("gone", "held"):  # as if their sessions' TTL ran out
        await store.redis.delete(HandoffKeys(t).record(conversation))
    queue = await desk.queue(t, "ann")
    assert queue.waiting == () and queue.held == ()
    assert await store.waiting(t) == [] and await store.held(t) == {}
