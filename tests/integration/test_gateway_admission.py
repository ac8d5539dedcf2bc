"""Admission control on a real gateway, broker and Redis Cluster, with the test as the worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from confluent_kafka import Producer

from gateway.server import Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.security import bootstrap_config
from streams.topics import CHAT_OUTBOUND
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

LIMIT = 3


@pytest_asyncio.fixture
async def gateway(settings: Settings, tenant: AuthTenant) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0, gateway_max_in_flight=LIMIT))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


def reply_to(settings: Settings, ack: dict[str, Any], conversation: str) -> None:
    """What a worker does: a BotReply for the acknowledged message, on chat.outbound."""
    value = codec_for("bot_reply").encode({
        "event_id": f"{ack['event_id']}.r", "tenant_id": "t", "conversation_id": conversation,
        "user_id": "u", "channel": "ws", "seq": ack["seq"], "timestamp": int(time.time() * 1000),
        "trace_id": ack["event_id"], "reply_route": "",
        "payload": {"text": "done", "in_reply_to": ack["event_id"],
                    "client_msg_id": ack["client_msg_id"]},
    })  # fmt: skip
    producer = Producer({**bootstrap_config(settings.kafka_bootstrap)})
    producer.produce(settings.topic(CHAT_OUTBOUND), key=conversation, value=value)
    producer.flush(10)


async def test_messages_beyond_the_limit_are_refused_until_replies_come(
    gateway: Gateway, settings: Settings,
) -> None:
    conversation = f"busy-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(
            f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}"
            f"&conversation={conversation}") as ws:
        await ws.recv()  # welcome

        async def frame() -> dict[str, Any]:
            # Generous: on a loaded CI machine the first produce to a topic can take seconds.
            parsed: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return parsed

        for i in range(LIMIT + 2):
            await ws.send(json.dumps({"type": "message", "text": f"m{i}",
                                      "client_msg_id": f"m{i}"}))
        frames = [await frame() for _ in range(LIMIT + 2)]
        acks = [f for f in frames if f["type"] == "ack"]
        refused = [f for f in frames if f["type"] == "error"]
        assert [a["client_msg_id"] for a in acks] == ["m0", "m1", "m2"]
        assert [a["seq"] for a in acks] == [1, 2, 3]  # refused messages take no seq
        assert [(e["code"], e["client_msg_id"]) for e in refused] == \
            [("overloaded", "m3"), ("overloaded", "m4")]

        reply_to(settings, acks[0], conversation)
        reply = await frame()
        assert (reply["type"], reply["in_reply_to"]) == ("reply", "m0")
        assert len(gateway.in_flight) == LIMIT - 1

        await ws.send(json.dumps({"type": "message", "text": "again", "client_msg_id": "m3"}))
        ack = await frame()
        assert (ack["type"], ack["client_msg_id"], ack["seq"]) == ("ack", "m3", 4)
