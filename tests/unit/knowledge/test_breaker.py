from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from purgatory.domain import model as purgatory_model

from agents.knowledge.breaker import BreakerState, CircuitBreaker
from agents.knowledge.errors import CircuitOpenError
from agents.knowledge.knowledge_base import KnowledgeBase
from agents.knowledge.llm import ChatClient
from agents.knowledge.service import KnowledgeService
from agents.knowledge.settings import KnowledgeSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """purgatory's clock (the breaker's states are its), moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr(purgatory_model, "time", SimpleNamespace(time=fake))
    return fake


def test_opens_after_threshold_then_half_opens_and_closes_on_success(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=10)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match=r"next trial in 10\.0s"):
        breaker.before_call()
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the trial call
    with pytest.raises(CircuitOpenError, match="trial call is running"):
        breaker.before_call()  # only one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
    breaker.before_call()


def test_failed_trial_reopens_for_a_full_timeout(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 5.1
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 0.2
    breaker.before_call()


def test_success_resets_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=5)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_timeout_s=0)


# --- what the knowledge service counts against the LLM endpoint ------------------------


def llm_service(kb: KnowledgeBase, handler: Any, breaker: CircuitBreaker) -> KnowledgeService:
    settings = KnowledgeSettings(llm_url="http://llm.test/v1", llm_model_large="m")
    llm = ChatClient(settings.llm_url, transport=httpx.MockTransport(handler))
    return KnowledgeService(kb, settings, llm=llm, breaker=breaker)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_client_error_is_not_the_endpoint_being_down(kb: KnowledgeBase,
                                                             status: int) -> None:
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"error": {"message": "invalid api key"}})

    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=30)
    service = llm_service(kb, refuse, breaker)
    try:
        for _ in range(3):
            answer = await service.answer("default", "How do I reset my password?")
            assert answer.degraded and answer.mode == "extractive"
    finally:
        await service.aclose()
    assert calls == 3 and breaker.state is BreakerState.CLOSED and breaker.failures == 0


@pytest.mark.asyncio
async def test_a_cancelled_call_is_not_a_failure_and_frees_the_trial(
        kb: KnowledgeBase, clock: FakeClock) -> None:
    arrived = asyncio.Event()

    async def never_answer(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5)
    breaker.record_failure()
    clock.now += 5.1  # half-open: the next call is the trial
    service = llm_service(kb, never_answer, breaker)
    try:
        question = asyncio.create_task(service.answer("default", "How do I reset my password?"))
        await asyncio.wait_for(arrived.wait(), 10)
        question.cancel()
        with pytest.raises(asyncio.CancelledError):
            await question
    finally:
        await service.aclose()
    assert breaker.state is BreakerState.HALF_OPEN  # the cancelled trial changed nothing
    breaker.before_call()  # the trial slot is free again
