"""A tenant an operator holds at degradation level 2 or more gets extractive answers: the
LLM is not called (agents/degradation.py ``TenantLevels.llm_allowed``); others still get it."""

from __future__ import annotations

import httpx
import pytest

from agents.knowledge.breaker import CircuitBreaker
from agents.knowledge.knowledge_base import KnowledgeBase
from tests.unit.knowledge.test_breaker import llm_service


@pytest.mark.asyncio
async def test_a_tenant_held_at_a_reduced_level_is_answered_without_the_llm(
        kb: KnowledgeBase) -> None:
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500)

    service = llm_service(kb, answer, CircuitBreaker(failure_threshold=5, reset_timeout_s=30))
    service.llm_allowed = lambda tenant: tenant != "default"
    try:
        held = await service.answer("default", "How do I reset my password?")
        assert held.degraded and held.mode == "extractive"
        assert calls == 0
        service.llm_allowed = lambda tenant: True
        await service.answer("default", "How do I reset my password?")
        assert calls >= 1  # allowed again: the LLM is tried
    finally:
        await service.aclose()
