"""The knowledge service: question in, cited answer out.

:meth:`KnowledgeService.answer` runs, for one tenant's question:

1. the exact-match cache, then (after embedding the question once) the
   semantic cache — both keyed by the tenant's KB generation;
2. hybrid retrieval with reranking; below ``min_confidence`` the answer is a
   refusal, never a guess;
3. with an LLM configured, a grounded generative answer (small or large model
   by question), validated for citations, behind a circuit breaker; any LLM
   failure, or an open circuit, gives an extractive answer labelled as an
   excerpt (``degraded=True``, not cached). Without an LLM, the extractive
   answer is the answer.

Billing (streams/usage.py): every question answered here counts one
``knowledge_requests`` for its tenant — from the cache, by retrieval, or a refusal
after retrieval (the work was done); an empty question does not count. An LLM call that
returned counts ``llm_calls``, ``llm_prompt_tokens`` and ``llm_completion_tokens``
(also per model), whether or not its answer passed validation: the tokens were spent.
The counts are the endpoint's own (``usage`` in its reply). An endpoint that reports
none gets :func:`~agents.knowledge.generation.estimate_tokens` of the prompt messages
and the completion — the estimate that sizes the context, since the serving model's
tokenizer is not shipped here (the embedder's tokenizer is another model's) — and
``llm_estimated_calls`` says how many calls were estimated. Counting is in process and
flushed in batches, so it adds no Redis call to an answer and a Redis failure cannot
fail one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from redis.asyncio.cluster import RedisCluster

from agents.knowledge.answer import Answer, extractive_answer, refusal
from agents.knowledge.breaker import CircuitBreaker
from agents.knowledge.cache import AnswerCache, UsageRecorder
from agents.knowledge.errors import CircuitOpenError, LLMClientError, LLMError, LLMMalformedOutput
from agents.knowledge.generation import (
    build_context,
    build_messages,
    choose_model,
    estimate_tokens,
    validate_output,
)
from agents.knowledge.index import Hit
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.llm import ChatClient, Completion
from agents.knowledge.settings import KnowledgeSettings
from streams.keys import validate_id
from streams.usage import (
    KNOWLEDGE_REQUESTS,
    LLM_CALLS,
    LLM_COMPLETION_TOKENS,
    LLM_PROMPT_TOKENS,
    UsageCounter,
)

__all__ = ["LLM_ESTIMATED_CALLS", "KnowledgeService", "llm_usage"]

logger = logging.getLogger(__name__)

Filters = Mapping[str, Any]

#: Counted when the endpoint reported no token usage and the tokens were estimated.
LLM_ESTIMATED_CALLS = "llm_estimated_calls"


def llm_usage(completion: Completion, messages: Sequence[Mapping[str, str]]
              ) -> dict[str, int]:
    """What one LLM call adds to its tenant's usage counters (see the module docstring)."""
    prompt, output = completion.prompt_tokens, completion.completion_tokens
    estimated = not completion.usage_reported
    if estimated:
        prompt = sum(estimate_tokens(m.get("content", "")) for m in messages)
        output = estimate_tokens(completion.text) if completion.text else 0
    model = completion.model
    counts = {LLM_CALLS: 1, LLM_PROMPT_TOKENS: prompt, LLM_COMPLETION_TOKENS: output,
              f"{LLM_CALLS}:{model}": 1, f"{LLM_PROMPT_TOKENS}:{model}": prompt,
              f"{LLM_COMPLETION_TOKENS}:{model}": output}
    if estimated:
        counts[LLM_ESTIMATED_CALLS] = 1
    return counts


class KnowledgeService:
    def __init__(
        self,
        kb: KnowledgeBase,
        settings: KnowledgeSettings | None = None,
        *,
        cache: AnswerCache | None = None,
        usage: UsageRecorder | None = None,
        llm: ChatClient | None = None,
        breaker: CircuitBreaker | None = None,
        counter: UsageCounter | None = None,
    ) -> None:
        self.kb = kb
        self.settings = settings or KnowledgeSettings()
        self.cache = cache
        self.usage = usage
        #: The tenants' billing counters (None: nothing is counted, e.g. offline tools).
        self.counter = counter
        self.llm = llm
        #: Whether a tenant's answers may use the LLM now (None: always): an operator who
        #: forced its degradation level to 2 or more says no (agents/degradation.py).
        self.llm_allowed: Callable[[str], bool] | None = None
        s = self.settings
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=s.breaker_failures, reset_timeout_s=s.breaker_reset_s
        )

    @classmethod
    def from_settings(cls, kb: KnowledgeBase, settings: KnowledgeSettings,
                      redis: RedisCluster | None = None, *,
                      conversation_ttl_s: int = 30 * 24 * 3600,
                      counter: UsageCounter | None = None) -> KnowledgeService:
        """Wire caches (when ``redis`` is given and caching is on) and the LLM (when set);
        a conversation's LLM usage is kept ``conversation_ttl_s``, as its session is;
        ``counter``: the tenants' billing counters (the worker's, ``WorkerContext.usage``)."""
        cache = usage = None
        if redis is not None:
            usage = UsageRecorder(redis, conversation_ttl_s)
            if settings.cache_enabled:
                cache = AnswerCache(redis, ttl_s=settings.cache_ttl_s,
                                    semantic_threshold=settings.semantic_cache_threshold,
                                    semantic_entries=settings.semantic_cache_entries)
        llm = None
        if settings.llm_enabled:
            llm = ChatClient(settings.llm_url, api_key=settings.llm_api_key,
                             timeout_s=settings.llm_timeout_s,
                             connect_timeout_s=settings.llm_connect_timeout_s)
        return cls(kb, settings, cache=cache, usage=usage, llm=llm, counter=counter)

    async def aclose(self) -> None:
        if self.llm is not None:
            await self.llm.aclose()

    async def documents_changed(self, tenant: str) -> None:
        """Retire cached answers of ``tenant`` (called after a document change is applied)."""
        if self.cache is not None:
            await self.cache.bump(tenant)

    async def answer(self, tenant_id: str, question: str, *, conversation_id: str = "",
                     filters: dict[str, Any] | None = None) -> Answer:
        validate_id("tenant id", tenant_id)
        if conversation_id:
            validate_id("conversation id", conversation_id)
        if not question.strip():
            return refusal()
        answer = await self._answer(tenant_id, question, conversation_id, filters)
        self._count(tenant_id, {KNOWLEDGE_REQUESTS: 1})
        return answer

    def _count(self, tenant: str, counts: Mapping[str, int]) -> None:
        if self.counter is not None:
            for name, n in counts.items():
                self.counter.count(tenant, name, n)

    async def _answer(self, tenant_id: str, question: str, conversation_id: str,
                      filters: dict[str, Any] | None) -> Answer:
        generation = -1
        if self.cache is not None:
            generation, hit = await self.cache.get_exact(tenant_id, question, filters)
            if hit is not None:
                return hit
        vector: np.ndarray = await asyncio.to_thread(self.kb.embed_query, question)
        if self.cache is not None:
            similar = await self.cache.get_semantic(tenant_id, generation, vector, filters)
            if similar is not None:
                return similar
        hits: list[Hit] = await asyncio.to_thread(
            self.kb.search, tenant_id, question, k=self.settings.top_k, filters=filters,
            query_vector=vector,
        )
        answer = await self._compose(tenant_id, question, conversation_id, hits)
        if self.cache is not None and not answer.degraded:
            await self.cache.put(tenant_id, generation, question, filters, vector, answer)
        return answer

    async def _compose(self, tenant: str, question: str, conversation_id: str,
                       hits: list[Hit]) -> Answer:
        confidence = hits[0].score if hits else 0.0
        if not hits or confidence < self.settings.min_confidence:
            logger.info("kb.answer.refused tenant=%s confidence=%.3f", tenant, confidence)
            return refusal(confidence)
        if self.llm is None:
            return extractive_answer(question, hits)
        if self.llm_allowed is not None and not self.llm_allowed(tenant):
            logger.info("kb.llm.skipped tenant=%s reason=degradation level", tenant)
            return extractive_answer(question, hits, degraded=True)
        try:
            return await self._generate(tenant, question, conversation_id, hits)
        except CircuitOpenError as exc:
            logger.info("kb.llm.skipped tenant=%s reason=%s", tenant, exc)
        except LLMError as exc:
            logger.warning("kb.llm.failed tenant=%s error=%s", tenant, exc)
        return extractive_answer(question, hits, degraded=True)

    async def _generate(self, tenant: str, question: str, conversation_id: str,
                        hits: list[Hit]) -> Answer:
        assert self.llm is not None
        s = self.settings
        self.breaker.before_call()
        model = choose_model(question, small=s.llm_model_small, large=s.llm_model_large,
                             small_max_words=s.llm_small_max_words)
        context = build_context(hits, s.llm_context_tokens)
        messages = build_messages(question, context, tenant=tenant)
        try:
            completion = await self.llm.complete(model, messages,
                                                 max_tokens=s.llm_max_output_tokens)
        except asyncio.CancelledError:
            self.breaker.record_cancelled()  # says nothing about the endpoint
            raise
        except LLMClientError:
            self.breaker.record_success()  # HTTP 4xx: the endpoint is up, the request is wrong
            raise
        except Exception:
            self.breaker.record_failure()  # timeouts, connection errors, 5xx/429, garbage bodies
            raise
        self.breaker.record_success()
        spent = llm_usage(completion, messages)
        self._count(tenant, spent)
        if self.usage is not None:
            await self.usage.record(tenant, conversation_id, completion.model,
                                    spent[LLM_PROMPT_TOKENS], spent[LLM_COMPLETION_TOKENS])
        try:
            validated = validate_output(completion.text, context.doc_ids)
        except LLMMalformedOutput as exc:
            # The endpoint works; this answer is not grounded. Fall back for this one only.
            raise LLMMalformedOutput(exc.detail, model=model) from exc
        if validated.refusal:
            return replace(refusal(hits[0].score), model=model)
        return Answer(text=validated.text, sources=list(validated.sources), mode="generative",
                      confidence=round(hits[0].score, 4), model=model)
