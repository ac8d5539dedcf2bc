"""Usage counters per tenant (streams/usage.py): batched, and never lost to a Redis hiccup."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streams.keys import InvalidIdError
from streams.usage import KNOWLEDGE_REQUESTS, LLM_PROMPT_TOKENS, UsageCounter, usage_key


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[tuple[str, str, int]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.queued = []

    def hincrby(self, key: str, name: str, n: int) -> None:
        self.queued.append((key, name, n))

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.redis.round_trips += 1
        if self.redis.down:
            raise RedisConnectionError("redis is down")
        replies: list[Any] = []
        for key, name, n in self.queued:
            if key in self.redis.refusing:
                replies.append(ResponseError("MOVED, and out of retries"))
                continue
            self.redis.hashes[key][name] += n
            replies.append(self.redis.hashes[key][name])
        return replies


class FakeRedis:
    """Holds hashes; fails whole pipelines (``down``) or one key's commands (``refusing``)."""

    def __init__(self) -> None:
        self.hashes: dict[str, Counter[str]] = {}
        self.round_trips = 0
        self.down = False
        self.refusing: set[str] = set()

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert not transaction, "usage spans slots: no MULTI"
        return FakePipeline(self)

    def totals(self, tenant: str) -> dict[str, int]:
        return dict(self.hashes.get(usage_key(tenant), Counter()))


def counter(redis: FakeRedis, every_s: float = 1.0) -> UsageCounter:
    for tenant in ("acme", "globex"):
        redis.hashes.setdefault(usage_key(tenant), Counter())
    return UsageCounter(cast(RedisCluster, redis), every_s=every_s)


@pytest.mark.asyncio
async def test_many_counts_reach_redis_in_one_round_trip_per_flush() -> None:
    redis = FakeRedis()
    usage = counter(redis)
    for _ in range(500):
        usage.count("acme")
        usage.count("acme", KNOWLEDGE_REQUESTS)
    usage.count("globex", LLM_PROMPT_TOKENS, 1200)
    assert redis.round_trips == 0  # counting does no I/O
    await usage.flush()
    assert redis.round_trips == 1
    assert redis.totals("acme") == {"messages": 500, KNOWLEDGE_REQUESTS: 500}
    assert redis.totals("globex") == {LLM_PROMPT_TOKENS: 1200}
    await usage.flush()  # nothing new: no call at all
    assert redis.round_trips == 1


@pytest.mark.asyncio
async def test_usage_counted_while_redis_is_down_is_added_later() -> None:
    redis = FakeRedis()
    usage = counter(redis)
    for _ in range(3):
        usage.count("acme")
    usage.count("globex")
    redis.down = True
    await usage.flush()  # logged, not raised
    usage.count("acme")
    assert redis.totals("acme") == {} and usage.pending() == {"acme": {"messages": 4},
                                                              "globex": {"messages": 1}}
    redis.down = False
    await usage.close()
    assert redis.totals("acme") == {"messages": 4}
    assert redis.totals("globex") == {"messages": 1}
    assert usage.pending() == {}


@pytest.mark.asyncio
async def test_only_what_redis_refused_is_sent_again() -> None:
    redis = FakeRedis()
    usage = counter(redis)
    usage.count("acme", n=2)
    usage.count("globex", n=5)
    redis.refusing.add(usage_key("globex"))
    await usage.flush()
    assert redis.totals("acme") == {"messages": 2}
    assert usage.pending() == {"globex": {"messages": 5}}
    redis.refusing.clear()
    await usage.flush()
    assert redis.totals("acme") == {"messages": 2}  # not counted twice
    assert redis.totals("globex") == {"messages": 5}


@pytest.mark.asyncio
async def test_the_flush_loop_runs_on_its_own_and_close_flushes_the_rest() -> None:
    redis = FakeRedis()
    usage = counter(redis, every_s=0.02)
    usage.start()
    usage.count("acme", KNOWLEDGE_REQUESTS)
    for _ in range(100):
        if redis.totals("acme"):
            break
        await asyncio.sleep(0.01)
    assert redis.totals("acme") == {KNOWLEDGE_REQUESTS: 1}
    usage.count("acme", KNOWLEDGE_REQUESTS)
    await usage.close()
    await usage.close()  # idempotent
    assert redis.totals("acme") == {KNOWLEDGE_REQUESTS: 2}


def test_nothing_and_bad_ids_are_not_counted() -> None:
    usage = counter(FakeRedis())
    usage.count("acme", LLM_PROMPT_TOKENS, 0)  # an LLM that reported no tokens
    assert usage.pending() == {}
    with pytest.raises(InvalidIdError):
        usage.count("acme:{other}")
    with pytest.raises(ValueError, match="every_s"):
        UsageCounter(cast(RedisCluster, FakeRedis()), every_s=0)
