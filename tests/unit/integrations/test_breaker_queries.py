"""Asking a backend's breaker for its state (what the degradation levels do every half
second, agents/degradation.py) must not change what the breaker counts: a token endpoint
that refuses the client is the backend saying no, not an outage, even when the state is
asked while that call is in flight."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agents.actions import ActionFailed
from agents.integrations import BackendConfig, HttpBackend, OAuth2Config, new_breakers

pytestmark = pytest.mark.asyncio


async def test_a_state_query_during_a_call_keeps_what_the_breaker_excludes() -> None:
    crm: HttpBackend

    async def refuse(request: httpx.Request) -> httpx.Response:
        assert await crm.breaker_state() == "closed"  # asked while the call is in flight
        await asyncio.sleep(0)
        return httpx.Response(401, json={"error": "invalid_client"})

    config = BackendConfig("crm", "http://crm.test",
                           OAuth2Config("/oauth/token", "parley", "wrong", "crm.read"),
                           timeout_s=0.5, retries=0, deadline_s=5.0, breaker_failures=1,
                           breaker_reset_s=30.0)
    crm = HttpBackend(config, new_breakers(), transport=httpx.MockTransport(refuse))
    try:
        for _ in range(3):
            with pytest.raises(ActionFailed, match="refused the client"):
                await crm.call("GET", "/orders/1")
        assert await crm.breaker_state() == "closed"
    finally:
        await crm.aclose()
