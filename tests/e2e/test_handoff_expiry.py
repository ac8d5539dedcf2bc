"""A request for a person that nobody takes gets a message AND a ticket (issue 33 §3),
through the whole pipeline: real Kafka, a real Redis Cluster, the reference CRM, gateway
and worker processes, the demo bot with a 3-second handoff timeout.

The user asks for a person; nobody claims the request; the worker's expiry sweep hands
the conversation back to the bot, whose ``pattern_handoff_expired`` opens a ticket in the
CRM with what the user asked for, and tells the user the ticket's number only once the
CRM answered with it. The ticket is read back over the CRM's HTTP API. With the CRM down
(its fault injection), the user is told that no ticket was opened and what to do.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples import DEMO
from infra.crm.settings import CrmSettings
from streams.codecs import codec_for
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline, make_settings, read_topic, start_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

TENANT = "demo"  # the CRM's tenant (PARLEY_CRM_TENANT): its callbacks come back here
TICKET = re.compile(r"T-[0-9A-F]{8}")


@pytest.fixture(scope="module")
def impatient(infra: Any, tmp_path_factory: pytest.TempPathFactory, demo_model: Path,
              demo_index: Path) -> Iterator[Pipeline]:
    """A gateway, a worker and the CRM serving the demo bot with a 3-second handoff
    timeout (``timeout_minutes: 0.05``), shared by this module's tests."""
    root = tmp_path_factory.mktemp("expiry")
    bot = root / "bot"
    shutil.copytree(DEMO.folder, bot)
    with (bot / "bot.yml").open("a", encoding="utf-8") as f:
        f.write("handoff:\n  timeout_minutes: 0.05\n")
    settings = make_settings(infra, root / "data", demo_model).replace(bot_dir=str(bot))
    running = start_pipeline(settings, demo_index, gateways=1, workers=1)
    yield running
    running.stack.stop()


def someone() -> str:
    return f"expiry-{uuid.uuid4().hex[:8]}"


async def crm(pipeline: Pipeline, method: str, path: str, *, admin: bool = False,
              body: dict[str, Any] | None = None) -> httpx.Response:
    """A call to the pipeline's CRM over HTTP, as Parley's client or as its operator."""
    settings = CrmSettings()
    who = ("crm-admin", settings.admin_secret) if admin else (settings.client_id,
                                                                settings.client_secret)
    async with httpx.AsyncClient(base_url=pipeline.stack.crm_env["CRM_URL"],
                                 timeout=15) as client:
        token = (await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                   auth=who)).json()["access_token"]
        return await client.request(method, path, json=body,
                                    headers={"Authorization": f"Bearer {token}"})


async def tickets_in_crm(pipeline: Pipeline) -> int:
    counted = await crm(pipeline, "GET", "/admin/counts", admin=True)
    counted.raise_for_status()
    return int(counted.json()["tickets"])


async def turn(chat: ChatClient, text: str) -> dict[str, Any]:
    await chat.send(text)
    await chat.next("ack", 30)
    return await chat.next("reply", 30)


async def ask_for_a_person(chat: ChatClient) -> None:
    """An order looked up, then a person asked for: both in the request's transcript."""
    looked_up = await turn(chat, "where is my order 12345")
    assert looked_up["response"] == "utter_order_status", looked_up
    handed = await turn(chat, "I want to talk to a human")
    assert handed["response"] == "utter_handoff", handed


async def test_nobody_takes_the_request_so_a_ticket_is_opened_and_named(
        impatient: Pipeline) -> None:
    user = someone()
    before = await tickets_in_crm(impatient)
    async with ChatClient(impatient.url, tenant=TENANT, user=user) as chat:
        await ask_for_a_person(chat)
        # nobody claims it: within the timeout (3 s) and a sweep (5 s) the ticket is opened
        told = await chat.next("reply", 40)
        assert told["response"] == "utter_handoff_expired_ticket", told
        found = TICKET.search(told["text"])
        assert found is not None, told
        assert "nobody from our team was free" in told["text"]

        ticket = await crm(impatient, "GET", f"/tickets/{found.group()}")
        assert ticket.status_code == 200, ticket.text
        record = ticket.json()
        assert record["customer_id"] == user and record["status"] == "open"
        assert record["email"] in told["text"]  # the address the CRM has for the customer
        description = record["description"]
        assert "pattern_human_handoff (intent: human_handoff)" in description
        assert '"where is my order 12345"' in description
        assert '"I want to talk to a human"' in description
        assert await tickets_in_crm(impatient) == before + 1  # one ticket, not two

        # the bot answers again
        back = await turn(chat, "hello")
        assert back["response"] not in ("handoff_relayed", "utter_handoff_waiting",
                                        "utter_busy"), back

        # "we'll get back to you": when the team resolves it, the CRM calls back and the
        # user is told in the same conversation
        resolved = await crm(impatient, "POST", f"/admin/tickets/{found.group()}/resolve",
                             admin=True, body={"resolution": "we called you back"})
        assert resolved.status_code == 202 and resolved.json()["callback"] == "scheduled"
        outcome = await chat.next("reply", 30)
        assert outcome["response"] == "utter_callback_open_handoff_ticket_resolved", outcome
        assert found.group() in outcome["text"] and "we called you back" in outcome["text"]

    events = [codec_for("handoff_event").decode(m.value())
              for m in read_topic(impatient.settings, "handoff.events")
              if m.key() == chat.conversation.encode()]
    assert [e["type"] for e in events] == ["requested", "expired"]
    assert events[1]["text"] == description  # the expiry's summary is the ticket's text


async def test_with_the_crm_down_the_user_is_told_no_ticket_was_opened(
        impatient: Pipeline) -> None:
    before = await tickets_in_crm(impatient)
    async with ChatClient(impatient.url, tenant=TENANT, user=someone()) as chat:
        await ask_for_a_person(chat)
        down = await crm(impatient, "PUT", "/admin/faults", admin=True, body={"down": True})
        down.raise_for_status()
        try:
            told = await chat.next("reply", 40)
        finally:
            cleared = await crm(impatient, "DELETE", "/admin/faults", admin=True)
            cleared.raise_for_status()
        assert told["response"] == "utter_handoff_expired_no_ticket", told
        assert "couldn't open a ticket" in told["text"]
        assert TICKET.search(told["text"]) is None and "opened ticket" not in told["text"]
        assert await tickets_in_crm(impatient) == before

        back = await turn(chat, "hello")
        assert back["response"] not in ("handoff_relayed", "utter_handoff_waiting",
                                        "utter_busy"), back
        await asyncio.sleep(2)  # nothing else comes: no late claim of a ticket
        assert chat.pending("reply") == 0, await chat.next("reply", 1)
