"""Usage counters per tenant, for billing: counted in process, added to Redis in batches.

One hash per tenant, written by gateways and workers alike::

    parley:{tenant:T}:usage     hash    counter name -> count

Counter names (:data:`COUNTERS`): ``messages`` (user messages a gateway accepted),
``knowledge_requests`` (questions answered from the knowledge base: by the knowledge
agent, or from its answer cache by the dialogue step), ``llm_calls``,
``llm_prompt_tokens`` and ``llm_completion_tokens`` (when an LLM generated an answer),
the LLM ones also per model (``llm_prompt_tokens:<model>``, ...), since models are
priced differently. A counter is absent until something counted it.

Why in-process batching: a Redis call per message would put a round trip on the hot
path of every message and answer. :class:`UsageCounter` adds what it counted once a
second, in one cluster pipeline for every tenant and counter (the client sends one
batch per primary). Billing tolerates the trade: what was counted since the last flush
is lost if the process dies. A flush Redis refuses is logged and kept for the next one;
commands it refused one by one are kept alone (the others were applied). A pipeline that
fails outright after Redis applied part of it (the client resends only unanswered
commands within its own retries, so this is rare) has that part counted again. Counters
are never decremented. A Redis failure never fails a message
or an answer: :meth:`UsageCounter.count` touches no I/O.

Counts follow the work done: a knowledge request a worker answers again after a crash
(delivery is at least once) is counted again, as its LLM tokens were spent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping

from redis.asyncio.cluster import RedisCluster

from streams.keys import PREFIX, validate_id
from streams.state import REDIS_UNAVAILABLE

__all__ = [
    "COUNTERS",
    "KNOWLEDGE_REQUESTS",
    "LLM_CALLS",
    "LLM_COMPLETION_TOKENS",
    "LLM_PROMPT_TOKENS",
    "MESSAGES",
    "UsageCounter",
    "add_usage",
    "read_usage",
    "usage_key",
]

logger = logging.getLogger(__name__)

MESSAGES = "messages"
KNOWLEDGE_REQUESTS = "knowledge_requests"
LLM_CALLS = "llm_calls"
LLM_PROMPT_TOKENS = "llm_prompt_tokens"
LLM_COMPLETION_TOKENS = "llm_completion_tokens"
#: Every counter a tenant is billed by (each LLM one also exists per model).
COUNTERS: tuple[str, ...] = (MESSAGES, KNOWLEDGE_REQUESTS, LLM_CALLS, LLM_PROMPT_TOKENS,
                             LLM_COMPLETION_TOKENS)

Counts = Mapping[str, Mapping[str, int]]


def usage_key(tenant_id: str) -> str:
    """The tenant's usage hash (hash-tagged by tenant, like its other keys)."""
    return f"{PREFIX}:{{tenant:{validate_id('tenant id', tenant_id)}}}:usage"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_usage(redis: RedisCluster, tenant_id: str) -> dict[str, int]:
    """The tenant's counters, by name (empty when nothing was counted yet)."""
    raw = await redis.hgetall(usage_key(tenant_id))
    return {_text(k): int(v) for k, v in raw.items()}


async def add_usage(redis: RedisCluster, counts: Counts) -> Counts:
    """Add ``{tenant: {counter: n}}`` to the tenants' hashes in one cluster pipeline.

    Returns what Redis refused command by command (to be added again later); raises
    what :data:`~streams.state.REDIS_UNAVAILABLE` names when the whole pipeline failed.
    """
    queued = [(tenant, name, n) for tenant, counters in counts.items()
              for name, n in counters.items() if n]
    if not queued:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for tenant, name, n in queued:
            pipe.hincrby(usage_key(tenant), name, n)
        replies = await pipe.execute(raise_on_error=False)
    refused: dict[str, Counter[str]] = {}
    for (tenant, name, n), reply in zip(queued, replies, strict=True):
        if isinstance(reply, Exception):
            refused.setdefault(tenant, Counter())[name] += n
    return refused


class UsageCounter:
    """Counts usage per tenant in process and adds it to Redis every ``every_s`` seconds.

    ``count`` is synchronous and does no I/O: call it on any hot path. ``start`` runs the
    flush loop in the running event loop; ``close`` stops it and flushes what is left.
    ``component`` names who counts, in the log.
    """

    def __init__(self, redis: RedisCluster, *, every_s: float = 1.0,
                 component: str = "usage") -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, not {every_s!r}")
        self.redis = redis
        self._every = every_s
        self._component = component
        self._counts: dict[str, Counter[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def count(self, tenant_id: str, name: str = MESSAGES, n: int = 1) -> None:
        """Add ``n`` to the tenant's counter ``name`` (sent with the next flush);
        :class:`~streams.keys.InvalidIdError` for a tenant id no key may hold."""
        if n <= 0:
            return
        counters = self._counts.get(tenant_id)
        if counters is None:  # a new tenant this flush: check its id once, here
            validate_id("tenant id", tenant_id)
            counters = self._counts[tenant_id] = Counter()
        counters[name] += n

    def pending(self) -> dict[str, dict[str, int]]:
        """What is counted and not yet in Redis, by tenant (a copy)."""
        return {tenant: dict(counters) for tenant, counters in self._counts.items()}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._component}.usage")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.flush()

    async def flush(self) -> None:
        """Add what was counted to Redis; what Redis refused is kept for the next flush."""
        counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            refused = await add_usage(self.redis, counts)
        except REDIS_UNAVAILABLE as exc:  # kept for the next flush
            logger.warning("%s.usage.flush_failed tenants=%d error=%r", self._component,
                           len(counts), exc)
            refused = counts
        else:
            if refused:
                logger.warning("%s.usage.flush_partial tenants=%d", self._component,
                               len(refused))
        for tenant_id, counters in refused.items():
            for name, n in counters.items():
                self.count(tenant_id, name, n)

    async def close(self) -> None:
        """Stop the flush loop and flush once more (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
