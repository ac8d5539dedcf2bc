"""The HTTP backend's policy without a network (httpx.MockTransport): OAuth2 tokens cached,
renewed before expiry and after a 401; retries only for idempotent calls, with the same
idempotency key; a 4xx is an answer, not an outage; the breaker opens, fails fast,
and closes again; and the actions built on it, through the action registry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.actions import (
    ActionContext,
    ActionOutcomeUnknown,
    ActionRegistry,
    ActionUnavailable,
    FailureKind,
)
from agents.integrations import (
    BackendConfig,
    HttpBackend,
    Integrations,
    OAuth2Config,
    load_integrations,
    new_breakers,
)
from agents.integrations.oauth import TokenSource

Handler = Callable[[httpx.Request], httpx.Response]
pytestmark = pytest.mark.asyncio

CTX = ActionContext("evt-1.c", "t1", "conv-1", user_id="u-7")


class Fake:
    """A backend: a token endpoint and whatever ``api`` answers; counts what it got."""

    def __init__(self, api: Handler, expires_in: int = 3600) -> None:
        self.api, self.expires_in = api, expires_in
        self.tokens_issued = 0
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.tokens_issued += 1
            assert request.headers["Authorization"].startswith("Basic ")
            return httpx.Response(200, json={"access_token": f"tok-{self.tokens_issued}",
                                             "token_type": "Bearer",
                                             "expires_in": self.expires_in})
        self.calls.append(request)
        return self.api(request)


def backend(fake: Fake, **config: object) -> HttpBackend:
    settings = BackendConfig(
        "crm", "http://crm.test",
        OAuth2Config("/oauth/token", "parley", "secret", "crm.read"),
        **{"timeout_s": 0.5, "retries": 2, "deadline_s": 5.0, "breaker_failures": 3,
           "breaker_reset_s": 30.0, **config})
    return HttpBackend(settings, new_breakers(), transport=httpx.MockTransport(fake))


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.path})


async def test_one_token_serves_many_calls_and_a_401_fetches_a_new_one() -> None:
    refused = {"tok-1"}

    def api(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        return httpx.Response(401) if token in refused else ok(request)

    fake = Fake(ok)
    crm = backend(fake)
    await asyncio.gather(*(crm.call("GET", "/a") for _ in range(5)))
    assert fake.tokens_issued == 1 and len(fake.calls) == 5
    fake.api = api  # the CRM restarted and forgot tok-1
    response = await crm.call("GET", "/b")
    assert response.status_code == 200 and fake.tokens_issued == 2
    await crm.aclose()


async def test_a_token_is_renewed_before_it_expires() -> None:
    now = [0.0]
    fake = Fake(ok, expires_in=100)
    source = TokenSource(OAuth2Config("/oauth/token", "p", "s", refresh_margin_s=10),
                         "http://crm.test", clock=lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        assert await source.get(client) == "tok-1"
        now[0] = 89.0
        assert await source.get(client) == "tok-1"
        now[0] = 90.0  # 10 s before expiry: renewed, no call presents a lapsing token
        assert await source.get(client) == "tok-2"


async def test_idempotent_calls_are_retried_with_the_same_key_others_are_not() -> None:
    answers = iter([503, 503, 200])
    fake = Fake(lambda request: httpx.Response(next(answers), json={}))
    crm = backend(fake)
    response = await crm.call("POST", "/pay", json={"x": 1}, idempotency_key="evt-9.c",
                              idempotent=True)
    assert response.status_code == 200 and len(fake.calls) == 3
    assert {r.headers["Idempotency-Key"] for r in fake.calls} == {"evt-9.c"}

    fake.calls.clear()
    fake.api = lambda request: httpx.Response(503)
    with pytest.raises(ActionUnavailable, match="answered 503"):
        await crm.call("POST", "/pay", json={}, idempotency_key="evt-10.c", idempotent=False)
    assert len(fake.calls) == 1  # a write the backend may not deduplicate: never repeated
    await crm.aclose()


async def test_a_4xx_is_an_answer_not_an_outage() -> None:
    fake = Fake(lambda request: httpx.Response(404, json={"detail": "no order"}))
    crm = backend(fake, breaker_failures=1)
    for _ in range(3):
        assert (await crm.call("GET", "/orders/1")).status_code == 404
    assert len(fake.calls) == 3 and await crm.breaker_state() == "closed"
    await crm.aclose()


async def test_timeouts_are_unavailable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    crm = backend(Fake(slow), retries=0)
    with pytest.raises(ActionUnavailable, match=r"no answer within 0\.5 s"):
        await crm.call("GET", "/orders/1")
    await crm.aclose()


async def test_a_write_without_an_answer_may_have_been_done() -> None:
    """A read timeout or a broken connection after a write was sent: outcome unknown;
    a connection never made: nothing was sent. Once an attempt may have done it, a later
    attempt's plain failure does not make it "not done"."""
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    crm = backend(Fake(slow), retries=0)
    with pytest.raises(ActionOutcomeUnknown, match=r"no answer within 0\.5 s"):
        await crm.call("POST", "/pay", json={}, idempotency_key="evt-1.c")
    crm = backend(Fake(refused), retries=0)
    with pytest.raises(ActionUnavailable) as raised:
        await crm.call("POST", "/pay", json={}, idempotency_key="evt-2.c")
    assert not isinstance(raised.value, ActionOutcomeUnknown)
    answers = iter([slow, lambda request: httpx.Response(503), lambda request: httpx.Response(503)])
    fake = Fake(lambda request: next(answers)(request))
    crm = backend(fake, retries=2)
    with pytest.raises(ActionOutcomeUnknown, match="answered 503"):
        await crm.call("POST", "/pay", json={}, idempotency_key="evt-3.c", idempotent=True)
    assert len(fake.calls) == 3  # retried under the same key: the backend deduplicates
    await crm.aclose()


async def test_an_action_cut_off_mid_write_is_unknown_a_read_merely_late() -> None:
    registry = ActionRegistry()

    async def hang(_inputs: dict[str, object], _ctx: ActionContext) -> dict[str, object]:
        await asyncio.sleep(10)
        return {}

    registry.register("pay", hang, inputs=dict, outputs=dict, timeout_s=0.05, writes=True)
    registry.register("look", hang, inputs=dict, outputs=dict, timeout_s=0.05)
    assert (await registry.run("pay", {}, CTX)).kind is FailureKind.UNKNOWN
    assert (await registry.run("look", {}, CTX)).kind is FailureKind.TIMEOUT


async def test_the_breaker_opens_fails_fast_and_recovers() -> None:
    fake = Fake(lambda request: httpx.Response(500))
    crm = backend(fake, retries=0, breaker_failures=2, breaker_reset_s=0.3)
    for _ in range(2):
        with pytest.raises(ActionUnavailable, match="answered 500"):
            await crm.call("GET", "/orders/1")
    assert await crm.breaker_state() == "opened"
    with pytest.raises(ActionUnavailable, match="circuit open"):
        await crm.call("GET", "/orders/1")
    assert len(fake.calls) == 2  # the open circuit sent nothing
    fake.api = ok
    await asyncio.sleep(0.35)
    assert (await crm.call("GET", "/orders/1")).status_code == 200  # the trial call
    assert await crm.breaker_state() == "closed"
    await crm.aclose()


DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"


async def test_http_actions_through_the_registry() -> None:
    config = load_integrations(DEMO, {"CRM_URL": "http://crm.test"})
    assert config is not None

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/orders/12345":
            return httpx.Response(200, json={"id": "12345", "status": "shipped",
                                             "carrier": None, "estimated_delivery": "soon"})
        if request.url.path == "/customers/u-7/transfers":
            body = json.loads(request.content)
            assert body == {"amount": {"value": 50.0, "currency": "EUR"}, "recipient": "Anna"}
            assert request.headers["Idempotency-Key"] == "evt-1.c"
            return httpx.Response(201, json={"reference": "TR-1", "balance": {
                "value": 10.5, "currency": "EUR"}})
        return httpx.Response(404, json={"detail": "nothing here"})

    fake = Fake(api)
    crm = HttpBackend(config.backends["crm"], new_breakers(),
                      transport=httpx.MockTransport(fake))
    registry = ActionRegistry()
    Integrations(config, {"crm": crm}).register(registry)

    order = await registry.run("order_status", {"order_id": "12345"}, CTX)
    assert order.ok and order.outputs == {"order_status": "shipped", "carrier": None,
                                          "estimated_delivery": "soon"}
    sent = await registry.run("send_money", {"amount": {"value": 50, "currency": "EUR"},
                                             "recipient": "Anna"}, CTX)
    assert sent.ok and sent.outputs == {"payment_reference": "TR-1",
                                        "new_balance": {"value": 10.5, "currency": "EUR"}}
    missing = await registry.run("order_status", {"order_id": "99999"}, CTX)
    assert missing.kind is FailureKind.FAILED and missing.error == "no such order"
    bad = await registry.run("order_status", {"order_id": "12/../x"}, CTX)
    assert bad.kind is FailureKind.INVALID_INPUTS  # the pattern, before any request
    fake.api = lambda request: httpx.Response(503)
    down = await registry.run("order_status", {"order_id": "12345"}, CTX)
    assert down.kind is FailureKind.UNAVAILABLE and "503" in (down.error or "")
    await crm.aclose()


async def test_inputs_are_placed_at_their_to_paths(tmp_path: Path) -> None:
    (tmp_path / "integrations.yml").write_text(
        "backends:\n  desk: {base_url: 'http://desk.test'}\n"
        "actions:\n  open_ticket:\n    backend: desk\n    method: POST\n"
        "    path: /api/v2/tickets\n    inputs:\n"
        "      issue_description: {type: string, to: ticket.comment.body}\n"
        "      email: {type: string, to: ticket.requester.email}\n"
        "    outputs:\n      ticket_id: {type: integer, from: ticket.id}\n")
    config = load_integrations(tmp_path, {})
    assert config is not None
    sent: list[Any] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"ticket": {"id": 42}})

    desk = HttpBackend(config.backends["desk"], new_breakers(),
                       transport=httpx.MockTransport(api))
    registry = ActionRegistry()
    Integrations(config, {"desk": desk}).register(registry)
    outcome = await registry.run("open_ticket", {"issue_description": "app crashes",
                                                 "email": "a@example.com"}, CTX)
    assert outcome.ok and outcome.outputs == {"ticket_id": 42}
    assert sent == [{"ticket": {"comment": {"body": "app crashes"},
                                "requester": {"email": "a@example.com"}}}]
    await desk.aclose()
