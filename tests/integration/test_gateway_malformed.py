"""Malformed frames on a real gateway: each gets an error frame with a stable code and the
connection carries on (never a close with 1011 and a traceback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets

from gateway.server import Gateway
from kernel.settings import Settings
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _tenant_t(tenant: AuthTenant) -> AuthTenant:
    """Tenant ``t`` exists: every socket here authenticates as one of its users."""
    return tenant


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


MALFORMED: list[tuple[str | bytes, str]] = [
    ("[" * 10_000 + "]" * 10_000, "bad_json"),
    ('{"type":"resume","last_seq":' + "7" * 5_000 + "}", "bad_json"),
    ('{"type":"message","text":"hi","client_msg_id":"m","n":' + "1" * 5_000 + "}", "bad_json"),
    ('{"type":"resume","last_seq":NaN}', "bad_json"),
    (b'{"type":"ping","x":"\xff"}', "bad_json"),  # a binary frame that is not UTF-8
    ('{"type":"message","text":"hi","client_msg_id":"\\ud800"}', "bad_frame"),
    ("[" + "0," * 40_000 + "0]", "too_large"),  # over the 53 KB a frame may have
    ('{"type":"resume","last_seq":' + str(2**64) + "}", "bad_frame"),
]


async def test_each_malformed_frame_gets_its_code_and_the_connection_stays(
    gateway: Gateway,
) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}") as ws:

        async def frame() -> dict[str, Any]:
            parsed: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return parsed

        await frame()  # welcome
        for data, code in MALFORMED:
            await ws.send(data)
            error = await frame()
            assert (error["type"], error["code"]) == ("error", code), (str(data)[:60], error)
        # Text under the limit written with \u escapes (6 frame bytes a text byte) is taken.
        escaped = "\\u0061" * gateway.settings.max_text_bytes
        await ws.send('{"type":"message","client_msg_id":"big","text":"' + escaped + '"}')
        ack = await frame()
        assert (ack["type"], ack["client_msg_id"]) == ("ack", "big"), ack
