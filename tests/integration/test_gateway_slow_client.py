"""A client that stops reading: once a write to it has waited PARLEY_GATEWAY_SEND_TIMEOUT_S
its connection is closed (1008) with a reason, while another client of the same
conversation gets every reply, in order, although they came in one burst."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import websockets
from confluent_kafka import Producer

from gateway import metrics
from gateway.server import NOT_READING, Gateway
from kernel.settings import Settings
from streams.codecs import codec_for
from streams.security import kafka_client_config
from streams.topics import CHAT_OUTBOUND, producer_compression
from tests.tenants import AuthTenant, token_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _tenant_t(tenant: AuthTenant) -> AuthTenant:
    """Tenant ``t`` exists: every socket here authenticates as one of its users."""
    return tenant

STALL_S = 2.0
#: Replies of 64 KB: far more than the loopback's socket buffers hold unread (a few MB).
REPLIES, TEXT = 300, "x" * 65_536


@pytest_asyncio.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    server = Gateway(settings.replace(gateway_port=0, gateway_send_timeout_s=STALL_S))
    await server.start()
    await server.wait_ready()
    yield server
    await server.close()


def publish_replies(settings: Settings, conversation: str, seqs: range) -> None:
    """What the workers would do: big replies for the conversation."""
    codec = codec_for("bot_reply")
    # Compressed as the topic is, the 19 MB are a few KB for the broker to store as sent.
    producer = Producer({**kafka_client_config(settings),
                         "compression.type": producer_compression()})
    for seq in seqs:
        producer.produce(settings.topic(CHAT_OUTBOUND), key=conversation, value=codec.encode({
            "event_id": f"r{seq}", "tenant_id": "t", "conversation_id": conversation,
            "user_id": "u", "channel": "ws", "seq": seq, "timestamp": int(time.time() * 1000),
            "trace_id": f"r{seq}", "reply_route": "",
            "payload": {"text": TEXT, "in_reply_to": f"e{seq}", "client_msg_id": f"m{seq}"},
        }))  # fmt: skip
        producer.poll(0)
    assert producer.flush(120) == 0, "replies not all published"


async def test_a_client_that_stops_reading_is_cut_off_and_the_others_are_not(
    gateway: Gateway, settings: Settings,
) -> None:
    conversation = f"slow-{uuid.uuid4().hex[:8]}"
    url = f"ws://127.0.0.1:{gateway.port}/ws?token={token_for('t')}&conversation={conversation}"
    overflows = metrics.SEND_QUEUE_OVERFLOWS._value.get()
    async with websockets.connect(url, max_queue=1) as stuck, websockets.connect(url) as healthy:
        await stuck.recv()
        await healthy.recv()  # welcomes
        # A first reply both read: the gateway follows the reply topic from here on. (Sent
        # until it comes: a follower still finding the topic's end may miss one; the
        # gateway writes each seq once per socket.)
        for _ in range(30):
            await asyncio.to_thread(publish_replies, settings, conversation, range(1, 2))
            with contextlib.suppress(TimeoutError):
                assert json.loads(await asyncio.wait_for(healthy.recv(), 2))["seq"] == 1
                break
        assert json.loads(await asyncio.wait_for(stuck.recv(), 10))["seq"] == 1
        # From now on `stuck` reads nothing.

        async def read_all() -> list[int]:
            seqs: list[int] = []
            while len(seqs) < REPLIES:
                frame = json.loads(await asyncio.wait_for(healthy.recv(), 60))
                seqs.append(frame["seq"])
            return seqs

        reading = asyncio.create_task(read_all())  # `healthy` reads all along
        await asyncio.to_thread(publish_replies, settings, conversation, range(2, REPLIES + 2))
        assert await reading == list(range(2, REPLIES + 2))  # every reply, in order, once
        for _ in range(100):  # the stuck one's write has waited STALL_S by now, or soon
            if metrics.SEND_QUEUE_OVERFLOWS._value.get() > overflows:
                break
            await asyncio.sleep(0.1)

        assert metrics.SEND_QUEUE_OVERFLOWS._value.get() == overflows + 1
        # Read at last: what the buffers held, then the close with its reason.
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(stuck.recv(), 30)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == NOT_READING
        assert len(gateway.sessions[next(iter(gateway.sessions))]) == 1  # healthy's only
