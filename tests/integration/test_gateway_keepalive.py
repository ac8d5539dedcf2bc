"""The gateway's keepalive: one task pings every socket and closes the dead ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import websockets

from gateway.server import Gateway
from kernel.settings import Settings
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


@pytest_asyncio.fixture
async def gateway(settings: Settings, tenant: AuthTenant) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0, ping_interval_s=0.2, ping_timeout_s=0.3))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


async def test_a_peer_that_stops_answering_is_closed_and_a_live_one_is_kept(
    gateway: Gateway,
) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}&conversation="
    async with websockets.connect(url + "alive") as alive, \
            websockets.connect(url + "dead", close_timeout=0.5) as dead:
        await alive.recv()
        await dead.recv()  # welcome frames
        dead.transport.pause_reading()  # a peer that is gone: pings go unanswered

        for _ in range(50):
            await asyncio.sleep(0.1)
            if len(gateway.sessions) == 1:
                break
        assert [k.conversation_id for k in gateway.sessions] == ["alive"]
        dead.transport.resume_reading()
        await alive.send('{"type": "ping"}')
        assert "pong" in await asyncio.wait_for(alive.recv(), 5)


async def test_each_socket_is_pinged_once_per_interval(gateway: Gateway) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}&conversation=counted"
    async with websockets.connect(url) as ws:
        await ws.recv()  # welcome
        (client,) = next(iter(gateway.sessions.values()))
        pings = 0
        ping = client.ws.ping

        async def counted(*args: object) -> object:
            nonlocal pings
            pings += 1
            return await ping(*args)  # type: ignore[arg-type]

        client.ws.ping = counted  # type: ignore[method-assign]
        await asyncio.sleep(2.0)
    assert 4 <= pings <= 11  # one per 0.2 s interval, give or take a busy machine
