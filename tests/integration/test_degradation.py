"""Degradation levels in a real Redis Cluster (streams/degradation.py, agents/degradation.py):
what an operator forces and what workers report is what every worker reads; messages kept
in maintenance go back on the bus once, in order, by one worker at a time, and only when
their tenant's level has dropped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster

from agents.degradation import TenantLevels, kept_record
from kernel.settings import Settings
from streams.degradation import DegradationStore, Level
from streams.security import redis_credentials
from streams.state import connect_cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisCluster]:
    """A client as the workers have it (bytes, not decoded strings)."""
    client = connect_cluster(settings.redis_startup_nodes,
                             credentials=redis_credentials(settings))
    try:
        yield client
    finally:
        await client.aclose()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_forced_level_is_read_by_every_worker_until_released(
        redis: RedisCluster) -> None:
    tenant, crm = unique("acme"), unique("crm")
    operator = DegradationStore(redis)
    first = TenantLevels(DegradationStore(redis), unique("w1"), {crm})
    second = TenantLevels(DegradationStore(redis), unique("w2"), {crm})
    await operator.force(tenant, 3, "drill")
    for worker in (first, second):
        await worker.refresh()
        assert worker.level(tenant).level is Level.STATIC
        assert not worker.llm_allowed(tenant)
    assert REGISTRY.get_sample_value("parley_degradation_level", {"tenant": tenant}) == 3
    assert await operator.release(tenant) is True
    assert await operator.release(tenant) is False
    await first.refresh()
    assert first.level(tenant).level is Level.FULL and first.llm_allowed(tenant)
    assert REGISTRY.get_sample_value("parley_degradation_level", {"tenant": tenant}) == 1


async def test_one_workers_open_breaker_reduces_the_level_for_all_until_it_closes(
        redis: RedisCluster) -> None:
    tenant, crm = unique("acme"), unique("crm")
    breaker_open = {"value": True}

    async def states() -> dict[str, bool]:
        return {crm: breaker_open["value"]}

    failing = TenantLevels(DegradationStore(redis), unique("w1"), {crm}, states)
    other = TenantLevels(DegradationStore(redis), unique("w2"), {crm})
    await failing.refresh()
    await other.refresh()
    assert other.level(tenant).level is Level.REDUCED
    assert other.llm_allowed(tenant)  # automatically, the LLM's own breaker decides
    breaker_open["value"] = False
    await failing.refresh()
    await other.refresh()
    assert other.level(tenant).level is Level.FULL
    breaker_open["value"] = True
    await failing.refresh()
    await failing.stop()  # a worker that stops withdraws its reports
    await other.refresh()
    assert other.level(tenant).level is Level.FULL


async def test_kept_messages_go_back_in_order_once_the_level_drops(
        redis: RedisCluster) -> None:
    tenant = unique("acme")
    store = DegradationStore(redis)
    worker = TenantLevels(store, unique("w1"), set())
    records = [kept_record(f"c{i % 2}", f"message {i}".encode()) for i in range(150)]
    await store.force(tenant, 4)
    await store.defer([(tenant, r) for r in records])
    produced: list[tuple[bytes, bytes]] = []

    async def produce(batch: Sequence[tuple[bytes, bytes]]) -> None:
        produced.extend(batch)

    await worker.refresh()
    assert await worker.replay(produce) == 0  # still in maintenance: kept
    assert await store.deferred_count(tenant) == 150

    await store.release(tenant)
    await worker.refresh()
    assert await store.claim_replay(tenant, "another worker")  # it is at it already
    assert await worker.replay(produce) == 0
    await store.end_replay(tenant)

    assert await worker.replay(produce) == 150
    assert produced == [(f"c{i % 2}".encode(), f"message {i}".encode()) for i in range(150)]
    assert await store.deferred_count(tenant) == 0
    assert tenant not in await store.deferred_tenants()
    assert await worker.replay(produce) == 0  # nothing twice
