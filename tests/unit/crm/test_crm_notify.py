"""The reference CRM's side of asynchronous work: a ticket opened with a callback URL is
answered 202 at once; resolving it (admin only) calls back, signed as Parley checks it;
shipping an order (admin only) publishes ``order_shipped`` for the order's customer."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from infra.crm import CrmSettings
from infra.crm.app import CrmService, create_app
from infra.crm.notify import CallbackSender
from streams.proactive import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

SETTINGS = CrmSettings(client_secret="client-secret-1", admin_secret="admin-secret-1",
                       callback_secret="callback-secret-1")


@pytest.fixture
def published() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def service(published: list[dict[str, Any]]) -> CrmService:
    async def publish(event: dict[str, Any]) -> None:
        published.append(event)

    return CrmService(SETTINGS, rng=random.Random(7), publish=publish)


@pytest.fixture
def client(service: CrmService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def bearer(client: TestClient, client_id: str, secret: str) -> dict[str, str]:
    answer = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                         auth=(client_id, secret))
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_a_ticket_with_a_callback_is_accepted_at_once_and_resolved_later(
        client: TestClient, service: CrmService, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduled: list[tuple[Any, ...]] = []
    monkeypatch.setattr(service.callbacks, "schedule", lambda *a: scheduled.append(a))
    api, admin = bearer(client, "parley", "client-secret-1"), \
        bearer(client, "crm-admin", "admin-secret-1")
    opened = client.post("/tickets", headers={**api, "Idempotency-Key": "k1"}, json={
        "customer_id": "u1", "description": "the app crashes", "email": "a@example.com",
        "callback_url": "http://gw:8081/callbacks/crm/tok"})
    assert opened.status_code == 202, opened.text
    ticket = opened.json()["id"]
    refused = client.post(f"/admin/tickets/{ticket}/resolve", headers=api, json={})
    assert refused.status_code == 403 and scheduled == []
    resolved = client.post(f"/admin/tickets/{ticket}/resolve", headers=admin,
                           json={"resolution": "fixed in 2.1", "delay_s": 3})
    assert resolved.status_code == 202 and resolved.json()["callback"] == "scheduled"
    assert scheduled == [("http://gw:8081/callbacks/crm/tok", f"{ticket}.resolved",
                          "resolved", {"ticket_id": ticket, "resolution": "fixed in 2.1"}, 3)]
    assert client.get(f"/tickets/{ticket}", headers=api).json()["status"] == "resolved"


def test_a_ticket_without_a_callback_is_created_as_before(client: TestClient) -> None:
    api = bearer(client, "parley", "client-secret-1")
    opened = client.post("/tickets", headers={**api, "Idempotency-Key": "k2"}, json={
        "customer_id": "u1", "description": "x", "email": "a@example.com"})
    assert opened.status_code == 201
    admin = bearer(client, "crm-admin", "admin-secret-1")
    resolved = client.post(f"/admin/tickets/{opened.json()['id']}/resolve", headers=admin,
                           json={})
    assert resolved.status_code == 200 and resolved.json()["callback"] == "none"
    assert client.post("/admin/tickets/T-NOPE/resolve", headers=admin,
                       json={}).status_code == 404


def test_shipping_an_order_publishes_order_shipped_for_its_customer(
        client: TestClient, published: list[dict[str, Any]]) -> None:
    admin = bearer(client, "crm-admin", "admin-secret-1")
    api = bearer(client, "parley", "client-secret-1")
    assert client.post("/admin/orders/777/ship", headers=api,
                       json={"customer_id": "u9"}).status_code == 403
    assert client.post("/admin/orders/777/ship", headers=admin, json={}).status_code == 404
    shipped = client.post("/admin/orders/777/ship", headers=admin,
                          json={"customer_id": "u9", "carrier": "UPS"})
    assert shipped.status_code == 200, shipped.text
    (event,) = published
    assert (event["tenant_id"], event["customer_id"], event["type"]) == \
        ("demo", "u9", "order_shipped")
    assert event["data"]["order_id"] == "777" and event["data"]["carrier"] == "UPS"
    assert client.get("/orders/777", headers=api).json()["status"] == "shipped"


@pytest.mark.asyncio
async def test_the_callback_is_signed_as_parley_checks_it_and_retried_on_5xx() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) == 1 else 202)

    sender = CallbackSender("callback-secret-1", transport=httpx.MockTransport(receive))
    status = await sender.send("http://gw/callbacks/crm/tok", "T-1.resolved", "resolved",
                               {"ticket_id": "T-1"})
    assert status == 202 and len(seen) == 2
    last = seen[-1]
    verify_signature("callback-secret-1", last.headers[TIMESTAMP_HEADER],
                     last.headers[SIGNATURE_HEADER], last.content, time.time())
    assert json.loads(last.content) == {"callback_id": "T-1.resolved", "status": "resolved",
                                        "data": {"ticket_id": "T-1"}}
