"""Sequence numbers on a real gateway and Redis Cluster, with many messages at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets

from gateway.server import Gateway
from parley.settings import Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

#: More than the cluster client's 64 connections a node: one INCR per message, all at
#: once, used to fail some messages with MaxConnectionsError ("unavailable").
SOCKETS = 300


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0, gateway_max_in_flight=2 * SOCKETS))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


async def test_messages_sent_at_once_on_many_sockets_are_all_numbered(gateway: Gateway) -> None:
    run = uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{gateway.port}/ws?tenant=t&conversation={run}-"
    sockets = await asyncio.gather(*(websockets.connect(f"{url}{i}") for i in range(SOCKETS)))
    try:
        await asyncio.gather(*(ws.recv() for ws in sockets))  # welcome

        async def two_messages(ws: Any) -> list[dict[str, Any]]:
            for n in (1, 2):  # the second sent before the first is acknowledged
                await ws.send(json.dumps({"type": "message", "text": "hi",
                                          "client_msg_id": f"m{n}"}))
            return [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in (1, 2)]

        answers = await asyncio.gather(*(two_messages(ws) for ws in sockets))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    for frames in answers:
        frames.sort(key=lambda f: str(f.get("client_msg_id")))  # acks come as deliveries do
        assert [(f["type"], f.get("client_msg_id"), f.get("seq")) for f in frames] == \
            [("ack", "m1", 1), ("ack", "m2", 2)], frames
