"""The gateway's producer on the real broker: a busy gateway holds messages and produces
them together, and loses none of them, in order, even when it closes while holding."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from gateway.bus import InboundProducer
from parley.settings import Settings
from streams.topics import CHAT_INBOUND

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def read_back(settings: Settings, topic: str, count: int) -> dict[int, list[bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    read: dict[int, list[bytes]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, read.values())) < count:
            assert asyncio.get_running_loop().time() < deadline, "records missing"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                read.setdefault(tp.partition, []).extend(r.value for r in records)
    finally:
        await consumer.stop()
    return read


async def test_a_busy_gateway_holds_messages_for_the_linger_then_produces_them_in_order(
    settings: Settings,
) -> None:
    topic = settings.topic(CHAT_INBOUND)
    # Busy from the first message: every message is held for a second.
    producer = InboundProducer(settings.kafka_bootstrap, linger_ms=0, busy_linger_ms=1000,
                               busy_rate=1)
    producer.start()
    sent = [(f"c-{n % 8}", f"c-{n % 8}/{n}".encode()) for n in range(81)]
    try:
        # The first one connects the producer, so the rest have no reason to wait but the hold.
        first = await asyncio.wait_for(producer.send(topic, *sent[0]), 10)
        deliveries = [producer.send(topic, key, value) for key, value in sent[1:]]
        await asyncio.sleep(0.3)
        assert not any(d.done() for d in deliveries), "held for the linger"
        partitions = [first, *await asyncio.wait_for(asyncio.gather(*deliveries), 10)]
    finally:
        await producer.close()

    read = await read_back(settings, topic, len(sent))
    wanted: dict[int, list[bytes]] = {}
    for (_, value), partition in zip(sent, partitions, strict=True):
        wanted.setdefault(partition, []).append(value)
    assert read == wanted  # every message, each partition in send order


async def test_closing_produces_what_a_busy_gateway_still_holds(settings: Settings) -> None:
    topic = settings.topic(CHAT_INBOUND)
    producer = InboundProducer(settings.kafka_bootstrap, linger_ms=0, busy_linger_ms=60_000,
                               busy_rate=1)
    producer.start()
    deliveries = [producer.send(topic, "c-1", f"m{n}".encode()) for n in range(20)]
    await producer.close()  # long before the linger is up

    assert all(isinstance(d.result(), int) for d in deliveries)  # each delivered
    read = await read_back(settings, topic, 20)
    assert [v for values in read.values() for v in values] == [f"m{n}".encode()
                                                                for n in range(20)]


async def test_a_quiet_gateway_sends_each_message_at_once(settings: Settings) -> None:
    topic = settings.topic(CHAT_INBOUND)
    producer = InboundProducer(settings.kafka_bootstrap, linger_ms=0, busy_linger_ms=60_000,
                               busy_rate=400)
    producer.start()
    try:
        for n in range(5):  # one at a time: far below 400 a second
            await asyncio.wait_for(producer.send(topic, "c-1", f"q{n}".encode()), 10)
    finally:
        await producer.close()
