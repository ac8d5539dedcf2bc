"""Sequence numbers on a real gateway, Redis Cluster and broker, with many messages at once,
and a busy gateway holding its messages to check, number and produce them together."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import websockets
from aiokafka import AIOKafkaConsumer

from gateway.server import Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.security import aiokafka_sasl, kafka_credentials
from streams.topics import CHAT_INBOUND
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

#: Every socket here is the same user sending faster than any tier allows: these tests
#: are about numbering (tests/integration/test_gateway_limits.py has the limits).
NO_RATE_LIMITS = {"rate_default": "1000000:1000000", "rate_tenant": "off"}

#: More than the cluster client's 64 connections a node: one INCR per message, all at
#: once, used to fail some messages with MaxConnectionsError ("unavailable").
SOCKETS = 300


@pytest_asyncio.fixture
async def gateway(settings: Settings, tenant: AuthTenant) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0, **NO_RATE_LIMITS,
                                      gateway_max_in_flight=2 * SOCKETS))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


async def test_messages_sent_at_once_on_many_sockets_are_all_numbered(gateway: Gateway) -> None:
    run = uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}&conversation={run}-"
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


async def read_back(settings: Settings, topic: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of ``topic``, each partition in its order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
        **aiokafka_sasl(kafka_credentials(settings)),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    codec = codec_for("chat_message")
    await consumer.start()
    read: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(read) < count:
            assert asyncio.get_running_loop().time() < deadline, "events missing"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                read.extend(codec.decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return read


def counted(ask: Callable[[list[Any]], Awaitable[None]],
            sizes: list[int]) -> Callable[[list[Any]], Awaitable[None]]:
    """``ask``, noting how many messages each request to Redis carries."""
    async def spy(batch: list[Any]) -> None:
        sizes.append(len(batch))
        await ask(batch)
    return spy


async def test_a_busy_gateway_holds_messages_then_numbers_and_produces_them_in_order(
    settings: Settings,
    tenant: AuthTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Busy from the first message: everything is held for the linger.
    busy = settings.replace(gateway_port=0, **NO_RATE_LIMITS, gateway_busy_rate=1,
                            gateway_busy_linger_ms=1000)
    server = Gateway(busy)
    batches: dict[str, list[int]] = {"limits": [], "numbers": []}
    for name, part in (("limits", server.limiter), ("numbers", server.sequences)):
        monkeypatch.setattr(part, "_ask", counted(part._ask, batches[name]))
    await server.start()
    run = uuid.uuid4().hex[:8]
    url = f"ws://127.0.0.1:{server.port}/ws?token={token_for('t')}&conversation={run}-"
    try:
        await server.wait_ready()
        sockets = await asyncio.gather(*(websockets.connect(f"{url}{i}") for i in range(8)))
        await asyncio.gather(*(ws.recv() for ws in sockets))  # welcome
        for n in range(5):
            for ws in sockets:
                await ws.send(json.dumps({"type": "message", "text": f"t{n}",
                                          "client_msg_id": f"m{n}"}))
        with pytest.raises(TimeoutError):  # held for the linger: not yet on the broker
            await asyncio.wait_for(sockets[0].recv(), 0.5)
        acks = [[json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(5)]
                for ws in sockets]
        await asyncio.gather(*(ws.close() for ws in sockets))
    finally:
        await server.close()

    for frames in acks:
        frames.sort(key=lambda f: str(f.get("client_msg_id")))
        assert [(f["type"], f["client_msg_id"], f["seq"]) for f in frames] == \
            [("ack", f"m{n}", n + 1) for n in range(5)], frames
    # What a hold lets on costs Redis one rate-limit request and one numbering request,
    # not one a message: a round of held messages (one from every socket) goes together.
    # (A loaded machine may read one socket's next frame after its round's hold began, so
    # a round can split in two.)
    assert batches["limits"] == batches["numbers"]
    assert sum(batches["limits"]) == 40 and max(batches["limits"]) == 8
    assert len(batches["limits"]) <= 10, batches
    by_conversation: dict[str, list[tuple[int, str]]] = {}
    for event in await read_back(busy, busy.topic(CHAT_INBOUND), 40):
        by_conversation.setdefault(event["conversation_id"], []).append(
            (event["seq"], event["payload"]["text"]))
    assert by_conversation == {f"{run}-{i}": [(n + 1, f"t{n}") for n in range(5)]
                               for i in range(8)}  # each conversation, in order


async def test_a_message_resent_after_a_lost_ack_is_published_once(
    settings: Settings, tenant: AuthTenant,
) -> None:
    """The chat page resends a message whose ack a dropped connection lost, under the same
    client_msg_id, maybe to another gateway: both tries are acked alike, one is published."""
    gateways = [Gateway(settings.replace(gateway_port=0, gateway_id=f"gw-{n}"))
                for n in "ab"]
    for gateway in gateways:
        await gateway.start()
    conversation = f"resend-{uuid.uuid4().hex[:8]}"
    try:
        for gateway in gateways:
            await gateway.wait_ready()
        acks = []
        for gateway in gateways:  # the first try on one gateway, the resend on the other
            url = (f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}"
                   f"&conversation={conversation}")
            async with websockets.connect(url) as ws:
                await ws.recv()  # welcome
                await ws.send(json.dumps({"type": "message", "text": "send 50 to Anna",
                                          "client_msg_id": "m-once"}))
                acks.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        async with websockets.connect(url) as ws:  # a new message is numbered after it
            await ws.recv()
            await ws.send(json.dumps({"type": "message", "text": "hi",
                                      "client_msg_id": "m-next"}))
            acks.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    finally:
        for gateway in gateways:
            await gateway.close()
    assert [a["type"] for a in acks] == ["ack"] * 3
    assert acks[0]["event_id"] == acks[1]["event_id"] and acks[0]["seq"] == acks[1]["seq"]
    assert acks[2]["seq"] == acks[0]["seq"] + 1
    # One conversation, one partition, in order: a second m-once would come before m-next.
    events = await read_back(settings, settings.topic(CHAT_INBOUND), 2)
    assert [(e["payload"]["client_msg_id"], e["seq"]) for e in events] == \
        [("m-once", acks[0]["seq"]), ("m-next", acks[2]["seq"])]
