"""Every Parley producer puts a conversation on the same partition of a topic.

The gateway produces with librdkafka, the workers with aiokafka; both must use
Kafka's standard murmur2 key partitioner, so that any producer (and any
standard Kafka client added later) keeps a conversation on one partition.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from gateway.bus import InboundProducer
from parley.settings import Settings
from streams.topics import CHAT_INBOUND

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_gateway_and_workers_partition_keys_alike(settings: Settings) -> None:
    topic = settings.topic(CHAT_INBOUND)
    keys = [f"c-{i:03d}" for i in range(40)]

    gateway = InboundProducer(settings.kafka_bootstrap, linger_ms=0)
    gateway.start()
    try:
        gateway_partitions = [await gateway.send(topic, key, b"x") for key in keys]
    finally:
        await gateway.close()

    worker = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await worker.start()
    try:
        sent = await asyncio.gather(*[await worker.send(topic, b"x", key=k.encode())
                                      for k in keys])
    finally:
        await worker.stop()

    assert len(set(gateway_partitions)) > 1, "keys spread over the partitions"
    assert gateway_partitions == [metadata.partition for metadata in sent]
