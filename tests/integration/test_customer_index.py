"""The customer index and the replay guard on a real Redis Cluster: an event reaches only
its customer's open conversations; a customer with none gets it kept (bounded) and taken
once at their next visit; another customer of the tenant, or of another tenant, never sees
it; a callback id is taken once."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio.cluster import RedisCluster

from streams.proactive import CustomerIndex, ReplayGuard

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

HOUR_MS = 3600 * 1000


def ids() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"t{run}", f"o{run}"


async def test_an_event_reaches_only_its_customers_open_conversations(
        redis_cluster: RedisCluster) -> None:
    tenant, other_tenant = ids()
    index = CustomerIndex(redis_cluster, open_s=3600)
    now = 10 * HOUR_MS
    assert await index.touch(tenant, "anna", "c-anna-1", now) == []
    await index.touch(tenant, "anna", "c-anna-2", now - 10)
    await index.touch(tenant, "anna", "c-anna-old", now - 2 * HOUR_MS)  # session ended
    await index.touch(tenant, "bob", "c-bob", now)
    await index.touch(other_tenant, "anna", "c-other-anna", now)
    found = await index.route(tenant, "anna", {"event_id": "e1"}, now + 5)
    assert sorted(found) == ["c-anna-1", "c-anna-2"]
    assert await index.touch(tenant, "anna", "c-anna-1", now + 6) == [], "nothing kept"
    assert await index.touch(tenant, "bob", "c-bob", now + 6) == []
    assert await index.touch(other_tenant, "anna", "c-other-anna", now + 6) == []


async def test_a_customer_without_an_open_conversation_gets_it_at_the_next_visit(
        redis_cluster: RedisCluster) -> None:
    tenant, other_tenant = ids()
    index = CustomerIndex(redis_cluster, open_s=3600, keep=3)
    now = 10 * HOUR_MS
    await index.touch(tenant, "anna", "c-old", now - 2 * HOUR_MS)
    for i in range(5):
        assert await index.route(tenant, "anna", {"event_id": f"e{i}"}, now) == []
    assert await index.touch(tenant, "bob", "c-bob", now) == [], "not another customer's"
    assert await index.touch(other_tenant, "anna", "c-x", now) == [], "not another tenant's"
    taken = await index.touch(tenant, "anna", "c-new", now + 1)
    assert [n["event_id"] for n in taken] == ["e2", "e3", "e4"], "the newest, bounded"
    assert await index.touch(tenant, "anna", "c-new", now + 2) == [], "taken once"
    assert await index.route(tenant, "anna", {"event_id": "e5"}, now + 3) == ["c-new"]


async def test_a_callback_id_is_taken_once(redis_cluster: RedisCluster) -> None:
    guard = ReplayGuard(redis_cluster, window_s=60)
    callback = uuid.uuid4().hex
    assert await guard.first("crm", callback)
    assert not await guard.first("crm", callback)
    assert await guard.first("zendesk", callback), "ids are per backend"
    await guard.forget("crm", callback)
    assert await guard.first("crm", callback)
