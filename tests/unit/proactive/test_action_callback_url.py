"""An HTTP action asking for a callback URL (``context: callback_url``) sends the backend
the gateway's URL with a token naming exactly the calling conversation; the demo's
open_ticket, against a fake CRM answering 202, gives the flow the ticket id at once."""

from __future__ import annotations

import json

import httpx
import pytest

from agents.actions import ActionContext, ActionRegistry
from agents.integrations import Integrations, load_integrations
from agents.integrations.backend import HttpBackend, new_breakers
from examples import DEMO
from streams.proactive import CallbackClaims, CallbackSettings, read_callback_token

pytestmark = pytest.mark.asyncio

SETTINGS = CallbackSettings("token-secret-0123456789-0123456789", "http://gw.test:8081")


async def test_open_ticket_sends_a_callback_url_for_this_conversation() -> None:
    config = load_integrations(DEMO.folder, {"CRM_URL": "http://crm.test"})
    assert config is not None
    seen: list[dict[str, str]] = []

    def crm(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer",
                                             "expires_in": 3600})
        seen.append(json.loads(request.content))
        return httpx.Response(202, json={"id": "T-1A2B3C4D", "status": "open"})

    backend = HttpBackend(config.backends["crm"], new_breakers(),
                          transport=httpx.MockTransport(crm))
    registry = ActionRegistry()
    Integrations(config, {"crm": backend}, SETTINGS).register(registry)
    ctx = ActionContext("evt-9.c", "demo", "conv-9", user_id="u-9", channel="web")
    opened = await registry.run("open_ticket", {"issue_description": "it broke",
                                                "email": "a@example.com"}, ctx)
    await backend.aclose()
    assert opened.ok and opened.outputs == {"ticket_id": "T-1A2B3C4D"}, opened
    (body,) = seen
    assert body["customer_id"] == "u-9" and body["description"] == "it broke"
    prefix = "http://gw.test:8081/callbacks/crm/"
    assert body["callback_url"].startswith(prefix)
    token = body["callback_url"][len(prefix):]
    assert read_callback_token(SETTINGS, token, "crm") == \
        CallbackClaims("demo", "conv-9", "u-9", "web", "open_ticket", "crm")
