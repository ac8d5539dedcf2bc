"""One Redis primary stops answering: the gateway refuses only the messages of the
conversations whose keys that primary serves; the others are numbered and acknowledged.

The primary is frozen (SIGSTOP) for less than the cluster's node timeout (5 s), so no
replica takes over, and thawed afterwards: the session's cluster is left as it was."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from redis.asyncio.cluster import RedisCluster

from gateway.limits import limit_keys
from gateway.server import Gateway
from infra.embedded import EmbeddedInfra
from kernel.settings import Settings
from streams.keys import ConversationKeys
from tests.conftest import InfraAddresses
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _tenant_t(tenant: AuthTenant) -> AuthTenant:
    """Tenant ``t`` exists: every socket here authenticates as one of its users."""
    return tenant

TENANT = "t"


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def primary_port(redis: RedisCluster, key: str) -> int:
    node = redis.get_node_from_key(key)
    assert node is not None, f"no primary serves {key}"
    return int(node.port)


async def test_a_stopped_primary_refuses_only_its_conversations(
    infra: InfraAddresses, redis_cluster: RedisCluster, gateway: Gateway,
) -> None:
    if not isinstance(infra, EmbeddedInfra):
        pytest.skip("needs the embedded cluster's processes to stop one")
    limits_port = primary_port(redis_cluster, limit_keys(TENANT, "u")[1])
    # Two conversations whose keys live on two primaries other than the limits' one.
    found: dict[int, str] = {}
    while len(found) < 2:
        conversation = f"c-{uuid.uuid4().hex[:8]}"
        port = primary_port(redis_cluster, ConversationKeys(TENANT, conversation).inbound_seq)
        if port != limits_port and port not in found:
            found[port] = conversation
    (down_port, down), (up_port, up) = found.items()
    pid = next(s.pid for s in infra.services if s.port == down_port and s.pid is not None)

    async def connect(conversation: str) -> Any:
        token = token_for(TENANT, f"u-{conversation}")
        ws = await websockets.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}"
                                      f"&conversation={conversation}")
        assert json.loads(await ws.recv())["type"] == "welcome"
        return ws

    async def send(ws: Any, msg_id: str) -> dict[str, Any]:
        await ws.send(json.dumps({"type": "message", "text": "hi", "client_msg_id": msg_id}))
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        return frame

    on_down, on_up = await connect(down), await connect(up)
    try:
        assert (await send(on_down, "before"))["type"] == "ack"
        with frozen(pid):
            # Sent together: the gateway numbers them in one batch, one call per primary.
            await asyncio.gather(*(
                ws.send(json.dumps({"type": "message", "text": "hi", "client_msg_id": "during"}))
                for ws in (on_down, on_up)
            ))  # fmt: skip
            answers = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 30)
                                             for ws in (on_down, on_up)))
        refused, acked = (json.loads(a) for a in answers)
        assert (acked["type"], acked["client_msg_id"], acked["seq"]) == ("ack", "during", 1)
        assert (refused["type"], refused["code"], refused["client_msg_id"]) == \
            ("error", "unavailable", "during")
        # Thawed, the shard's conversation is served again (the first try may still fail
        # while the client reconnects to the node).
        for attempt in range(10):
            again = await send(on_down, f"after-{attempt}")
            if again["type"] == "ack":
                break
            await asyncio.sleep(0.5)
        # The refused message's INCR may have run once the node woke: a gap, never a repeat.
        assert again["type"] == "ack" and again["seq"] >= 2, again
    finally:
        await asyncio.gather(on_down.close(), on_up.close())
    assert up_port != down_port
