"""The reference CRM over HTTP (in process, Starlette's TestClient): tokens and scopes,
idempotent writes, fault injection, and clear errors for bad requests."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from infra.crm import CrmSettings
from infra.crm.app import CrmService, create_app
from infra.crm.auth import Client, TokenIssuer

SETTINGS = CrmSettings(client_secret="client-secret-1", admin_secret="admin-secret-1",
                       enrol_unknown=True)


@pytest.fixture
def service() -> CrmService:
    return CrmService(SETTINGS, rng=random.Random(7))


@pytest.fixture
def client(service: CrmService) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def token(client: TestClient, client_id: str = "parley", secret: str = "client-secret-1",
          **extra: str) -> str:
    response = client.post("/oauth/token", data={"grant_type": "client_credentials",
                                                 "client_id": client_id,
                                                 "client_secret": secret, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == SETTINGS.token_ttl_s
    return str(body["access_token"])


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_a_client_gets_a_token_with_http_basic_too(client: TestClient) -> None:
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           auth=("parley", "client-secret-1"))
    assert response.status_code == 200
    assert response.json()["scope"] == "crm.read crm.write"


@pytest.mark.parametrize("client_id,secret", [("parley", "wrong-secret"),
                                              ("nobody", "client-secret-1"), ("", "")])
def test_a_wrong_secret_gets_no_token(client: TestClient, client_id: str, secret: str) -> None:
    response = client.post("/oauth/token", data={"grant_type": "client_credentials",
                                                 "client_id": client_id,
                                                 "client_secret": secret})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_scope_the_client_does_not_hold_is_refused(client: TestClient) -> None:
    response = client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "parley",
        "client_secret": "client-secret-1", "scope": "crm.read crm.admin"})
    assert response.status_code == 400 and "crm.admin" in response.json()["error_description"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"},
                                     {"Authorization": "Basic cGFybGV5OnNlY3JldA=="},
                                     {"Authorization": "Bearer "}])
def test_every_api_call_without_a_valid_token_is_401(client: TestClient,
                                                    headers: dict[str, str]) -> None:
    for method, path in [("GET", "/orders/12345"), ("GET", "/customers/c-1001/accounts"),
                         ("POST", "/customers/c-1001/transfers"), ("GET", "/admin/faults")]:
        response = client.request(method, path, headers=headers,
                                  json={"amount": {"value": 1, "currency": "EUR"},
                                        "recipient": "x"})
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_401() -> None:
    now = [0.0]
    issuer = TokenIssuer([Client("a", "secret-secret", frozenset({"crm.read"}))], 60,
                         clock=lambda: now[0])
    value, _ = issuer.issue("a", "secret-secret", None)
    assert issuer.check(f"Bearer {value}", "crm.read").client_id == "a"
    now[0] = 60.0
    with pytest.raises(Exception, match="expired"):
        issuer.check(f"Bearer {value}", "crm.read")


def test_scopes_separate_the_api_from_the_admin(client: TestClient) -> None:
    api, admin = token(client), token(client, "crm-admin", "admin-secret-1")
    assert client.get("/admin/faults", headers=bearer(api)).status_code == 403
    assert client.get("/orders/12345", headers=bearer(admin)).status_code == 403
    read_only = token(client, scope="crm.read")
    response = client.post("/tickets", headers={**bearer(read_only), "Idempotency-Key": "t1"},
                           json={"customer_id": "c-1001", "description": "x",
                                 "email": "a@example.com"})
    assert response.status_code == 403


def test_order_status_and_shipping(client: TestClient) -> None:
    headers = bearer(token(client))
    order = client.get("/orders/12345", headers=headers).json()
    assert order["status"] == "shipped" and order["carrier"] == "DHL"
    missing = client.get("/orders/424242", headers=headers)
    assert missing.status_code == 404 and "424242" in missing.json()["detail"]
    assert client.get("/orders/..%2F..", headers=headers).status_code in (404, 422)


def test_a_transfer_happens_once_per_idempotency_key(client: TestClient,
                                                     service: CrmService) -> None:
    headers = bearer(token(client))
    before = client.get("/customers/c-1001/accounts", headers=headers).json()
    body = {"amount": {"value": "50.10", "currency": "EUR"}, "recipient": "Tom"}
    first = client.post("/customers/c-1001/transfers",
                        headers={**headers, "Idempotency-Key": "evt-1.c"}, json=body)
    again = client.post("/customers/c-1001/transfers",
                        headers={**headers, "Idempotency-Key": "evt-1.c"}, json=body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert (first.headers["Idempotent-Replayed"], again.headers["Idempotent-Replayed"]) == \
        ("false", "true")
    assert service.store.count("transfers") == 1
    after = client.get("/customers/c-1001/accounts", headers=headers).json()
    assert round(before["accounts"][0]["balance"]["value"] - 50.10, 2) == \
        after["accounts"][0]["balance"]["value"]
    other = client.post("/customers/c-1001/transfers",
                        headers={**headers, "Idempotency-Key": "evt-1.c"},
                        json={**body, "recipient": "Eve"})
    assert other.status_code == 422 and "another request" in other.json()["detail"]


def test_a_refused_write_is_the_keys_answer_and_changes_nothing(client: TestClient,
                                                              service: CrmService) -> None:
    headers = {**bearer(token(client)), "Idempotency-Key": "big"}
    body = {"amount": {"value": 10_000_000, "currency": "EUR"}, "recipient": "Tom"}
    for _ in range(2):
        response = client.post("/customers/c-1001/transfers", headers=headers, json=body)
        assert response.status_code == 422 and response.json()["detail"] == "insufficient funds"
    assert service.store.count("transfers") == 0


def test_writes_need_an_idempotency_key_and_valid_bodies(client: TestClient) -> None:
    headers = bearer(token(client))
    no_key = client.post("/customers/c-1001/cards/block", headers=headers, json={})
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["detail"]
    bad = client.post("/customers/c-1001/transfers", headers={**headers, "Idempotency-Key": "k"},
                      json={"amount": {"value": -5, "currency": "euro"}})
    assert bad.status_code == 422
    fields = {tuple(e["loc"]) for e in bad.json()["detail"]}
    assert ("body", "amount", "value") in fields and ("body", "recipient") in fields


def test_blocking_a_card(client: TestClient) -> None:
    headers = {**bearer(token(client)), "Idempotency-Key": "b1"}
    response = client.post("/customers/u-42/cards/block", headers=headers,
                           json={"card_type": "credit"})
    assert response.status_code == 200
    assert [(c["card_type"], c["status"]) for c in response.json()["blocked"]] == \
        [("credit", "blocked")]
    cards = client.get("/customers/u-42/cards", headers=headers).json()["cards"]
    assert {c["card_type"]: c["status"] for c in cards} == {"debit": "active",
                                                           "credit": "blocked"}


def test_unknown_customers_are_404_without_enrolment() -> None:
    service = CrmService(CrmSettings(client_secret="client-secret-1",
                                     admin_secret="admin-secret-1", enrol_unknown=False))
    with TestClient(create_app(service)) as client:
        response = client.get("/customers/u-1/accounts", headers=bearer(token(client)))
    assert response.status_code == 404


def test_faults_are_injected_and_cleared_by_the_admin_only(client: TestClient) -> None:
    api, admin = bearer(token(client)), bearer(token(client, "crm-admin", "admin-secret-1"))
    assert client.put("/admin/faults", headers=api, json={"down": True}).status_code == 403
    assert client.put("/admin/faults", headers=admin, json={"down": True}).status_code == 200
    assert client.get("/orders/12345", headers=api).status_code == 503
    assert client.get("/healthz").status_code == 200          # never faulted
    assert client.post("/oauth/token", data={"grant_type": "client_credentials"},
                       auth=("parley", "client-secret-1")).status_code == 200
    client.put("/admin/faults", headers=admin, json={"error_rate": 0.5})
    statuses = [client.get("/orders/12345", headers=api).status_code for _ in range(40)]
    assert 5 < statuses.count(503) < 35 and statuses.count(200) + statuses.count(503) == 40
    bad = client.put("/admin/faults", headers=admin, json={"error_rate": 2})
    assert bad.status_code == 422
    assert client.delete("/admin/faults", headers=admin).json()["error_rate"] == 0
    assert client.get("/orders/12345", headers=api).status_code == 200


def test_the_transfers_a_customer_made_are_listed_oldest_first(client: TestClient) -> None:
    headers = bearer(token(client))
    assert client.get("/customers/u-7/transfers", headers=headers).json()["transfers"] == []
    sent = [client.post("/customers/u-7/transfers",
                        headers={**headers, "Idempotency-Key": f"t{n}"},
                        json={"amount": {"value": value, "currency": "EUR"}, "recipient": who}
                        ).json() for n, (value, who) in enumerate([(5, "Tom"), (7.5, "Eve")])]
    client.post("/customers/u-8/transfers", headers={**headers, "Idempotency-Key": "t9"},
                json={"amount": {"value": 1, "currency": "EUR"}, "recipient": "Tom"})
    listed = client.get("/customers/u-7/transfers", headers=headers).json()["transfers"]
    assert [(t["reference"], t["recipient"], t["amount"]) for t in listed] == \
        [(s["reference"], s["recipient"], s["amount"]) for s in sent]
    assert listed[1]["amount"] == {"value": 7.5, "currency": "EUR"}
    assert client.get("/customers/u-7/transfers").status_code == 401


def test_a_held_reply_comes_after_the_effect_and_the_call_counts_as_in_flight(
        client: TestClient) -> None:
    api, admin = bearer(token(client)), bearer(token(client, "crm-admin", "admin-secret-1"))
    plan = client.put("/admin/faults", headers=admin, json={"reply_latency_ms": 1500}).json()
    assert (plan["reply_latency_ms"], plan["in_flight"]) == (1500, 0)
    body = {"amount": {"value": 20, "currency": "EUR"}, "recipient": "Tom"}
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.post, "/customers/u-9/transfers",
                           headers={**api, "Idempotency-Key": "held-1"}, json=body)
        deadline = time.monotonic() + 5
        while client.get("/admin/counts", headers=admin).json()["transfers"] == 0:
            assert time.monotonic() < deadline, "the effect is done before the answer"
            time.sleep(0.02)
        assert not call.done(), "the answer is still held"
        assert client.get("/admin/faults", headers=admin).json()["in_flight"] == 1
        answer = call.result(10)
    assert answer.status_code == 201
    assert client.get("/admin/faults", headers=admin).json()["in_flight"] == 0
    bad = client.put("/admin/faults", headers=admin, json={"reply_latency_ms": -1})
    assert bad.status_code == 422
