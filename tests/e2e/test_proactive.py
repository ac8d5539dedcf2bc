"""Messages the user did not ask for, through the whole pipeline (real Kafka, a real Redis
Cluster, gateway, worker and CRM processes).

Asynchronous with callback: a ticket opened in the CRM is confirmed at once; the CRM
resolves it later and calls the gateway back, signed; the user, who meanwhile left and
reconnected to the OTHER gateway, gets the outcome in their conversation. A forged,
tampered or replayed callback is refused and says nothing.

Event-driven: the CRM ships an order and publishes ``order_shipped`` on
``business.events``; it reaches its customer's open conversation and nobody else's (not
another customer of the tenant, not the same user id in another tenant); a customer with
no open conversation gets it at their next visit.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from infra.crm.settings import CrmSettings
from streams.proactive import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackClaims,
    CallbackSettings,
    callback_url,
    sign_body,
)
from tests.e2e.chat_client import ChatClient
from tests.e2e.conftest import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(300)]

TENANT = "demo"  # the CRM's tenant (PARLEY_CRM_TENANT)
OTHER_TENANT = "e2e"


def someone(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def turn(chat: ChatClient, text: str) -> dict[str, Any]:
    await chat.send(text)
    await chat.next("ack", 30)
    return await chat.next("reply", 30)


async def crm_admin(pipeline: Pipeline, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST to an admin endpoint of the pipeline's CRM, as its operator."""
    async with httpx.AsyncClient(base_url=pipeline.stack.crm_env["CRM_URL"],
                                 timeout=15) as client:
        token = (await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                   auth=("crm-admin", CrmSettings().admin_secret))
                 ).json()["access_token"]
        return await client.post(path, json=body,
                                 headers={"Authorization": f"Bearer {token}"})


async def nothing_more(chat: ChatClient, within: float = 4) -> None:
    await asyncio.sleep(within)
    assert chat.pending("reply") == 0, await chat.next("reply", 1)


def api_url(pipeline: Pipeline) -> str:
    return pipeline.stack.callback_env["PARLEY_CALLBACK_BASE_URL"]


async def test_a_resolved_ticket_reaches_the_user_on_another_gateway(
        pipeline: Pipeline) -> None:
    user = someone("ticket")
    first, other = pipeline.gateway_urls[0], pipeline.gateway_urls[1]
    async with ChatClient(first, tenant=TENANT, user=user) as chat:
        assert (await turn(chat, "I want to make a complaint"))["response"] == \
            "utter_ask_issue_description"
        assert (await turn(chat, "the app crashes when I open my statements"))["response"] \
            == "utter_ask_email"
        began = time.monotonic()
        opened = await turn(chat, "anna@example.com")
        told_in = time.monotonic() - began
        conversation, seen = chat.conversation, opened["seq"]
    assert opened["response"] == "utter_ticket_opened", opened
    assert "let you know here" in opened["text"]
    assert told_in < 5, "the user is told at once, not when the ticket is resolved"
    ticket = re.search(r"T-[0-9A-F]{8}", opened["text"])
    assert ticket is not None, opened
    # Offline now: the CRM resolves the ticket and calls back while nobody is connected.
    resolved = await crm_admin(pipeline, f"/admin/tickets/{ticket.group()}/resolve",
                               {"resolution": "fixed in version 2.1", "delay_s": 1})
    assert resolved.status_code == 202 and resolved.json()["callback"] == "scheduled"
    await asyncio.sleep(4)
    async with ChatClient(other, tenant=TENANT, user=user, conversation=conversation,
                          last_seq=seen) as again:
        outcome = await again.next("reply", 30)
    assert outcome["response"] == "utter_callback_open_ticket_resolved", outcome
    assert ticket.group() in outcome["text"] and "fixed in version 2.1" in outcome["text"]
    assert outcome["seq"] == seen + 1


def signed(body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    ts = str(int(time.time()))
    return raw, {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign_body(secret, ts, raw),
                 "Content-Type": "application/json"}


async def test_a_forged_tampered_or_replayed_callback_is_refused_and_says_nothing(
        pipeline: Pipeline) -> None:
    user = someone("cb")
    secret = CrmSettings().callback_secret  # what the stack gave the gateways for "crm"
    async with ChatClient(pipeline.url, tenant=TENANT, user=user) as chat:
        await turn(chat, "hello")
        claims = CallbackClaims(TENANT, chat.conversation, user, "web", "open_ticket", "crm")
        url = callback_url(CallbackSettings.from_env({}), claims).replace(
            "http://127.0.0.1:8081", api_url(pipeline))
        body = {"callback_id": someone("cb"), "status": "resolved",
                "data": {"ticket_id": "T-0000TEST", "resolution": "done"}}
        async with httpx.AsyncClient(timeout=10) as http:
            forged = await http.post(url, content=signed(body, "guessed-secret")[0],
                                     headers=signed(body, "guessed-secret")[1])
            assert forged.status_code == 401 and "signature" in forged.text
            head, _payload, sig = url.rsplit("/", 1)[1].split(".")
            other = callback_url(CallbackSettings.from_env({}), CallbackClaims(
                TENANT, "c-someone-else", "u-else", "web", "open_ticket", "crm"))
            moved = f"{url.rsplit('/', 1)[0]}/{head}.{other.rsplit('/', 1)[1].split('.')[1]}" \
                    f".{sig}"
            raw, headers = signed(body, secret)
            tampered = await http.post(moved, content=raw, headers=headers)
            assert tampered.status_code == 403, tampered.text
            raw, headers = signed(body, secret)
            taken = await http.post(url, content=raw, headers=headers)
            assert taken.status_code == 202, taken.text
            replayed = await http.post(url, content=raw, headers=headers)
            assert replayed.status_code == 401 and "replayed" in replayed.text
        told = await chat.next("reply", 30)
        assert told["response"] == "utter_callback_open_ticket_resolved", told
        await nothing_more(chat)


async def test_an_order_shipped_reaches_its_customer_and_nobody_else(
        pipeline: Pipeline) -> None:
    anna, bob = someone("anna"), someone("bob")
    async with ChatClient(pipeline.gateway_urls[0], tenant=TENANT, user=anna) as a, \
            ChatClient(pipeline.gateway_urls[1], tenant=TENANT, user=bob) as b, \
            ChatClient(pipeline.gateway_urls[1], tenant=OTHER_TENANT, user=anna) as elsewhere:
        for chat in (a, b, elsewhere):
            await turn(chat, "hello")  # an open conversation
        order = str(uuid.uuid4().int % 10**8)
        shipped = await crm_admin(pipeline, f"/admin/orders/{order}/ship",
                                  {"customer_id": anna, "carrier": "DHL"})
        assert shipped.status_code == 200, shipped.text
        told = await a.next("reply", 30)
        assert told["response"] == "utter_event_order_shipped", told
        assert order in told["text"] and "DHL" in told["text"]
        await nothing_more(b, 1)
        await nothing_more(elsewhere, 1)
        await nothing_more(a, 1)


async def test_a_customer_without_an_open_conversation_gets_it_at_the_next_visit(
        pipeline: Pipeline) -> None:
    carol = someone("carol")
    order = str(uuid.uuid4().int % 10**8)
    shipped = await crm_admin(pipeline, f"/admin/orders/{order}/ship",
                              {"customer_id": carol, "carrier": "UPS"})
    assert shipped.status_code == 200, shipped.text
    await asyncio.sleep(3)  # the event is kept for her
    async with ChatClient(pipeline.gateway_urls[1], tenant=TENANT, user=carol) as chat:
        await chat.send("hello")
        replies = [await chat.next("reply", 30), await chat.next("reply", 30)]
        await nothing_more(chat, 2)
    told = [r for r in replies if r["response"] == "utter_event_order_shipped"]
    assert len(told) == 1 and order in told[0]["text"], replies
