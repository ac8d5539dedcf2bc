"""A request run again (a worker killed mid-call, the request redelivered) sends the
backend the same body under the same idempotency key, even where the body holds something
derived from the time (open_ticket's callback URL, a token with its issue time): a backend
refuses a key reused for another request (the reference CRM answers 422), and the user
would be told the ticket was not filed while it was."""

from __future__ import annotations

import json

import httpx
import pytest

from agents.actions import ActionContext, ActionRegistry
from agents.integrations import Integrations, load_integrations
from agents.integrations.backend import HttpBackend, new_breakers
from examples import DEMO
from streams import proactive
from streams.proactive import CallbackSettings

pytestmark = pytest.mark.asyncio

SETTINGS = CallbackSettings("token-secret-0123456789-0123456789", "http://gw.test:8081")


async def test_open_ticket_run_twice_sends_the_same_body(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_integrations(DEMO.folder, {"CRM_URL": "http://crm.test"})
    assert config is not None
    sent: list[tuple[str | None, bytes]] = []

    def crm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        sent.append((request.headers.get("Idempotency-Key"), request.content))
        return httpx.Response(202, json={"id": "T-1A2B3C4D", "status": "open"})

    backend = HttpBackend(config.backends["crm"], new_breakers(),
                          transport=httpx.MockTransport(crm))
    registry = ActionRegistry()
    Integrations(config, {"crm": backend}, SETTINGS).register(registry)
    ctx = ActionContext("evt-9.c", "demo", "conv-9", user_id="u-9", channel="web",
                        requested_at_ms=1_796_000_000_000)
    inputs = {"issue_description": "it broke", "email": "a@example.com"}
    for now in (1_796_000_001.0, 1_796_000_042.0):  # the first run, and one 41 s later
        monkeypatch.setattr(proactive.time, "time", lambda now=now: now)
        assert (await registry.run("open_ticket", inputs, ctx)).ok
    await backend.aclose()
    (key, body), (key_again, body_again) = sent
    assert key == key_again == "evt-9.c"
    assert body == body_again
    assert json.loads(body)["callback_url"].startswith("http://gw.test:8081/callbacks/crm/")
