"""Closing a gateway: its loops and its pending acks end, nothing is left running."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from gateway.server import Gateway
from kernel.settings import Settings
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_close_settles_every_task_even_an_ack_whose_delivery_never_comes(
    settings: Settings,
    tenant: AuthTenant,
) -> None:
    gateway = Gateway(settings.replace(gateway_port=0))
    await gateway.start()
    await gateway.wait_ready()
    loops = [gateway._health_task, gateway._keepalive_task]
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    gateway.producer.send = lambda *_: never  # type: ignore[method-assign]  # broker gone

    async with websockets.connect(
            f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}&conversation=closing") as ws:
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "message", "text": "hi", "client_msg_id": "m1"}))
        for _ in range(100):
            if gateway._tasks:
                break
            await asyncio.sleep(0.02)
        (ack,) = gateway._tasks  # waiting for a delivery report that will not come

        await asyncio.wait_for(gateway.close(), 20)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "reconnect with last_seq" in closed.value.rcvd.reason  # the hint for clients
    assert all(task is not None and task.done() for task in loops)
    assert ack.cancelled() and not gateway._tasks
    await gateway.close()  # idempotent
