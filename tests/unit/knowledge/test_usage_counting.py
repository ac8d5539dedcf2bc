"""What the knowledge service bills a tenant for (agents/knowledge/service.py): a question
answered, and an LLM call's tokens, as the endpoint reported them or else estimated."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from agents.knowledge.breaker import CircuitBreaker
from agents.knowledge.generation import estimate_tokens
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.llm import Completion
from agents.knowledge.service import LLM_ESTIMATED_CALLS, llm_usage
from streams.usage import UsageCounter
from tests.unit.knowledge.test_breaker import llm_service


def completion_body(request: httpx.Request, *, usage: dict[str, int] | None,
                    text: str = "Open Settings [reset-password].") -> httpx.Response:
    body: dict[str, Any] = {"model": "m", "choices": [
        {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(200, json=body)


def counted(kb: KnowledgeBase, handler: Any) -> tuple[Any, UsageCounter]:
    service = llm_service(kb, handler, CircuitBreaker(failure_threshold=5, reset_timeout_s=30))
    service.counter = UsageCounter(cast(RedisCluster, None))  # never flushed here
    return service, service.counter


@pytest.mark.asyncio
async def test_reported_tokens_are_billed_to_the_tenant_asking(kb: KnowledgeBase) -> None:
    service, counter = counted(kb, lambda r: completion_body(
        r, usage={"prompt_tokens": 321, "completion_tokens": 9}))
    try:
        answer = await service.answer("default", "How do I reset my password?")
        assert answer.mode == "generative"
        assert counter.pending() == {"default": {
            "knowledge_requests": 1, "llm_calls": 1, "llm_calls:m": 1,
            "llm_prompt_tokens": 321, "llm_prompt_tokens:m": 321,
            "llm_completion_tokens": 9, "llm_completion_tokens:m": 9}}
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_tokens_an_endpoint_does_not_report_are_estimated(kb: KnowledgeBase) -> None:
    prompts: list[list[dict[str, str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        prompts.append(json.loads(request.content)["messages"])
        return completion_body(request, usage=None)

    service, counter = counted(kb, answer)
    try:
        await service.answer("default", "How do I reset my password?")
        counts = counter.pending()["default"]
        expected_prompt = sum(estimate_tokens(m["content"]) for m in prompts[0])
        assert counts["llm_prompt_tokens"] == expected_prompt > 50
        assert counts["llm_completion_tokens"] == estimate_tokens(
            "Open Settings [reset-password].")
        assert counts[LLM_ESTIMATED_CALLS] == 1 and counts["knowledge_requests"] == 1
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_tokens_of_an_ungrounded_answer_are_billed_too(kb: KnowledgeBase) -> None:
    service, counter = counted(kb, lambda r: completion_body(
        r, usage={"prompt_tokens": 200, "completion_tokens": 5}, text="Trust me."))
    try:
        answer = await service.answer("default", "How do I reset my password?")
        assert answer.degraded  # the answer was not used, the tokens were spent
        assert counter.pending()["default"]["llm_prompt_tokens"] == 200
    finally:
        await service.aclose()


@pytest.mark.asyncio
async def test_no_llm_call_bills_no_tokens(kb: KnowledgeBase) -> None:
    service, counter = counted(kb, lambda r: httpx.Response(503))
    try:
        await service.answer("default", "How do I reset my password?")  # falls back
        await service.answer("default", "   ")  # nothing asked: nothing billed
        assert counter.pending() == {"default": {"knowledge_requests": 1}}
    finally:
        await service.aclose()


def test_llm_usage_keeps_reported_zeros() -> None:
    reported = Completion("", "m", prompt_tokens=0, completion_tokens=0)
    assert llm_usage(reported, [{"role": "user", "content": "hello there"}])[
        "llm_prompt_tokens"] == 0
    assert LLM_ESTIMATED_CALLS not in llm_usage(reported, [])
