"""Answer caches and per-conversation LLM usage counters in Redis Cluster.

Every key of one tenant's knowledge base shares the hash tag ``{kb:TENANT}``
(one slot, so one tenant's cache operations can be pipelined together, or run
in one Lua call)::

    parley:{kb:t1}:gen                  string  KB generation: bumped on every document change
    parley:{kb:t1}:exact:G:<sha>        string  answer JSON for one normalised question (TTL)
    parley:{kb:t1}:semantic:G           list    recent (question vector, filters, answer) (TTL)
    parley:{t1:c42}:llm_usage           hash    one conversation's LLM prompt/completion tokens
                                                and calls, per model too (its slot and TTL)

A tenant's totals, for billing, are in its usage hash (``parley:{tenant:t1}:usage``,
streams/usage.py), counted in batches by the worker.

Invalidation: cache keys embed the generation ``G``. Every knowledge worker
bumps it after it applies a change from ``kb.documents``, so entries written
before the change are never read again and expire with their TTL. A worker
that had not yet applied a change may cache an answer under the new
generation; its own bump, right after it applies the change, retires that
entry too.

Redis errors never fail an answer: a failed lookup is a miss, a failed store is
skipped, each with a warning.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from redis.asyncio.cluster import RedisCluster

from agents.knowledge.answer import Answer
from streams.keys import PREFIX, ConversationKeys, validate_id
from streams.state import REDIS_UNAVAILABLE

__all__ = ["AnswerCache", "KbKeys", "UsageRecorder", "exact_digest", "filters_key",
           "normalise_question"]

logger = logging.getLogger(__name__)


def normalise_question(question: str) -> str:
    """Case, spacing and trailing punctuation do not make a new question."""
    return re.sub(r"\s+", " ", question.lower()).strip(" ?!.,;:")


def filters_key(filters: Mapping[str, Any] | None) -> str:
    if not filters:
        return ""
    canon = {k: (v if isinstance(v, str) else sorted(v)) for k, v in sorted(filters.items())}
    return json.dumps(canon, sort_keys=True, ensure_ascii=False)


class KbKeys:
    def __init__(self, tenant: str) -> None:
        self.tenant = validate_id("tenant id", tenant)
        self.tag = f"{PREFIX}:{{kb:{tenant}}}"

    @property
    def generation(self) -> str:
        return f"{self.tag}:gen"

    def exact(self, generation: int, question: str, filters: str) -> str:
        return f"{self.tag}:exact:{generation}:{exact_digest(question, filters)}"

    def semantic(self, generation: int) -> str:
        return f"{self.tag}:semantic:{generation}"


def exact_digest(question: str, filters: str) -> str:
    """What names a question's exact-answer key, whatever its generation."""
    return hashlib.sha256(f"{normalise_question(question)}\x00{filters}".encode()).hexdigest()[:32]


# KEYS[1]: a tenant's generation key. ARGV[1]: the tenant's key tag, then one question
# digest (exact_digest) per question. Returns the generation, then each question's cached
# answer under it (nil: none); every key shares the tenant's hash tag, so its slot.
_GET_EXACT = """#!lua
local generation = tonumber(redis.call('GET', KEYS[1])) or 0
local found = {generation}
for i = 2, #ARGV do
  found[i] = redis.call('GET', ARGV[1] .. ':exact:' .. generation .. ':' .. ARGV[i])
end
return found
"""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class AnswerCache:
    """Exact and semantic answer caches for every tenant."""

    def __init__(self, redis: RedisCluster, *, ttl_s: int = 3600,
                 semantic_threshold: float = 0.95, semantic_entries: int = 128) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.semantic_threshold = semantic_threshold
        self.semantic_entries = semantic_entries

    async def bump(self, tenant: str) -> int:
        """Retire every cached answer of ``tenant`` (a document changed)."""
        try:
            return int(await self.redis.incr(KbKeys(tenant).generation))
        except REDIS_UNAVAILABLE as exc:
            # Nothing else to do: entries still expire with their TTL.
            logger.warning("kb.cache.bump_failed tenant=%s error=%r", tenant, exc)
            return -1

    async def get_exact(self, tenant: str, question: str,
                        filters: Mapping[str, Any] | None) -> tuple[int, Answer | None]:
        """The current generation and the cached answer for this exact question, if any."""
        return (await self.get_exact_many([(tenant, question, filters)]))[0]

    async def get_exact_many(
        self, questions: Sequence[tuple[str, str, Mapping[str, Any] | None]]
    ) -> list[tuple[int, Answer | None]]:
        """``get_exact`` for ``(tenant, question, filters)`` triples: one Lua call per
        tenant, which reads the generation and the answers under it. Generation -1 means
        Redis failed for that tenant."""
        by_tenant: dict[str, list[int]] = {}
        for index, (tenant, _, _) in enumerate(questions):
            by_tenant.setdefault(tenant, []).append(index)
        replies = await asyncio.gather(*(
            self._get_exact(tenant, [questions[i] for i in indices])
            for tenant, indices in by_tenant.items()
        ), return_exceptions=True)  # fmt: skip
        found: list[tuple[int, Answer | None]] = [(-1, None)] * len(questions)
        for (tenant, indices), reply in zip(by_tenant.items(), replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, REDIS_UNAVAILABLE):
                    raise reply
                # A cache that cannot answer is a miss; retrieval still works.
                logger.warning("kb.cache.lookup_failed tenant=%s error=%r", tenant, reply)
                continue
            generation, *answers = reply
            for index, raw in zip(indices, answers, strict=True):
                found[index] = (int(generation), None if raw is None else replace(
                    Answer.from_json(_text(raw) or ""), cached=True))
        return found

    async def _get_exact(self, tenant: str,
                         questions: Sequence[tuple[str, str, Mapping[str, Any] | None]]
                         ) -> list[Any]:
        keys = KbKeys(tenant)
        digests = [exact_digest(question, filters_key(filters))
                   for _, question, filters in questions]
        reply: list[Any] = await self.redis.execute_command(
            "EVAL", _GET_EXACT, 1, keys.generation, keys.tag, *digests)
        return reply

    async def get_semantic(self, tenant: str, generation: int, vector: np.ndarray,
                           filters: Mapping[str, Any] | None) -> Answer | None:
        """A cached answer to a near-duplicate question (cosine ≥ threshold)."""
        if generation < 0 or self.semantic_threshold > 1.0:
            return None
        try:
            entries = await self.redis.lrange(KbKeys(tenant).semantic(generation), 0,
                                              self.semantic_entries - 1)
        except REDIS_UNAVAILABLE as exc:
            logger.warning("kb.cache.lookup_failed tenant=%s error=%r", tenant, exc)
            return None
        if not entries:
            return None
        wanted = filters_key(filters)
        best, best_answer = -1.0, None
        for item in entries:
            try:
                entry = json.loads(_text(item) or "")
                if entry["f"] != wanted:
                    continue
                cached = np.frombuffer(base64.b64decode(entry["v"]), dtype=np.float16)
                score = float(cached.astype(np.float32) @ vector)
            except (ValueError, KeyError, TypeError):
                continue  # an entry from another version: ignore it
            if score > best:
                best, best_answer = score, entry["a"]
        if best_answer is None or best < self.semantic_threshold:
            return None
        return replace(Answer.from_json(best_answer), cached=True)

    async def put(self, tenant: str, generation: int, question: str,
                  filters: Mapping[str, Any] | None, vector: np.ndarray | None,
                  answer: Answer) -> None:
        if generation < 0:
            return
        keys = KbKeys(tenant)
        fkey = filters_key(filters)
        payload = replace(answer, cached=False).to_json()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.exact(generation, question, fkey), payload, ex=self.ttl_s)
                if vector is not None and self.semantic_threshold <= 1.0:
                    entry = json.dumps({
                        "v": base64.b64encode(vector.astype(np.float16).tobytes()).decode(),
                        "f": fkey, "a": payload,
                    })
                    sem = keys.semantic(generation)
                    pipe.lpush(sem, entry)
                    pipe.ltrim(sem, 0, self.semantic_entries - 1)
                    pipe.expire(sem, self.ttl_s)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            # Not cached this time; the answer itself is unaffected.
            logger.warning("kb.cache.store_failed tenant=%s error=%r", tenant, exc)


class UsageRecorder:
    """LLM token counters per conversation (a Redis hash kept as long as the
    conversation's other state: ``conversation_ttl_s``, ``PARLEY_SESSION_TTL_S``).

    The tenant's totals are not here: the service counts them into the tenant's usage
    hash through :class:`streams.usage.UsageCounter`, in batches.
    """

    def __init__(self, redis: RedisCluster, conversation_ttl_s: int = 30 * 24 * 3600) -> None:
        self.redis = redis
        self.conversation_ttl_s = conversation_ttl_s

    async def record(self, tenant: str, conversation_id: str, model: str,
                     prompt_tokens: int, completion_tokens: int) -> None:
        if not conversation_id:
            return
        key = ConversationKeys(tenant, conversation_id).llm_usage
        counts: Sequence[tuple[str, int]] = (
            ("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens),
            ("calls", 1), (f"prompt_tokens:{model}", prompt_tokens),
            (f"completion_tokens:{model}", completion_tokens), (f"calls:{model}", 1),
        )
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, value in counts:
                    pipe.hincrby(key, name, value)
                pipe.expire(key, self.conversation_ttl_s)
                await pipe.execute()
        except REDIS_UNAVAILABLE as exc:
            # Usage is bookkeeping: losing one increment must not lose the answer.
            logger.warning("kb.usage.record_failed tenant=%s error=%r", tenant, exc)

    async def totals(self, tenant: str, conversation_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(ConversationKeys(tenant, conversation_id).llm_usage)
        return {_text(k) or "": int(_text(v) or 0) for k, v in raw.items()}
