"""Conversations that hold a task, through the whole pipeline (gateway → Kafka → worker →
Redis → gateway), with the demo bot (examples/demo/).

The dialogue state record lives in Redis Cluster, written with the outbox in one atomic
call: a worker killed in the middle of a form leaves the form where it was, and the
next worker asks nothing twice.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from infra.crm.settings import CrmSettings
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline
from tests.e2e.test_worker_crash import own_pipeline  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]


async def _turn(chat: ChatClient, text: str) -> dict[str, Any]:
    await chat.send(text)
    await chat.next("ack", 30)
    return await chat.next("reply", 30)


async def test_a_form_resumes_at_the_same_question_after_a_worker_is_killed(
        own_pipeline: Pipeline) -> None:  # noqa: F811
    stack = own_pipeline.stack
    async with ChatClient(own_pipeline.url) as chat:
        asked = await _turn(chat, "where is my order?")
        assert asked["response"] == "utter_ask_order_id", asked

        worker = next(c for c in stack.children if c.name.startswith("worker"))
        worker.kill()  # SIGKILL: nothing is flushed, nothing is said goodbye
        restarted = stack.start_worker(name="worker-restarted")
        stack.wait_ready([restarted], 90)

        answered = await _turn(chat, "it's 12345")
    assert "12345" in answered["text"], answered
    assert answered["response"] == "utter_order_status", answered  # looked up in the CRM


async def test_a_card_is_blocked_in_the_crm_only_after_confirmation(
        own_pipeline: Pipeline) -> None:  # noqa: F811
    """"I lost my card" used to answer "I've frozen your card" with nothing frozen; now the
    CRM blocks it after a yes, and the reply is built from the CRM's answer."""
    async with ChatClient(own_pipeline.url) as chat:
        first = await _turn(chat, "I lost my card")
        assert "frozen" not in first["text"].lower() and "blocked" not in first["text"].lower()
        confirmed = await _turn(chat, "yes")
    assert confirmed["response"] == "utter_card_blocked", confirmed
    assert "4821, 9034" in confirmed["text"]  # the last digits of the CRM's demo cards


async def _crm_faults(pipeline: Pipeline, plan: dict[str, Any] | None) -> None:
    """Set (``plan``) or clear (None) the faults of the pipeline's CRM, as an operator."""
    url = pipeline.stack.crm_env["CRM_URL"]
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        token = (await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                   auth=("crm-admin", CrmSettings().admin_secret))
                 ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        response = await (client.put("/admin/faults", json=plan, headers=headers) if plan
                          else client.delete("/admin/faults", headers=headers))
        response.raise_for_status()


async def test_a_crm_down_or_hanging_gets_a_clear_reply_within_a_second(
        own_pipeline: Pipeline) -> None:  # noqa: F811
    async with ChatClient(own_pipeline.url) as chat:
        warm = await _turn(chat, "where is my order 12345")  # the token, the connections
        assert warm["response"] == "utter_order_status", warm
        for plan in ({"down": True}, {"hang": True}):
            await _crm_faults(own_pipeline, plan)
            try:
                began = time.monotonic()
                reply = await _turn(chat, "where is my order 12345")
                took = time.monotonic() - began
            finally:
                await _crm_faults(own_pipeline, None)
            assert reply["response"] == "utter_crm_unavailable", (plan, reply)
            assert "can't reach your account" in reply["text"]
            assert took < 1.0, f"{plan}: the reply took {took:.2f} s"
