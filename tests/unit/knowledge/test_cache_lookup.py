"""A batch's exact-answer lookup (AnswerCache.get_exact_many): one call per tenant, and a
tenant whose call fails is a miss without failing the others. The real cluster is in
tests/integration/test_knowledge.py; here a stand-in client answers per tenant."""

from __future__ import annotations

from typing import Any, cast

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.knowledge.answer import Answer
from agents.knowledge.cache import AnswerCache, KbKeys, exact_digest


class TenantRedis:
    """Answers the lookup script from a dict; a tenant named in ``down`` fails."""

    def __init__(self, stored: dict[str, str], down: set[str], generation: int = 3) -> None:
        self.stored, self.down, self.generation = stored, down, generation
        self.calls: list[str] = []

    async def execute_command(self, *args: Any) -> list[Any]:
        _, _, _, generation_key, tag, *digests = args
        self.calls.append(generation_key)
        if any(generation_key == KbKeys(t).generation for t in self.down):
            raise RedisConnectionError("node down")
        return [self.generation,
                *(self.stored.get(f"{tag}:exact:{self.generation}:{d}") for d in digests)]


@pytest.mark.asyncio
async def test_a_tenant_whose_lookup_fails_is_a_miss_and_the_others_are_answered() -> None:
    answer = Answer("Reset it from the login page.", sources=["reset"])
    stored = {KbKeys("t1").exact(3, "How do I reset my password?", ""): answer.to_json()}
    redis = TenantRedis(stored, down={"t2"})
    cache = AnswerCache(cast(RedisCluster, redis))

    found = await cache.get_exact_many([
        ("t1", "how do I reset my password", None),
        ("t2", "How long does a refund take?", None),
        ("t1", "Where is my order?", None),
    ])  # fmt: skip

    assert sorted(redis.calls) == [KbKeys("t1").generation, KbKeys("t2").generation]
    (gen1, hit), (gen2, failed), (gen3, miss) = found
    assert (gen1, gen2, gen3) == (3, -1, 3)
    assert hit is not None and hit.cached and hit.text == answer.text
    assert failed is None and miss is None


def test_an_exact_key_is_the_tag_the_generation_and_the_question_digest() -> None:
    keys = KbKeys("t1")
    digest = exact_digest("How do I reset my password?", "")
    assert keys.exact(7, "  how do I RESET my password ", "") == f"{keys.tag}:exact:7:{digest}"
