"""Callbacks and business events without infrastructure: the signature a backend sends,
the five-minute window, the correlation token a backend cannot forge or move to another
conversation, replays, and the gateway's answers (gateway/callbacks.py, with fakes for
Redis and the bus). The whole path on the real stack is in tests/e2e/test_proactive.py."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import jwt
import pytest
import pytest_asyncio

from gateway.api import create_app
from gateway.callbacks import Callbacks, business_event, callback_notice
from gateway.events_cli import publish_event
from streams.codecs import codec_for
from streams.proactive import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackClaims,
    CallbackRefused,
    CallbackSettings,
    callback_url,
    mint_callback_token,
    read_callback_token,
    sign_body,
    verify_signature,
)

SETTINGS = CallbackSettings("token-secret-0123456789-0123456789", "http://gw:8081", 3600)
CLAIMS = CallbackClaims("acme", "c-1", "u-1", "ws", "open_ticket", "crm")
BACKEND_SECRET = "crm-callback-secret"
ENV = {"PARLEY_CALLBACK_SECRET_CRM": BACKEND_SECRET, "PARLEY_CALLBACK_TENANTS_CRM": "acme"}


# -- signatures -----------------------------------------------------------------------

def test_a_signed_body_verifies() -> None:
    now = time.time()
    ts = str(int(now))
    verify_signature(BACKEND_SECRET, ts, sign_body(BACKEND_SECRET, ts, b'{"a":1}'), b'{"a":1}',
                     now)


@pytest.mark.parametrize("change", ["body", "secret", "timestamp"])
def test_a_signature_over_anything_else_is_refused(change: str) -> None:
    now = time.time()
    ts = str(int(now))
    signature = sign_body("other-secret" if change == "secret" else BACKEND_SECRET,
                          str(int(now) - 1) if change == "timestamp" else ts, b'{"a":1}')
    body = b'{"a":2}' if change == "body" else b'{"a":1}'
    with pytest.raises(CallbackRefused) as refused:
        verify_signature(BACKEND_SECRET, ts, signature, body, now)
    assert refused.value.status == 401 and "does not match" in refused.value.reason


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_more_than_five_minutes_off_is_refused(skew: int) -> None:
    now = time.time()
    ts = str(int(now) + skew)
    with pytest.raises(CallbackRefused, match="5 minutes") as refused:
        verify_signature(BACKEND_SECRET, ts, sign_body(BACKEND_SECRET, ts, b"{}"), b"{}", now)
    assert refused.value.status == 401


def test_within_the_window_is_taken() -> None:
    now = time.time()
    ts = str(int(now) - 299)
    verify_signature(BACKEND_SECRET, ts, sign_body(BACKEND_SECRET, ts, b"{}"), b"{}", now)


@pytest.mark.parametrize("secret,ts,sig,reason", [
    (None, "1", "v1=x", "no callback secret"),
    (BACKEND_SECRET, None, "v1=x", "missing"),
    (BACKEND_SECRET, "1", None, "missing"),
    (BACKEND_SECRET, "yesterday", "v1=x", "epoch seconds"),
])
def test_missing_pieces_are_refused_with_a_reason(secret: str | None, ts: str | None,
                                                  sig: str | None, reason: str) -> None:
    with pytest.raises(CallbackRefused, match=reason):
        verify_signature(secret, ts, sig, b"{}")


# -- correlation tokens ---------------------------------------------------------------

def test_a_token_names_its_conversation() -> None:
    url = callback_url(SETTINGS, CLAIMS)
    assert url.startswith("http://gw:8081/callbacks/crm/")
    assert read_callback_token(SETTINGS, url.rsplit("/", 1)[1], "crm") == CLAIMS


def _tampered(token: str, **changes: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


@pytest.mark.parametrize("changes", [{"c": "c-2"}, {"t": "other-tenant"}, {"u": "u-2"}])
def test_a_token_edited_to_address_another_conversation_is_refused(
        changes: dict[str, str]) -> None:
    token = mint_callback_token(SETTINGS, CLAIMS)
    with pytest.raises(CallbackRefused, match="not one Parley issued") as refused:
        read_callback_token(SETTINGS, _tampered(token, **changes), "crm")
    assert refused.value.status == 403


def test_a_token_signed_by_anyone_else_is_refused() -> None:
    forged = jwt.encode({"aud": "parley-callback", "exp": int(time.time()) + 60, "t": "acme",
                         "c": "c-1", "u": "u-1", "ch": "ws", "a": "open_ticket", "b": "crm"},
                        "guessed-secret-0123456789-0123456789", algorithm="HS256")
    with pytest.raises(CallbackRefused, match="not one Parley issued"):
        read_callback_token(SETTINGS, forged, "crm")


def test_a_token_without_a_signature_is_refused() -> None:
    unsigned = jwt.encode({"aud": "parley-callback", "exp": int(time.time()) + 60, "t": "a",
                           "c": "c", "u": "u", "ch": "ws", "a": "x", "b": "crm"},
                          cast(Any, None), algorithm="none")
    with pytest.raises(CallbackRefused):
        read_callback_token(SETTINGS, unsigned, "crm")


def test_a_token_given_to_one_backend_is_refused_on_another() -> None:
    token = mint_callback_token(SETTINGS, CLAIMS)
    with pytest.raises(CallbackRefused, match="not issued to 'zendesk'"):
        read_callback_token(SETTINGS, token, "zendesk")


def test_an_expired_token_is_refused() -> None:
    token = mint_callback_token(SETTINGS, CLAIMS, now=time.time() - 3601)
    with pytest.raises(CallbackRefused, match="expired"):
        read_callback_token(SETTINGS, token, "crm")


def test_a_short_token_secret_is_refused_at_start_up() -> None:
    with pytest.raises(Exception, match="PARLEY_CALLBACK_TOKEN_SECRET"):
        CallbackSettings.from_env({"PARLEY_CALLBACK_TOKEN_SECRET": "short"})


# -- bodies -----------------------------------------------------------------------------

def test_a_callback_becomes_a_notice_for_the_tokens_conversation() -> None:
    notice = callback_notice(CLAIMS, {"callback_id": "T-1.resolved", "status": "resolved",
                                      "data": {"ticket_id": "T-1", "resolution": "fixed"}},
                             "crm", 1000)
    assert (notice["tenant_id"], notice["conversation_id"], notice["user_id"]) == \
        ("acme", "c-1", "u-1")
    assert notice["response"] == "utter_callback_open_ticket_resolved"
    assert json.loads(notice["data_json"]) == {"ticket_id": "T-1", "resolution": "fixed",
                                               "status": "resolved"}
    again = callback_notice(CLAIMS, {"callback_id": "T-1.resolved", "status": "resolved"},
                            "crm", 2000)
    assert again["event_id"] == notice["event_id"], "a resend is the same event"


@pytest.mark.parametrize("body,reason", [
    ({"status": "resolved"}, "callback_id"),
    ({"callback_id": "x", "status": "Resolved!"}, "status"),
    ({"callback_id": "x", "data": [1]}, "data"),
])
def test_a_malformed_callback_body_says_what_is_wrong(body: dict[str, Any],
                                                      reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        callback_notice(CLAIMS, body, "crm", 0)


@pytest.mark.parametrize("body,reason", [
    ({"tenant_id": "acme", "customer_id": "u1", "type": "order_shipped"}, "event_id"),
    ({"event_id": "e", "tenant_id": "acme", "customer_id": "u 1", "type": "x"}, "customer"),
    ({"event_id": "e", "tenant_id": "acme", "customer_id": "u1", "type": "Order Shipped"},
     "type"),
    ({"event_id": "e", "tenant_id": "acme", "customer_id": "u1", "type": "x",
      "data": {"a": [1]}}, "data"),
])
def test_a_malformed_business_event_says_what_is_wrong(body: dict[str, Any],
                                                       reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        business_event(body, 0)


# -- the gateway's routes ----------------------------------------------------------------

class FakeRedis:
    """The two commands ReplayGuard sends."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def register_script(self, script: str) -> Any:
        raise AssertionError("not used")

    async def set(self, key: str, value: bytes, nx: bool, ex: int) -> bool | None:
        if key in self.keys:
            return None
        self.keys.add(key)
        return True

    async def delete(self, key: str) -> int:
        self.keys.discard(key)
        return 1


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.down = False

    async def send(self, topic: str, key: str, value: bytes) -> int:
        if self.down:
            raise RuntimeError("broker down")
        self.sent.append((topic, key, value))
        return 0


def gateway_transport(bus: FakeBus) -> httpx.ASGITransport:
    """The gateway's callback and event routes, publishing on ``bus``."""
    callbacks = Callbacks(SETTINGS, cast(Any, FakeRedis()), bus.send,
                          notices_topic="conversation.notices",
                          notice_codec=codec_for("conversation_notice"),
                          events_topic="business.events",
                          event_codec=codec_for("business_event"), environ=ENV)
    return httpx.ASGITransport(app=create_app(callbacks.routes))


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, FakeBus]]:
    bus = FakeBus()
    transport = gateway_transport(bus)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, bus


def signed(body: dict[str, Any], secret: str = BACKEND_SECRET,
           at: float | None = None) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    ts = str(int(time.time() if at is None else at))
    return raw, {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign_body(secret, ts, raw),
                 "Content-Type": "application/json"}


RESOLVED = {"callback_id": "T-1.resolved", "status": "resolved", "data": {"ticket_id": "T-1"}}


@pytest.mark.asyncio
async def test_a_signed_callback_is_published_for_its_conversation(
        gateway: tuple[httpx.AsyncClient, FakeBus]) -> None:
    client, bus = gateway
    raw, headers = signed(RESOLVED)
    answer = await client.post(callback_url(SETTINGS, CLAIMS).replace("http://gw:8081", ""),
                               content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    ((topic, key, value),) = bus.sent
    notice = codec_for("conversation_notice").decode(value)
    assert (topic, key, notice["conversation_id"]) == ("conversation.notices", "c-1", "c-1")
    assert notice["response"] == "utter_callback_open_ticket_resolved"


@pytest.mark.asyncio
async def test_a_replayed_callback_is_refused_and_not_published_again(
        gateway: tuple[httpx.AsyncClient, FakeBus]) -> None:
    client, bus = gateway
    path = callback_url(SETTINGS, CLAIMS).replace("http://gw:8081", "")
    raw, headers = signed(RESOLVED)
    assert (await client.post(path, content=raw, headers=headers)).status_code == 202
    again = await client.post(path, content=raw, headers=headers)
    assert again.status_code == 401 and "replayed" in again.text
    resigned = await client.post(path, content=raw, headers=signed(RESOLVED)[1])
    assert resigned.status_code == 401, "the same callback id, signed anew, is a replay too"
    assert len(bus.sent) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("case,status,reason", [
    ("forged signature", 401, "does not match"),
    ("stale", 401, "5 minutes"),
    ("tampered token", 403, "not one Parley issued"),
    ("other backend's path", 401, "no callback secret"),
    ("not json", 400, "not JSON"),
])
async def test_a_bad_callback_is_refused_with_its_reason_and_nothing_published(
        gateway: tuple[httpx.AsyncClient, FakeBus], case: str, status: int,
        reason: str) -> None:
    client, bus = gateway
    token = mint_callback_token(SETTINGS, CLAIMS)
    path = f"/callbacks/crm/{token}"
    raw, headers = signed(RESOLVED)
    if case == "forged signature":
        raw, headers = signed(RESOLVED, secret="guessed")
    elif case == "stale":
        raw, headers = signed(RESOLVED, at=time.time() - 600)
    elif case == "tampered token":
        path = f"/callbacks/crm/{_tampered(token, c='c-2')}"
    elif case == "other backend's path":
        path = f"/callbacks/zendesk/{token}"
    elif case == "not json":
        raw = b"not json"
        ts = headers[TIMESTAMP_HEADER]
        headers[SIGNATURE_HEADER] = sign_body(BACKEND_SECRET, ts, raw)
    answer = await client.post(path, content=raw, headers=headers)
    assert answer.status_code == status and reason in answer.text, answer.text
    assert bus.sent == []


@pytest.mark.asyncio
async def test_a_callback_the_broker_did_not_take_can_be_retried(
        gateway: tuple[httpx.AsyncClient, FakeBus]) -> None:
    client, bus = gateway
    path = callback_url(SETTINGS, CLAIMS).replace("http://gw:8081", "")
    bus.down = True
    raw, headers = signed(RESOLVED)
    assert (await client.post(path, content=raw, headers=headers)).status_code == 503
    bus.down = False
    assert (await client.post(path, content=raw, headers=headers)).status_code == 202


@pytest.mark.asyncio
async def test_a_business_event_is_published_keyed_by_its_customer(
        gateway: tuple[httpx.AsyncClient, FakeBus]) -> None:
    client, bus = gateway
    raw, headers = signed({"event_id": "ev-1", "tenant_id": "acme", "customer_id": "u-7",
                           "type": "order_shipped", "data": {"order_id": 12345}})
    answer = await client.post("/events/crm", content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    ((topic, key, value),) = bus.sent
    event = codec_for("business_event").decode(value)
    assert (topic, key) == ("business.events", "acme/u-7")
    assert event["data"] == {"order_id": "12345"} and event["type"] == "order_shipped"


@pytest.mark.asyncio
async def test_a_backend_cannot_publish_for_a_tenant_it_does_not_serve(
        gateway: tuple[httpx.AsyncClient, FakeBus]) -> None:
    client, bus = gateway
    raw, headers = signed({"event_id": "ev-2", "tenant_id": "globex", "customer_id": "u-7",
                           "type": "order_shipped"})
    answer = await client.post("/events/crm", content=raw, headers=headers)
    assert answer.status_code == 403 and "globex" in answer.text
    assert bus.sent == []


@pytest.mark.asyncio
async def test_parley_events_publish_signs_as_the_gateway_checks() -> None:
    bus = FakeBus()
    transport = gateway_transport(bus)
    event = {"event_id": "cli-1", "tenant_id": "acme", "customer_id": "u-1",
             "type": "payment_failed", "data": {"amount": "5 EUR"}}
    answer = await publish_event("http://gw", "crm", BACKEND_SECRET, event, transport)
    assert answer.status_code == 202, answer.text
    wrong = await publish_event("http://gw", "crm", "not-the-secret",
                                {**event, "event_id": "cli-2"}, transport)
    assert wrong.status_code == 401
    assert len(bus.sent) == 1
